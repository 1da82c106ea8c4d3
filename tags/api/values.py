"""Tag values over the API: the list (built from ``values()``), the bulk import and history reads.

A value is shown only when its tag is visible to the user (``tags.access``) and its subject is
in their scope (``subjects.access``); otherwise it is absent, and a tag named in a query that the
user cannot see "does not exist".
"""

from __future__ import annotations

import bisect

from django.conf import settings
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from audit.usage import record_tag_use
from common.errors import ServiceError
from subjects.access import visible_subjects
from subjects.api.views import ERRORS
from subjects.models import Subject
from tags.access import visible_tags, visible_value_filter
from tags.models import TagDefinition, TagValue
from tags.services.values import ValueProblem

from .bulk import import_values
from .filters import TagValueFilter, parse_value_param
from .permissions import ActionPermissions
from .renderers import ORJSONRenderer
from .serializers import (
    SubjectsAtPageSerializer,
    TagValueBulkRequestSerializer,
    TagValueBulkResultSerializer,
    TagValueSerializer,
    ValueAtSerializer,
)

PAGE, MAX_PAGE = 100, 1000
SUBJECT_FIELDS = ("id", "display_name", "source", "external_id")
LIST_FIELDS = ("id", "subject_id", "tag_id", "tag__code", "value", "source", "rule_version", "updated_at")
HISTORY = ["tags.view_tagvaluechange"]
TAG_PARAMS = [
    OpenApiParameter("tag", str, required=True, description="Tag id or code"),
    OpenApiParameter("type", str, description="Subject type code (when a tag code exists for several types)"),
    OpenApiParameter("at", str, required=True, description="ISO date-time (a date means its midnight)"),
]


ROW_KEYS = ("id", "subject", "tag", "tag_code", "value", "source", "rule_version", "updated_at")


def tag_param(request: Request) -> TagDefinition:
    """The tag named by ``?tag=`` (an id or a code, with ``?type=`` when the code is ambiguous)."""
    raw = (request.query_params.get("tag") or "").strip()
    if not raw:
        raise ServiceError.single("tag", "Give ?tag= (a tag id or code).", "required")
    tags = visible_tags(request.user, TagDefinition.objects.select_related("subject_type"))
    if raw.isascii() and raw.isdigit():
        found = list(tags.filter(pk=int(raw))[:1]) if len(raw) < 19 else []
    else:
        found = list(tags.filter(code=raw))
        if type_code := request.query_params.get("type"):
            found = [t for t in found if t.subject_type.code == type_code]
    if not found:
        raise ServiceError.single("tag", f'Tag "{raw[:64]}" does not exist.', "unknown")
    if len(found) > 1:
        raise ServiceError.single("tag", f'Tag "{raw}" exists for several subject types; add ?type=.', "ambiguous")
    return found[0]


def at_param(request: Request):
    raw = (request.query_params.get("at") or "").strip()
    parsed = parse_datetime(raw) if raw else None
    if parsed is None and len(raw) == 10:
        parsed = parse_datetime(f"{raw}T00:00:00")
    if parsed is None:
        raise ServiceError.single("at", "Give ?at= as an ISO date-time (2026-06-01 or 2026-06-01T12:00:00Z).")
    if parsed.tzinfo is None:
        from django.utils import timezone

        parsed = timezone.make_aware(parsed)
    return parsed


def _subject_param(request: Request) -> int:
    raw = request.query_params.get("subject") or ""
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**63):
        raise ServiceError.single("subject", "Give ?subject= (a subject id).", "required")
    return int(raw)


class TagValueViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Stored tag values (one per tag and subject), filterable; writes go through ``bulk/``."""

    queryset = TagValue.objects.all()
    serializer_class = TagValueSerializer
    renderer_classes = [ORJSONRenderer, BrowsableAPIRenderer]
    filterset_class = TagValueFilter
    permission_classes = [ActionPermissions]
    action_perms = {
        "bulk": ["tags.add_tagvalue", "tags.change_tagvalue", "tags.delete_tagvalue"],
        "value_at": HISTORY,
        "subjects_at": HISTORY,
    }

    def get_queryset(self):
        return super().get_queryset().filter(visible_value_filter(self.request.user))

    def list(self, request: Request, *args, **kwargs) -> Response:
        """One query a page: rows come from ``values_list()`` (no model instances) and render with orjson."""
        queryset = self.filter_queryset(self.get_queryset()).values(*LIST_FIELDS)
        page = self.paginate_queryset(queryset)
        record_tag_use({row["tag_id"] for row in page}, "read", actor=request.user)
        return self.get_paginated_response([dict(zip(ROW_KEYS, row.values(), strict=True)) for row in page])

    @extend_schema(
        request=TagValueBulkRequestSerializer,
        responses={200: TagValueBulkResultSerializer, **ERRORS},
        summary="Import up to 1,000 tag values (source imported), all or nothing; null removes a value",
    )
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def bulk(self, request: Request) -> Response:
        data = request.data
        items = data.get("items") if isinstance(data, dict) else data
        outcome = import_values(actor=request.user, items=items, max_items=settings.TAGWEAVE_BULK_MAX_ITEMS)
        return Response(
            {
                "created": outcome.created,
                "updated": outcome.updated,
                "removed": outcome.removed,
                "unchanged": outcome.unchanged,
                "correlation_id": str(outcome.correlation_id),
                "tags": outcome.tags,
            }
        )

    @extend_schema(
        parameters=[*TAG_PARAMS, OpenApiParameter("subject", int, required=True)],
        responses={200: ValueAtSerializer, **ERRORS},
        summary="The value of a tag for a subject at a point in time (from the history)",
    )
    @action(detail=False, methods=["get"], url_path="at", filterset_class=None, pagination_class=None)
    def value_at(self, request: Request) -> Response:
        from tags.services import history

        tag, at, subject_id = tag_param(request), at_param(request), _subject_param(request)
        subjects = visible_subjects(request.user, Subject.objects.filter(pk=subject_id))
        if not subjects.filter(subject_type_id=tag.subject_type_id).exists():
            raise ServiceError.single("subject", f"No {tag.subject_type.code} {subject_id}.", "unknown")
        value = history.value_at(tag, subject_id, at)
        record_tag_use([tag.pk], "read", actor=request.user)
        return Response({"tag": tag.pk, "tag_code": tag.code, "subject": subject_id, "at": at, "value": value})

    @extend_schema(
        parameters=[
            *TAG_PARAMS,
            OpenApiParameter("value", str, required=True, description="The value (JSON or plain text)"),
            OpenApiParameter("after", int, description="Cursor: the last subject id of the previous page"),
            OpenApiParameter("page_size", int, description=f"At most {MAX_PAGE}"),
        ],
        responses={200: SubjectsAtPageSerializer, **ERRORS},
        summary="Subjects that had a value of a tag at a point in time, in id order, paginated",
    )
    @action(detail=False, methods=["get"], url_path="subjects-at", filterset_class=None, pagination_class=None)
    def subjects_at(self, request: Request) -> Response:
        """The history gives the sorted ids; only the page's subjects are read."""
        from tags.services import history

        tag, at = tag_param(request), at_param(request)
        if "value" not in request.query_params:
            raise ServiceError.single("value", "Give ?value= (JSON or plain text).", "required")
        value = parse_value_param(request.query_params["value"])
        try:
            ids = history.subjects_with_value_at(tag, value, at, user=request.user)
        except ValueProblem as problem:
            raise ServiceError.single("value", str(problem), problem.code) from None
        record_tag_use([tag.pk], "read", actor=request.user)
        after, size = _int_param(request, "after", 0), min(_int_param(request, "page_size", PAGE), MAX_PAGE)
        start = bisect.bisect_right(ids, after)
        page_ids = ids[start : start + size]
        rows = Subject.objects.filter(id__in=page_ids).order_by("id").values(*SUBJECT_FIELDS)
        more = start + size < len(ids)
        next_url = None
        if more and page_ids:
            query = request.query_params.copy()
            query["after"] = str(page_ids[-1])
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response({"count": len(ids), "next": next_url, "results": list(rows)})


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise ServiceError.single(name, f"{name} must be a whole number.")
    return int(raw)
