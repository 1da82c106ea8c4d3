"""Event ingestion endpoints: one event, or a batch of up to 1,000, idempotent by (source, event_id).

Thin: the serializers only document the shape (the service validates every item
and names index and field); the views call ``tags.events.ingest_events``.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.usage import record_tag_use, tag_and_inputs
from common.errors import ServiceError
from subjects.access import visible_subjects
from subjects.api.serializers import ErrorSerializer
from tags.access import redact_explanation, visible_tags
from tags.events import ingest_events
from tags.models import Event, TagDefinition, TagValue

ERRORS = {400: ErrorSerializer, 403: ErrorSerializer}


class IdentifierSerializer(serializers.Serializer):
    type = serializers.CharField(help_text='Identifier type code, e.g. "phone", "wechat_openid".')
    value = serializers.CharField()
    scope = serializers.CharField(required=False, help_text="e.g. the WeChat app id of an openid")


class EventInSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=64, help_text="The sending system; with event_id the idempotency key.")
    event_id = serializers.CharField(max_length=128)
    type = serializers.SlugField(max_length=64, help_text='e.g. "purchase", "visit"')
    occurred_at = serializers.DateTimeField()
    properties = serializers.DictField(required=False)
    subject = serializers.IntegerField(required=False, help_text="The subject id; or give identifier.")
    identifier = IdentifierSerializer(required=False)


class EventBatchInSerializer(serializers.Serializer):
    items = EventInSerializer(many=True)


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    id = serializers.IntegerField()
    subject = serializers.IntegerField()
    status = serializers.CharField(help_text='"created", or "replayed" (this event id was stored before)')


class EventBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    replayed = serializers.IntegerField()
    results = EventResultSerializer(many=True)


class _EventView(APIView):
    queryset = Event.objects.none()  # ModelPermissions: POST needs tags.add_event


class EventIngestView(_EventView):
    @extend_schema(
        request=EventInSerializer,
        responses={201: EventResultSerializer, 200: EventResultSerializer, **ERRORS},
        summary="Ingest one event (201 stored; 200 a replay of a stored event id, with the original result)",
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ServiceError.single("item", "Expected an event object.")
        result = ingest_events(actor=request.user, items=[request.data])[0].as_dict()
        del result["index"]
        return Response(result, status=status.HTTP_201_CREATED if result["status"] == "created" else status.HTTP_200_OK)


class EventBatchView(_EventView):
    @extend_schema(
        request=EventBatchInSerializer,
        responses={200: EventBatchResultSerializer, **ERRORS},
        summary="Ingest up to 1,000 events, all or nothing; replays answer with their original result",
    )
    def post(self, request: Request) -> Response:
        data = request.data
        items = data.get("items") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ServiceError.single("items", 'Send {"items": [...]} (or a JSON array of events).')
        results = ingest_events(actor=request.user, items=items, max_items=settings.TAGWEAVE_BULK_MAX_ITEMS)
        created = sum(1 for r in results if r.status == "created")
        return Response(
            {"created": created, "replayed": len(results) - created, "results": [r.as_dict() for r in results]}
        )


class TagValueExplainView(APIView):
    """Why a subject has its value of a tag (``tags.propagation.explain``); needs ``view_tagvalue``.

    Lives with the engine's endpoints because it explains the engine's work.
    """

    queryset = TagValue.objects.none()

    @extend_schema(
        parameters=[
            OpenApiParameter("tag", int, required=True, description="Tag definition id"),
            OpenApiParameter("subject", int, required=True, description="Subject id"),
        ],
        responses={200: dict, **ERRORS, 404: ErrorSerializer},
        summary="Why the subject has this value: the rule or propagation path and the inputs",
    )
    def get(self, request: Request) -> Response:
        from django.shortcuts import get_object_or_404

        from tags.propagation.explain import explain

        ids = {}
        for name in ("tag", "subject"):
            raw = request.query_params.get(name, "")
            if not raw.isdigit() or not 0 < int(raw) < 2**63:
                raise ServiceError.single(name, f'"{name}" is a required id.')
            ids[name] = int(raw)
        tag = get_object_or_404(visible_tags(request.user, TagDefinition.objects.select_related("rule")), pk=ids["tag"])
        get_object_or_404(visible_subjects(request.user), pk=ids["subject"])
        record_tag_use(tag_and_inputs(tag.pk), "read", actor=request.user)
        return Response(redact_explanation(request.user, tag, explain(tag, ids["subject"])))
