"""REST endpoints. Thin: they parse and shape; services validate and write."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.scoping import ScopedQuerysetMixin, scope_filter
from common.errors import ServiceError
from tags.api.profile import subject_tag_groups
from tags.api.profile_serializers import SubjectTagGroupSerializer

from .. import services
from ..access import visible_subject_filter
from ..models import Relationship, RelationshipType, Subject, SubjectType
from .filters import RelationshipFilter, RelationshipTypeFilter, SubjectFilter, SubjectTypeFilter
from .serializers import (
    BulkResultSerializer,
    ErrorSerializer,
    RelationshipBulkRequestSerializer,
    RelationshipSerializer,
    RelationshipTypeSerializer,
    RelationshipWriteSerializer,
    SubjectBulkRequestSerializer,
    SubjectDetailSerializer,
    SubjectSerializer,
    SubjectTypeSerializer,
    SubjectWriteSerializer,
)

ERRORS = {400: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer}


class ServiceBackedViewSet(ScopedQuerysetMixin, viewsets.ModelViewSet):
    """A scoped ModelViewSet whose writes call ``save_service`` / ``delete_service``.

    ``scope_field`` (see ``common.api.scoping``) filters every read, so out-of-scope objects
    answer 404; the services check what a write targets.

    ``write_serializer_class`` documents the request body; the service is the
    single place that validates it, so errors come in the API's one shape.
    """

    read_serializer_class = None
    write_serializer_class = None

    def get_serializer_class(self):
        if self.action in ("create", "update", "partial_update") and self.write_serializer_class:
            return self.write_serializer_class
        return self.read_serializer_class or self.serializer_class

    def get_serializer(self, *args, **kwargs):
        """The write serializer describes a request body, never a stored object: without one.

        Only DRF's browsable API asks for it with an instance (to fill its edit forms), which
        failed (500: the body's fields are not the model's) and would bypass the PII masking.
        """
        if self.write_serializer_class and self.get_serializer_class() is self.write_serializer_class:
            args = args[1:]
            kwargs.pop("instance", None)
        return super().get_serializer(*args, **kwargs)

    def save_service(self, data: dict, instance=None):
        raise NotImplementedError

    def delete_service(self, instance) -> None:
        raise NotImplementedError

    def _payload(self, request: Request) -> dict:
        if not isinstance(request.data, dict):
            raise ServiceError.single("", "The request body must be a JSON object.")
        return dict(request.data)

    def create(self, request, *args, **kwargs):
        obj = self.save_service(self._payload(request))
        return Response(self._read(obj), status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        obj = self.save_service(self._payload(request), instance=self.get_object())
        return Response(self._read(obj))

    def destroy(self, request, *args, **kwargs):
        self.delete_service(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _read(self, obj) -> dict:
        return (self.read_serializer_class or self.serializer_class)(obj, context=self.get_serializer_context()).data


def _bulk_response(result) -> Response:
    body = {
        **result.counts,
        "correlation_id": str(result.correlation_id),
        "results": [{"index": r.index, "id": r.id, "status": r.status} for r in result.results],
    }
    return Response(body)


def _bulk_items(request: Request) -> list:
    data = request.data
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ServiceError.single("items", 'Send {"items": [...]} (or a JSON array of items).')
    return items


def _require(request: Request, *perms: str) -> None:
    if not request.user.has_perms(perms):
        raise PermissionDenied("You do not have permission to perform this action.")


@extend_schema_view(
    create=extend_schema(responses={201: SubjectTypeSerializer, **ERRORS}),
    update=extend_schema(responses={200: SubjectTypeSerializer, **ERRORS}),
    partial_update=extend_schema(responses={200: SubjectTypeSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class SubjectTypeViewSet(ServiceBackedViewSet):
    queryset = SubjectType.objects.order_by("id")
    serializer_class = SubjectTypeSerializer
    filterset_class = SubjectTypeFilter
    scope_field = None  # reference data; its subject counts are scoped below

    def get_queryset(self):
        """``subject_count`` counts only the subjects the user sees (a count is a read too)."""
        visible = visible_subject_filter(self.request.user, "subjects")
        return super().get_queryset().annotate(subject_count=Count("subjects", filter=visible or None))

    def save_service(self, data, instance=None):
        serializer = SubjectTypeSerializer(instance, data=data, partial=instance is not None)
        serializer.is_valid(raise_exception=True)
        return services.subject_type_save(actor=self.request.user, data=serializer.validated_data, instance=instance)

    def delete_service(self, instance):
        services.subject_type_delete(actor=self.request.user, subject_type=instance)


@extend_schema_view(
    create=extend_schema(responses={201: RelationshipTypeSerializer, **ERRORS}),
    update=extend_schema(responses={200: RelationshipTypeSerializer, **ERRORS}),
    partial_update=extend_schema(responses={200: RelationshipTypeSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class RelationshipTypeViewSet(ServiceBackedViewSet):
    queryset = RelationshipType.objects.select_related("from_type", "to_type", "subject_type").order_by("id")
    serializer_class = RelationshipTypeSerializer
    filterset_class = RelationshipTypeFilter
    scope_field = None

    def save_service(self, data, instance=None):
        serializer = RelationshipTypeSerializer(instance, data=data, partial=instance is not None)
        serializer.is_valid(raise_exception=True)
        return services.relationship_type_save(
            actor=self.request.user, data=serializer.validated_data, instance=instance
        )

    def delete_service(self, instance):
        services.relationship_type_delete(actor=self.request.user, relationship_type=instance)


@extend_schema_view(
    retrieve=extend_schema(responses={200: SubjectDetailSerializer, 404: ErrorSerializer}),
    create=extend_schema(request=SubjectWriteSerializer, responses={201: SubjectSerializer, **ERRORS}),
    update=extend_schema(request=SubjectWriteSerializer, responses={200: SubjectSerializer, **ERRORS}),
    partial_update=extend_schema(request=SubjectWriteSerializer, responses={200: SubjectSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class SubjectViewSet(ServiceBackedViewSet):
    queryset = Subject.objects.select_related("subject_type")
    read_serializer_class = SubjectSerializer
    write_serializer_class = SubjectWriteSerializer
    filterset_class = SubjectFilter
    scope_field = ""

    def save_service(self, data, instance=None):
        return services.subject_save(actor=self.request.user, data=data, instance=instance)

    def retrieve(self, request, *args, **kwargs):
        """The subject and its tags grouped by tag group: two queries for the tags, however many.

        ``tags`` is null for a user who may not view tag values.
        """
        subject = self.get_object()
        allowed = request.user.has_perm("tags.view_tagvalue")
        subject.tag_groups_shown = subject_tag_groups(subject.pk, user=request.user) if allowed else None
        return Response(SubjectDetailSerializer(subject, context=self.get_serializer_context()).data)

    @extend_schema(
        responses={200: SubjectTagGroupSerializer(many=True), 404: ErrorSerializer},
        summary="The subject's tags grouped by tag group, with source and freshness",
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=None)
    def tags(self, request: Request, pk=None) -> Response:
        _require(request, "tags.view_tagvalue")
        subject = self.get_object()
        return Response(SubjectTagGroupSerializer(subject_tag_groups(subject.pk, user=request.user), many=True).data)

    def delete_service(self, instance):
        services.subject_delete(actor=self.request.user, subject=instance)

    @extend_schema(
        request=SubjectBulkRequestSerializer,
        responses={200: BulkResultSerializer, **ERRORS},
        summary="Create or update up to 1,000 subjects, all or nothing",
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        _require(request, "subjects.add_subject", "subjects.change_subject")
        result = services.subject_bulk_upsert(
            actor=request.user, items=_bulk_items(request), max_items=settings.TAGWEAVE_BULK_MAX_ITEMS
        )
        return _bulk_response(result)

    @extend_schema(
        parameters=[
            OpenApiParameter("direction", str, enum=["outgoing", "incoming"], description="Default: both"),
            OpenApiParameter("type", str, description="Relationship type code"),
        ],
        responses={200: RelationshipSerializer(many=True), 404: ErrorSerializer},
        summary="The subject's relationships in both directions, paginated",
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def relationships(self, request: Request, pk=None) -> Response:
        _require(request, "subjects.view_relationship")
        subject = self.get_object()
        direction = request.query_params.get("direction")
        visible = scope_filter(request.user, ("from_subject", "to_subject"))
        queryset = Relationship.objects.select_related("relationship_type").filter(visible)
        if direction == "outgoing":
            queryset = queryset.filter(from_subject=subject)
        elif direction == "incoming":
            queryset = queryset.filter(to_subject=subject)
        elif direction in (None, ""):
            queryset = queryset.filter(from_subject=subject) | queryset.filter(to_subject=subject)
        else:
            raise ServiceError.single("direction", "Use 'outgoing' or 'incoming'.")
        if code := request.query_params.get("type"):
            queryset = queryset.filter(relationship_type__code=code)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(RelationshipSerializer(page, many=True).data)


@extend_schema_view(
    create=extend_schema(request=RelationshipWriteSerializer, responses={201: RelationshipSerializer, **ERRORS}),
    update=extend_schema(request=RelationshipWriteSerializer, responses={200: RelationshipSerializer, **ERRORS}),
    partial_update=extend_schema(
        request=RelationshipWriteSerializer, responses={200: RelationshipSerializer, **ERRORS}
    ),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class RelationshipViewSet(ServiceBackedViewSet):
    queryset = Relationship.objects.select_related("relationship_type")
    read_serializer_class = RelationshipSerializer
    write_serializer_class = RelationshipWriteSerializer
    filterset_class = RelationshipFilter
    scope_field = ("from_subject", "to_subject")  # visible when both ends are

    def save_service(self, data, instance=None):
        return services.relationship_save(actor=self.request.user, data=data, instance=instance)

    def delete_service(self, instance):
        services.relationship_delete(actor=self.request.user, relationship=instance)

    @extend_schema(
        request=RelationshipBulkRequestSerializer,
        responses={200: BulkResultSerializer, **ERRORS},
        summary="Create or update up to 1,000 relationships, all or nothing",
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        _require(request, "subjects.add_relationship", "subjects.change_relationship")
        result = services.relationship_bulk_upsert(
            actor=request.user, items=_bulk_items(request), max_items=settings.TAGWEAVE_BULK_MAX_ITEMS
        )
        return _bulk_response(result)


__all__ = ["RelationshipTypeViewSet", "RelationshipViewSet", "SubjectTypeViewSet", "SubjectViewSet"]
