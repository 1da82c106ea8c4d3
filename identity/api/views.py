"""OneID REST endpoints. Thin: they parse and shape; the services validate and write.

Every read is scoped through ``identity.scoping`` (itself on ``subjects.access``): a user sees the
source records of their brands whose OneID they may see, the OneIDs they may see (with only those
records, and a golden record recomputed from them), and merges and suggestions only about OneIDs
they see whole. Out of scope is 404. Personal values are masked unless a holder of
``subjects.view_pii`` asks with ``?unmask=1`` (each such read is logged, ``pii.unmasked``).
Pushes are limited to the source systems the user may push from (``pushable_sources``), splits,
merges and suggestion decisions to OneIDs whose every record the user sees.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.permissions import ModelPermissions
from common.api.scoping import ScopedQuerysetMixin
from common.errors import ItemError, ServiceError
from subjects import pii
from subjects.api.serializers import ErrorSerializer

from ..models import (
    BlockedValue,
    CompositeKey,
    IdentifierType,
    MatchSuggestion,
    OneId,
    ReapplyRun,
    SourceRecord,
    SourceSystem,
)
from ..scoping import fully_visible_filter, oneid_filter, pushable_sources, record_brand_filter, sees_everything
from ..selectors import oneid_detail, oneid_lookup, oneid_rows
from ..services import oneid_merge, oneid_split, source_record_bulk_upsert
from ..services.config import config_delete, config_save
from ..services.suggestions import suggestion_accept, suggestion_reject
from .filters import SourceRecordFilter
from .serializers import (
    BlockedValueSerializer,
    CompositeKeySerializer,
    IdentifierTypeSerializer,
    MatchSuggestionSerializer,
    MergeRequestSerializer,
    MergeResponseSerializer,
    OneIdDetailSerializer,
    OneIdSerializer,
    ReapplyRunSerializer,
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


def _unmasked(request: Request) -> bool:
    """A ``view_pii`` holder asked for clear values (``?unmask=1``); the view logs what it shows."""
    return pii.wants_unmasked(request)


def _check_pushable(request: Request, items: list) -> None:
    """All or nothing: every item's source must be one the user may push from (per-item 403, two
    queries). Unknown sources are left to the service (its per-item 400)."""
    codes = {i.get("source") for i in items if isinstance(i, dict) and isinstance(i.get("source"), str)}
    if not codes:
        return
    known = set(SourceSystem.objects.filter(code__in=codes).values_list("code", flat=True))
    allowed = set(pushable_sources(request.user).filter(code__in=known).values_list("code", flat=True))
    errors = [
        ItemError(index, "source", "You may not push records from this source system.", "forbidden")
        for index, item in enumerate(items)
        if isinstance(item, dict) and item.get("source") in known - allowed
    ]
    if errors:
        error = ServiceError(f"{len(errors)} of {len(items)} items name a source you may not push from.", errors)
        error.status_code = 403
        raise error


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise ServiceError.single("", "The request body must be a JSON object.")
    return dict(request.data)


class ConfigViewSet(ScopedQuerysetMixin, viewsets.ModelViewSet):
    """CRUD of a rules model; the serializer parses, ``config_save`` validates and logs.

    Rules are reference data, not scoped (``scope_field = None``); a source system's writable
    ``brand`` is still limited to brands the user sees (the mixin limits related fields)."""

    scope_field = None

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


def _records_response(result, request: Request, status_code=status.HTTP_200_OK) -> Response:
    body = {
        **result.counts,
        "correlation_id": str(result.correlation_id),
        "merge_events": result.merges,
        "results": [_result_body(r, request) for r in result.results],
    }
    return Response(body, status=status_code)


def _result_body(result, request: Request) -> dict:
    """One pushed record's outcome; warning values (the blocked or over-limit identifier) masked
    for users without PII permission, like every other identifier value."""
    warnings = result.warnings
    if not pii.can_see_pii(request.user):
        warnings = [{**w, "value": pii.mask(w.get("value"))} for w in warnings]
    return {
        "index": result.index,
        "id": result.id,
        "status": result.status,
        "oneid": result.oneid,
        "warnings": warnings,
    }


class SourceRecordViewSet(
    ScopedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Source records: read them, push one (``POST``) or up to 1,000 (``bulk/``), idempotent by key.

    Listed and read within scope (``visible_records``); raw fields and external ids masked unless
    unmasked by a PII holder. Pushed only from source systems the user may push from."""

    queryset = SourceRecord.objects.select_related("source", "assignment").order_by("id")
    serializer_class = SourceRecordSerializer
    filterset_class = SourceRecordFilter
    scope_field = "assignment__oneid"  # the mixin: the record's OneID is visible; here: and its brand is the user's

    def get_queryset(self):
        return super().get_queryset().filter(record_brand_filter(self.request.user))

    def filter_queryset(self, queryset):
        """Filtering by external id (a WeChat openid, a member number) is a lookup by personal data."""
        if "external_id" in self.request.query_params and not pii.can_see_pii(self.request.user):
            raise PermissionDenied("Filtering by external_id needs the PII permission.")
        return super().filter_queryset(queryset)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "unmasked": _unmasked(self.request)}

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        self._log(response, [r["id"] for r in response.data.get("results", [])])
        return response

    def retrieve(self, request, *args, **kwargs):
        response = super().retrieve(request, *args, **kwargs)
        self._log(response, [response.data["id"]])
        return response

    def _log(self, response, ids: list[int]) -> None:
        if response.status_code == 200 and _unmasked(self.request):
            pii.log_unmask(self.request.user, "identity.sourcerecord", ids, ["raw", "external_id"])

    @extend_schema(
        request=SourceRecordWriteSerializer,
        responses={200: RecordResultSerializer, 201: RecordResultSerializer, **ERRORS},
        summary="Create or update one source record and resolve it",
    )
    def create(self, request: Request) -> Response:
        _require(request, "identity.add_sourcerecord", "identity.change_sourcerecord")
        body = _body(request)
        try:
            _check_pushable(request, [body])
            result = source_record_bulk_upsert(actor=request.user, items=[body])
        except ServiceError as exc:
            errors = [ItemError(None, e.field, e.message, e.code) for e in exc.errors]
            single = ServiceError(errors[0].message if len(errors) == 1 else exc.message, errors, exc.code)
            single.status_code = exc.status_code
            raise single from None
        item = result.results[0]
        body = {**_result_body(item, request), "index": None}
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
        if len(items) <= settings.TAGWEAVE_BULK_MAX_ITEMS:
            _check_pushable(request, items)
        result = source_record_bulk_upsert(actor=request.user, items=items, max_items=settings.TAGWEAVE_BULK_MAX_ITEMS)
        return _records_response(result, request)


def _not_found(field: str, message: str) -> ServiceError:
    error = ServiceError.single(field, message, "not_found")
    error.status_code = 404
    return error


class OneIdViewSet(ScopedQuerysetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """OneIDs: detail with records, identifiers, links and history; lookup; split; merge.

    Only OneIDs the user may see (404 otherwise), each with only their records; splits and merges
    only on OneIDs whose every record the user sees (403 when some are another brand's)."""

    queryset = OneId.objects.select_related("subject", "subject__subject_type").order_by("subject_id")
    serializer_class = OneIdSerializer
    filterset_fields = ["status"]
    filterset_class = None
    pagination_class = None
    permission_classes = [ChangeOnPost]
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"
    scope_field = "subject"

    def list(self, request, *args, **kwargs):
        from common.api.pagination import IdCursorPagination

        paginator = IdCursorPagination()
        paginator.ordering = "subject_id"
        page = paginator.paginate_queryset(self.filter_queryset(self.get_queryset()), request, view=self)
        unmasked = _unmasked(request)
        rows = oneid_rows(list(page), viewer=request.user, masked=not unmasked)
        if unmasked:
            pii.log_unmask(request.user, "identity.oneid", [r["id"] for r in rows], ["display_name"])
        return paginator.get_paginated_response(rows)

    @extend_schema(responses={200: OneIdDetailSerializer, 404: ErrorSerializer})
    def retrieve(self, request: Request, id=None) -> Response:
        detail = self._detail(id)
        self._log([detail["id"]])
        return Response(detail)

    def _log(self, ids: list[int]) -> None:
        if ids and _unmasked(self.request):
            pii.log_unmask(self.request.user, "identity.oneid", ids, ["display_name", "attributes", "records"])

    def _detail(self, pk) -> dict:
        try:
            return oneid_detail(
                int(pk),
                include_records=_sees_records(self.request),
                viewer=self.request.user,
                masked=not _unmasked(self.request),
            )
        except (TypeError, ValueError):
            raise ServiceError.single("id", "Must be an integer.") from None
        except ServiceError as exc:
            exc.status_code = 404
            raise

    def _check_whole(self, oneids: list[int], field: str) -> None:
        """Decisions about a person need all of them: 404 when out of scope, 403 when some of the
        person's records belong to brands the user does not hold (two queries)."""
        user = self.request.user
        if sees_everything(user):
            return
        visible = set(
            OneId.objects.filter(oneid_filter(user, "subject"), subject_id__in=oneids).values_list("pk", flat=True)
        )
        for index, oneid in enumerate(oneids):
            if oneid not in visible:
                raise _not_found(field if len(oneids) == 1 else f"{field}.{index}", f"No OneID {oneid}.")
        whole = set(
            OneId.objects.filter(fully_visible_filter(user, "subject_id"), subject_id__in=oneids).values_list(
                "pk", flat=True
            )
        )
        if whole != set(oneids):
            raise PermissionDenied("This OneID holds source records of brands you do not hold.")

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
        matches = oneid_lookup(
            type_code=type_code,
            value=value,
            scope=scope,
            include_records=_sees_records(request),
            viewer=request.user,
            masked=not _unmasked(request),
        )
        self._log([m["id"] for m in matches])
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
        self._check_whole([int(id)], "oneid")
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
        self._check_whole(oneids, "oneids")
        survivor = oneid_merge(actor=request.user, oneids=oneids, reason=str(body.get("reason", "")))
        return Response({"survivor": survivor})


class MatchSuggestionViewSet(ScopedQuerysetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Fuzzy candidate pairs. A scoped user sees (and decides) only pairs of OneIDs they see whole:
    the evidence compares the two people's golden records, all their records included."""

    queryset = MatchSuggestion.objects.order_by("id")
    serializer_class = MatchSuggestionSerializer
    permission_classes = [ChangeOnPost]
    filterset_fields = ["status"]
    scope_field = ("oneid_a", "oneid_b")  # the mixin: both OneIDs visible; here: and seen whole

    def get_queryset(self):
        queryset = super().get_queryset()
        user = self.request.user
        if sees_everything(user):
            return queryset
        return queryset.filter(fully_visible_filter(user, "oneid_a_id"), fully_visible_filter(user, "oneid_b_id"))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "unmasked": _unmasked(self.request)}

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        if _unmasked(request):
            pii.log_unmask(request.user, "identity.matchsuggestion", [r["id"] for r in response.data["results"]])
        return response

    def _visible(self, pk) -> int:
        suggestion_id = _int(pk)
        if not self.get_queryset().filter(id=suggestion_id).exists():
            raise _not_found("id", f"No suggestion {suggestion_id}.")
        return suggestion_id

    @extend_schema(request=None, responses={200: MergeResponseSerializer, **ERRORS}, summary="Accept: merge the pair")
    @action(detail=True, methods=["post"])
    def accept(self, request: Request, pk=None) -> Response:
        _require(request, "identity.change_matchsuggestion", "identity.change_oneid")
        return Response({"survivor": suggestion_accept(actor=request.user, suggestion_id=self._visible(pk))})

    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Reject: never propose the pair again")
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk=None) -> Response:
        _require(request, "identity.change_matchsuggestion")
        suggestion_reject(actor=request.user, suggestion_id=self._visible(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _int(pk) -> int:
    try:
        return int(pk)
    except (TypeError, ValueError):
        raise ServiceError.single("id", "Must be an integer.") from None


class ReapplyRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Re-applications of the rules to the stored records, newest first (a rule change requests one
    once committed): status, counts, problem samples (record and field, no values), the resolution.
    Shown to users who see every brand (the problems name records of every brand)."""

    queryset = ReapplyRun.objects.order_by("-id")
    serializer_class = ReapplyRunSerializer
    filterset_fields = ["status"]

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset if sees_everything(self.request.user) else queryset.none()
