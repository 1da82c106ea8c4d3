"""URLs of the event ingestion API (included by config/urls.py under /api/v1/)."""

from django.urls import path

from .events import EventBatchView, EventIngestView, TagValueExplainView

urlpatterns = [
    path("events/", EventIngestView.as_view(), name="event-ingest"),
    path("events/batch/", EventBatchView.as_view(), name="event-batch"),
    path("tag-explain/", TagValueExplainView.as_view(), name="tag-value-explain"),
]
