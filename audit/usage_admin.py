"""The tag usage pages of the admin: an overview (usage over time, most used, unused and stale tags)
and one page per tag (usage over time, subjects affected now and over time, lineage).

Shown to holders of ``audit.view_tagusage`` (auditors, HQ); only tags the viewer may see
(``tags.access.visible_tags``) are counted, listed or linked, and subject counts follow the
viewer's subject scope. Charts are drawn by the vendored Chart.js from JSON the page embeds
with ``json_script`` (the same data the tests read back).
"""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from subjects.access import visible_subject_filter
from tags.access import visible_tags
from tags.models import TagDefinition

from . import usage_selectors as selectors
from .models import TagUsage, UsageKind

DAYS_CHOICES = (7, 30, 90, 365)
DEFAULT_DAYS = 30
LISTED = 200
TOP_CHARTED = 15


def days_param(request) -> int:
    """The window (and the unused/stale threshold) in days: one of ``DAYS_CHOICES``."""
    raw = request.GET.get("days", "")
    return int(raw) if raw.isdigit() and int(raw) in DAYS_CHOICES else DEFAULT_DAYS


def bar_chart(days: list[dt.date], series: dict[str, list[int]], labels: dict[str, str]) -> dict:
    """A stacked bar chart of ``series`` (name → values per day) with ``labels`` naming them."""
    return {
        "type": "bar",
        "stacked": True,
        "labels": [day.isoformat() for day in days],
        "datasets": [{"label": labels[name], "data": values} for name, values in series.items()],
    }


KIND_LABELS = dict(UsageKind.choices)


@admin.register(TagUsage)
class TagUsageAdmin(admin.ModelAdmin):
    """Read-only: the changelist is the usage overview, ``tag/<id>/`` a tag's page."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        tag_page = path("tag/<int:tag_id>/", self.admin_site.admin_view(self.tag_view), name="audit_tagusage_tag")
        return [tag_page, *super().get_urls()]

    def _context(self, request, title: str) -> dict:
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = days_param(request)
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "days": days,
            "days_choices": DAYS_CHOICES,
            "window": selectors.window(days),
        }

    def changelist_view(self, request, extra_context=None):
        context = self._context(request, "Tag usage")
        tags, window = visible_tags(request.user), context["window"]
        since = window[0]
        stale_since = timezone.make_aware(dt.datetime.combine(since, dt.time.min))
        top = selectors.top_tags(tags, since)
        unused = selectors.unused_tags(tags, since)
        stale = selectors.stale_tags(tags, stale_since)
        context.update(
            usage_chart=bar_chart(window, selectors.usage_series(tags, window), KIND_LABELS),
            top_tags=top,
            top_chart=_top_chart(top[:TOP_CHARTED]),
            kinds=UsageKind.choices,
            unused=unused[:LISTED],
            unused_count=unused.count(),
            stale=stale[:LISTED],
            stale_count=stale.count(),
            listed=LISTED,
        )
        return TemplateResponse(request, "audit/usage/overview.html", context)

    def tag_view(self, request, tag_id: int):
        context = self._context(request, "Tag usage")
        tags = visible_tags(request.user)
        tag = tags.select_related("subject_type", "group", "rule").filter(pk=tag_id).first()
        if tag is None:
            raise Http404("No such tag.")
        window = context["window"]
        subject_filter = visible_subject_filter(request.user, "subject")
        subjects = selectors.subjects_series(tag, window, subject_filter)
        context.update(
            title=f"Tag usage: {tag.code}",
            tag=tag,
            usage_chart=bar_chart(window, selectors.usage_series(tags.filter(pk=tag.pk), window), KIND_LABELS),
            last_use=[(KIND_LABELS[k], day) for k, day in sorted(selectors.last_use_by_kind(tag).items())],
            subjects_now=subjects["with_value"][-1],
            subjects_chart=_subjects_chart(window, subjects),
            **_lineage_context(tag, tags, since=window[0]),
        )
        return TemplateResponse(request, "audit/usage/tag.html", context)


def _top_chart(top: list[dict]) -> dict:
    """The most used tags as horizontal stacked bars, one dataset per kind."""
    return {
        "type": "bar",
        "stacked": True,
        "horizontal": True,
        "labels": [row["tag__code"] for row in top],
        "datasets": [
            {"label": label, "data": [row["by_kind"][i] for row in top]}
            for i, (_, label) in enumerate(UsageKind.choices)
        ],
    }


def _subjects_chart(window: list[dt.date], subjects: dict[str, list[int]]) -> dict:
    """Subjects holding a value at each day's end (a line) over values added and removed (bars)."""
    return {
        "type": "bar",
        "stacked": False,
        "labels": [day.isoformat() for day in window],
        "datasets": [
            {"label": "Subjects with a value", "data": subjects["with_value"], "type": "line"},
            {"label": "Values added", "data": subjects["added"]},
            {"label": "Values removed", "data": subjects["removed"]},
        ],
    }


def _lineage_context(tag: TagDefinition, tags, *, since: dt.date) -> dict:
    """Upstream and downstream tags the viewer may see, with their use counts; how many are hidden."""
    walked = selectors.lineage(tag.pk)
    ids = {entry.tag_id for entries in walked.values() for entry in entries}
    shown = {t.pk: t for t in selectors.annotate_usage(tags.filter(pk__in=ids), since).select_related("subject_type")}
    rows = {
        direction: [(entry, shown[entry.tag_id]) for entry in entries if entry.tag_id in shown]
        for direction, entries in walked.items()
    }
    return {
        "hidden": len(ids - shown.keys()),
        "lineage": rows,
        "lineage_tables": [
            ("upstream", "Reads (upstream: what its rule or propagation reads, transitively)", rows["upstream"]),
            ("downstream", "Read by (downstream: the tags computed from it, transitively)", rows["downstream"]),
        ],
    }
