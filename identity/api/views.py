"""OneID REST endpoints. Thin: they parse and shape; the services validate and write."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.permissions import ModelPermissions
from common.errors import ItemError, ServiceError
from subjects.api.serializers import ErrorSerializer

from ..models import BlockedValue, CompositeKey, IdentifierType, MatchSuggestion, OneId, SourceRecord, SourceSystem
from ..selectors import oneid_detail, oneid_lookup
from ..services import oneid_merge, oneid_split, source_record_bulk_upsert
from ..services.config import config_delete, config_save
from ..services.suggestions import suggestion_accept, suggestion_reject
from .serializers import (
    BlockedValueSerializer,
    CompositeKeySerializer,
    IdentifierTypeSerializer,
    MatchSuggestionSerializer,
    MergeRequestSerializer,
    MergeResponseSerializer,
    OneIdDetailSerializer,
    OneIdSerializer,
    RecordResultSerializer,
    RecordsResultSerializer,
    ResolveResponseSerializer,
    SourceRecordBulkRequestSerializer,
    SourceRecordSerializer,
    SourceRecordWriteSerializer,
    SourceSystemSerializer,
    SplitRequestSerializer,
    SplitResponseSerializer,
)

ERRORS = {400: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer}


class ChangeOnPost(ModelPermissions):
    """Verbs (split, merge, accept, reject) change existing objects: POST needs change, not add."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}


def _require(request: Request, *perms: str) -> None:
    if not request.user.has_perms(perms):
        raise PermissionDenied("You do not have permission to perform this action.")


def _sees_records(request: Request) -> bool:
    """Raw source records and identifier values need ``view_sourcerecord``; without it a OneID's detail
    leaves out ``records``, ``identifiers`` and ``links`` (``view_oneid`` shows the golden record)."""
    return request.user.has_perm("identity.view_sourcerecord")


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise ServiceError.single("", "The request body must be a JSON object.")
    return dict(request.data)


class ConfigViewSet(viewsets.ModelViewSet):
    """CRUD of a rules model; the serializer parses, ``config_save`` validates and logs."""

    def perform_create(self, serializer):
        serializer.instance = config_save(
            actor=self.request.user, model=self.queryset.model, data=serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = config_save(
            actor=self.request.user,
            model=self.queryset.model,
            data=serializer.validated_data,
            instance=serializer.instance,
        )

    def perform_destroy(self, instance):
        config_delete(actor=self.request.user, instance=instance)


@extend_schema_view(
    create=extend_schema(responses={201: SourceSystemSerializer, **ERRORS}),
    update=extend_schema(responses={200: SourceSystemSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class SourceSystemViewSet(ConfigViewSet):
    queryset = SourceSystem.objects.select_related("subject_type").order_by("id")
    serializer_class = SourceSystemSerializer
    filterset_fields = ["kind", "brand"]


class IdentifierTypeViewSet(ConfigViewSet):
    queryset = IdentifierType.objects.order_by("id")
    serializer_class = IdentifierTypeSerializer


class CompositeKeyViewSet(ConfigViewSet):
    queryset = CompositeKey.objects.order_by("id")
    serializer_class = CompositeKeySerializer


class BlockedValueViewSet(ConfigViewSet):
    queryset = BlockedValue.objects.select_related("identifier_type").order_by("id")
    serializer_class = BlockedValueSerializer


def _records_response(result, status_code=status.HTTP_200_OK) -> Response:
    body = {
        **result.counts,
        "correlation_id": str(result.correlation_id),
        "merge_events": result.merges,
        "results": [
            {"index": r.index, "id": r.id, "status": r.status, "oneid": r.oneid, "warnings": r.warnings}
            for r in result.results
        ],
    }
    return Response(body, status=status_code)


class SourceRecordViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Source records: read them, push one (``POST``) or up to 1,000 (``bulk/``), idempotent by key."""

    queryset = SourceRecord.objects.select_related("source").order_by("id")
    serializer_class = SourceRecordSerializer
    filterset_fields = ["source", "brand", "oneid", "external_id"]

    @extend_schema(
        request=SourceRecordWriteSerializer,
        responses={200: RecordResultSerializer, 201: RecordResultSerializer, **ERRORS},
        summary="Create or update one source record and resolve it",
    )
    def create(self, request: Request) -> Response:
        _require(request, "identity.add_sourcerecord", "identity.change_sourcerecord")
        try:
            result = source_record_bulk_upsert(actor=request.user, items=[_body(request)])
        except ServiceError as exc:
            errors = [ItemError(None, e.field, e.message, e.code) for e in exc.errors]
            raise ServiceError(errors[0].message if len(errors) == 1 else exc.message, errors, exc.code) from None
        item = result.results[0]
        body = {"index": None, "id": item.id, "status": item.status, "oneid": item.oneid, "warnings": item.warnings}
        return Response(body, status=status.HTTP_201_CREATED if item.status == "created" else status.HTTP_200_OK)

    @extend_schema(
        request=SourceRecordBulkRequestSerializer,
        responses={200: RecordsResultSerializer, **ERRORS},
        summary="Create or update up to 1,000 source records, all or nothing, and resolve them",
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        _require(request, "identity.add_sourcerecord", "identity.change_sourcerecord")
        data = request.data
        items = data.get("items") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ServiceError.single("items", 'Send {"items": [...]} (or a JSON array of items).')
        result = source_record_bulk_upsert(actor=request.user, items=items, max_items=settings.TAGWEAVE_BULK_MAX_ITEMS)
        return _records_response(result)


class OneIdViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """OneIDs: detail with records, identifiers, links and history; lookup; split; merge."""

    queryset = OneId.objects.select_related("subject", "subject__subject_type").order_by("subject_id")
    serializer_class = OneIdSerializer
    filterset_fields = ["status"]
    filterset_class = None
    pagination_class = None
    permission_classes = [ChangeOnPost]
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"

    def list(self, request, *args, **kwargs):
        from common.api.pagination import IdCursorPagination

        paginator = IdCursorPagination()
        paginator.ordering = "subject_id"
        page = paginator.paginate_queryset(self.filter_queryset(self.get_queryset()), request, view=self)
        return paginator.get_paginated_response(OneIdSerializer(page, many=True).data)

    @extend_schema(responses={200: OneIdDetailSerializer, 404: ErrorSerializer})
    def retrieve(self, request: Request, id=None) -> Response:
        return Response(self._detail(id))

    def _detail(self, pk) -> dict:
        try:
            return oneid_detail(int(pk), include_records=_sees_records(self.request))
        except (TypeError, ValueError):
            raise ServiceError.single("id", "Must be an integer.") from None
        except ServiceError as exc:
            exc.status_code = 404
            raise

    @extend_schema(
        parameters=[
            OpenApiParameter("type", str, required=True, description="Identifier type code, e.g. phone"),
            OpenApiParameter("value", str, required=True, description="The value, in any spelling"),
            OpenApiParameter("scope", str, description="e.g. app:<appid> for openids"),
        ],
        responses={200: ResolveResponseSerializer, **ERRORS},
        summary="Find the OneID(s) holding an identifier, with why each identifier belongs",
    )
    @action(detail=False, methods=["get"], filterset_fields=None)
    def resolve(self, request: Request) -> Response:
        type_code, value = request.query_params.get("type"), request.query_params.get("value")
        if not type_code or not value:
            raise ServiceError.single("type" if not type_code else "value", "This parameter is required.")
        scope = request.query_params.get("scope")
        for name, given in (("type", type_code), ("value", value), ("scope", scope)):
            if given is not None and "\x00" in given:
                raise ServiceError.single(name, "Must not contain NUL characters.")
        matches = oneid_lookup(type_code=type_code, value=value, scope=scope, include_records=_sees_records(request))
        return Response({"matches": matches})

    @extend_schema(request=SplitRequestSerializer, responses={200: SplitResponseSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def split(self, request: Request, id=None) -> Response:
        _require(request, "identity.change_oneid")
        body = _body(request)
        records = body.get("records")
        if not isinstance(records, list) or not all(type(r) is int for r in records):
            raise ServiceError.single("records", "Give a list of record ids.")
        self._detail(id)
        kept, new = oneid_split(actor=request.user, oneid=int(id), records=records, reason=str(body.get("reason", "")))
        return Response({"kept": kept, "new": new})

    @extend_schema(request=MergeRequestSerializer, responses={200: MergeResponseSerializer, **ERRORS})
    @action(detail=False, methods=["post"])
    def merge(self, request: Request) -> Response:
        _require(request, "identity.change_oneid")
        body = _body(request)
        oneids = body.get("oneids")
        if not isinstance(oneids, list) or not all(type(o) is int for o in oneids):
            raise ServiceError.single("oneids", "Give two OneID ids.")
        survivor = oneid_merge(actor=request.user, oneids=oneids, reason=str(body.get("reason", "")))
        return Response({"survivor": survivor})


class MatchSuggestionViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = MatchSuggestion.objects.order_by("id")
    serializer_class = MatchSuggestionSerializer
    permission_classes = [ChangeOnPost]
    filterset_fields = ["status"]

    @extend_schema(request=None, responses={200: MergeResponseSerializer, **ERRORS}, summary="Accept: merge the pair")
    @action(detail=True, methods=["post"])
    def accept(self, request: Request, pk=None) -> Response:
        _require(request, "identity.change_matchsuggestion", "identity.change_oneid")
        return Response({"survivor": suggestion_accept(actor=request.user, suggestion_id=_int(pk))})

    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Reject: never propose the pair again")
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk=None) -> Response:
        _require(request, "identity.change_matchsuggestion")
        suggestion_reject(actor=request.user, suggestion_id=_int(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _int(pk) -> int:
    try:
        return int(pk)
    except (TypeError, ValueError):
        raise ServiceError.single("id", "Must be an integer.") from None
