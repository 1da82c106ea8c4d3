"""REST endpoints of tags: thin — they parse and shape, ``tags.services`` validates and writes.

Every queryset is narrowed by ``tags.access`` for the requesting user: invisible groups, tags
and jobs answer 404; visible ones the user may not change answer 403 from the services.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from common.errors import ServiceError
from subjects.api.views import ERRORS, ServiceBackedViewSet
from tags import access
from tags.models import RecomputeJob, TagDefinition, TagDependency, TagGroup, TagRule
from tags.services import definitions, recompute

from .filters import RecomputeJobFilter, TagDefinitionFilter, TagGroupFilter
from .permissions import ActionPermissions
from .serializers import (
    ActivateSerializer,
    PreviewRequestSerializer,
    PreviewSerializer,
    RecomputeJobSerializer,
    RuleCreateSerializer,
    TagDefinitionSerializer,
    TagDefinitionWriteSerializer,
    TagGroupSerializer,
    TagRuleSerializer,
)

CHANGE_TAG = "tags.change_tagdefinition"


@extend_schema_view(
    create=extend_schema(responses={201: TagGroupSerializer, **ERRORS}),
    update=extend_schema(responses={200: TagGroupSerializer, **ERRORS}),
    partial_update=extend_schema(responses={200: TagGroupSerializer, **ERRORS}),
)
class TagGroupViewSet(ServiceBackedViewSet):
    """Tag groups per subject type. Groups are not deleted (tags keep their group; no delete service)."""

    queryset = TagGroup.objects.select_related("subject_type").order_by("id")
    serializer_class = TagGroupSerializer
    filterset_class = TagGroupFilter
    scope_field = None  # not subject-scoped: tags.access narrows get_queryset
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        return access.visible_groups(self.request.user, super().get_queryset())

    def save_service(self, data, instance=None):
        serializer = TagGroupSerializer(instance, data=data, partial=instance is not None)
        serializer.is_valid(raise_exception=True)
        return definitions.tag_group_save(actor=self.request.user, data=serializer.validated_data, instance=instance)


def _options(raw: list[dict] | None) -> list[tuple[str, str]] | None:
    if raw is None:
        return None
    return [(option["value"], option.get("label") or option["value"]) for option in raw]


def _owner(data: dict) -> None:
    """The owner is given as a user id; the service takes the user."""
    if "owner" not in data or data["owner"] is None:
        return
    user = get_user_model().objects.filter(pk=data["owner"]).first()
    if user is None:
        raise ServiceError.single("owner", f"User {data['owner']} does not exist.", "unknown")
    data["owner"] = user


def _tag_queryset(user):
    """Visible tags with their options and the *visible* tags they read and are read by."""
    dependencies = TagDependency.objects.filter(access.visible_tag_filter(user, "depends_on"))
    dependents = TagDependency.objects.filter(access.visible_tag_filter(user, "tag"))
    return access.visible_tags(
        user,
        TagDefinition.objects.select_related("group", "subject_type")
        .prefetch_related(
            "options",
            Prefetch("dependencies", queryset=dependencies.select_related("depends_on")),
            Prefetch("dependents", queryset=dependents.select_related("tag")),
        )
        .order_by("id"),
    )


@extend_schema_view(
    create=extend_schema(request=TagDefinitionWriteSerializer, responses={201: TagDefinitionSerializer, **ERRORS}),
    update=extend_schema(request=TagDefinitionWriteSerializer, responses={200: TagDefinitionSerializer, **ERRORS}),
    partial_update=extend_schema(
        request=TagDefinitionWriteSerializer, responses={200: TagDefinitionSerializer, **ERRORS}
    ),
)
class TagDefinitionViewSet(ServiceBackedViewSet):
    """Tag definitions with their options; rule versions, preview, activation, archive and recompute.

    Tags are archived, not deleted: their history stays readable.
    """

    queryset = TagDefinition.objects.none()  # get_queryset: the user's visible tags
    read_serializer_class = TagDefinitionSerializer
    write_serializer_class = TagDefinitionWriteSerializer
    filterset_class = TagDefinitionFilter
    scope_field = None  # not subject-scoped: tags.access narrows get_queryset
    permission_classes = [ActionPermissions]
    http_method_names = ["get", "post", "put", "patch", "head", "options"]
    action_perms = {
        "rules": None,  # per method, below
        "preview": ["tags.view_tagdefinition"],
        "activate": [CHANGE_TAG],
        "archive": [CHANGE_TAG],
        "recompute": [CHANGE_TAG, "tags.add_recomputejob"],
    }

    def get_queryset(self):
        return _tag_queryset(self.request.user)

    def get_permissions(self):
        if self.action == "rules":
            method = "tags.view_tagrule" if self.request.method in ("GET", "HEAD") else "tags.add_tagrule"
            self.action_perms = {**self.action_perms, "rules": [method]}
        return super().get_permissions()

    def save_service(self, data, instance=None):
        serializer = TagDefinitionWriteSerializer(
            data=data, partial=instance is not None, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        validated = dict(serializer.validated_data)
        options = _options(validated.pop("options", None))
        _owner(validated)
        tag = definitions.tag_save(actor=self.request.user, data=validated, options=options, instance=instance)
        return _tag_queryset(self.request.user).get(pk=tag.pk)

    def _fresh(self) -> TagDefinition:
        """The URL's tag, 404 unless visible (``get_object`` runs on the visible queryset)."""
        return TagDefinition.objects.select_related("rule", "subject_type", "group").get(pk=self.get_object().pk)

    @extend_schema(
        methods=["GET"], responses={200: TagRuleSerializer(many=True), 404: ERRORS[404]}, summary="Rule versions"
    )
    @extend_schema(
        methods=["POST"],
        request=RuleCreateSerializer,
        responses={201: TagRuleSerializer, **ERRORS},
        summary="Save a new rule version (a draft unless activate)",
    )
    @action(detail=True, methods=["get", "post"], filterset_class=None, pagination_class=None)
    def rules(self, request: Request, pk=None) -> Response:
        tag = self._fresh()
        if request.method == "GET":
            rows = TagRule.objects.filter(tag=tag).select_related("tag").order_by("-version")
            return Response(TagRuleSerializer(rows, many=True).data)
        body = RuleCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        saved = definitions.rule_save(
            actor=request.user,
            tag=tag,
            document=body.validated_data["document"],
            activate=body.validated_data["activate"],
        )
        saved = TagRule.objects.select_related("tag").get(pk=saved.pk)
        return Response(TagRuleSerializer(saved).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=PreviewRequestSerializer,
        responses={200: PreviewSerializer, **ERRORS},
        summary="Counts per value and changes a rule (a saved version or a posted document) would make",
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def preview(self, request: Request, pk=None) -> Response:
        from tags.services import preview

        tag = self._fresh()
        body = PreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        document = _preview_document(tag, body.validated_data)
        return Response(preview.preview_rule(tag, document, user=request.user))

    @extend_schema(
        request=ActivateSerializer,
        responses={200: TagDefinitionSerializer, **ERRORS},
        summary="Activate a rule version; a full recompute is queued",
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def activate(self, request: Request, pk=None) -> Response:
        tag = self._fresh()
        body = ActivateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        definitions.activate_rule(actor=request.user, tag=tag, version=body.validated_data["version"])
        return Response(self._read(_tag_queryset(request.user).get(pk=tag.pk)))

    @extend_schema(
        request=None,
        responses={200: TagDefinitionSerializer, **ERRORS},
        summary="Archive the tag (refused while other tags read it; the error lists them)",
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def archive(self, request: Request, pk=None) -> Response:
        tag = self._fresh()
        definitions.archive(actor=request.user, tag=tag)
        return Response(self._read(_tag_queryset(request.user).get(pk=tag.pk)))

    @extend_schema(
        request=None,
        responses={202: RecomputeJobSerializer, **ERRORS},
        summary="Start a full recompute of the tag (a RecomputeJob; follow it under recompute-jobs)",
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def recompute(self, request: Request, pk=None) -> Response:
        tag = self._fresh()
        access.require_editable(request.user, tag)
        job = recompute.start_recompute(tag, actor=request.user)
        job = RecomputeJob.objects.select_related("tag").get(pk=job.pk)
        return Response(RecomputeJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


def _preview_document(tag: TagDefinition, data: dict) -> object:
    if "document" in data and "version" in data:
        raise ServiceError.single("document", 'Give either "document" or "version", not both.')
    if "document" in data:
        return data["document"]
    if "version" not in data:
        raise ServiceError.single("document", 'Give a rule "document" or the "version" of a saved rule.', "required")
    saved = TagRule.objects.filter(tag=tag, version=data["version"]).values_list("document", flat=True).first()
    if saved is None:
        raise ServiceError.single("version", f'Tag "{tag.code}" has no rule version {data["version"]}.', "unknown")
    return saved


class RecomputeJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Full recomputes with their progress (chunks done of chunks total, rows changed)."""

    queryset = RecomputeJob.objects.select_related("tag")
    serializer_class = RecomputeJobSerializer
    filterset_class = RecomputeJobFilter

    def get_queryset(self):
        return super().get_queryset().filter(access.visible_tag_filter(self.request.user))
