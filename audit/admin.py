"""The auditors' admin: django-auditlog's field diffs and the domain events, read-only and masked.

Built for millions of rows: no full ``COUNT`` (the paginator asks the planner for an estimate on
PostgreSQL), no ``date_hierarchy`` (its date drill-down aggregates the whole table), filters
whose choices come from small tables or a loose index scan, and text filters for actor, subject,
tag and correlation id that become indexed equality conditions. Personal data is masked in what
the pages show, whoever views them: entries are stored masked, and entries written before that
(or by code that bypassed the services) are masked again on display.
"""

from __future__ import annotations

import json
import uuid

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.utils.functional import cached_property
from django.utils.html import format_html

from subjects.pii import PiiLookupMixin

from .models import DomainEvent
from .services import PII_FIELDS, mask_changes

MAX_ID = 2**63 - 1
SAFE_SUMMARY_STRINGS = frozenset(
    {
        "action",
        "kind",
        "rule",
        "code",
        "status",
        "direction",
        "object_type",
        "relationship_type",
        "from",
        "to",
        "fields",
    }
)


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL the count is the planner's estimate (one EXPLAIN), never a COUNT of the table.

    Small results (an estimate under 10,000) are counted exactly, so filtered pages stay exact.
    """

    EXACT_BELOW = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor != "postgresql" or not hasattr(queryset, "query"):
            return super().count
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        return super().count if estimate < self.EXACT_BELOW else estimate


class InputFilter(admin.SimpleListFilter):
    """A list filter that is a text box (ids, usernames, correlation ids): no list of choices."""

    template = "admin/audit/input_filter.html"

    def lookups(self, request, model_admin):
        return ((None, ""),)

    def choices(self, changelist):
        query = changelist.get_query_string(remove=[self.parameter_name])
        others = [(k, v) for k, v in changelist.params.items() if k != self.parameter_name]
        yield {"value": self.value() or "", "clear_url": query, "others": others}

    def integer(self) -> int:
        value = (self.value() or "").strip()
        if not (value.isascii() and value.isdigit() and 0 < int(value) < MAX_ID):
            raise IncorrectLookupParameters(f"{self.parameter_name} must be an id.")
        return int(value)


class ActorFilter(InputFilter):
    title = "actor (username or id)"
    parameter_name = "actor"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if value.isascii() and value.isdigit():
            return queryset.filter(actor_id=int(value))
        # The id as a literal, not a subquery: the planner then sees a rare actor and uses the
        # actor index instead of walking the whole log backwards by id.
        user_id = get_user_model().objects.filter(username=value).values_list("pk", flat=True).first()
        return queryset.filter(actor_id=user_id) if user_id is not None else queryset.none()


class CorrelationFilter(InputFilter):
    title = "correlation id"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        try:
            cid = uuid.UUID(value)
        except ValueError:
            raise IncorrectLookupParameters("Not a correlation id (UUID).") from None
        return queryset.filter(**{self.field: str(cid) if self.field == "cid" else cid})


class LogCorrelationFilter(CorrelationFilter):
    parameter_name = "cid"
    field = "cid"


class EventCorrelationFilter(CorrelationFilter):
    parameter_name = "correlation_id"
    field = "correlation_id"


def _content_type(label: str) -> ContentType:
    app_label, model = label.split(".")
    return ContentType.objects.get_by_natural_key(app_label, model)


class LogSubjectFilter(InputFilter):
    title = "subject id"
    parameter_name = "subject"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(content_type=_content_type("subjects.subject"), object_id=self.integer())


class LogTagFilter(InputFilter):
    title = "tag id"
    parameter_name = "tag"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(content_type=_content_type("tags.tagdefinition"), object_id=self.integer())


class ModelFilter(admin.SimpleListFilter):
    """Choices are the models registered with auditlog (not a DISTINCT over millions of entries)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        models = sorted(auditlog.get_models(), key=lambda m: m._meta.label_lower)
        types = ContentType.objects.get_for_models(*models)
        return [(str(types[m].pk), m._meta.label_lower) for m in models]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not (value.isascii() and value.isdigit()):
            raise IncorrectLookupParameters("model must be a content type id.")
        return queryset.filter(content_type_id=int(value))


class ReadOnlyAuditAdmin(PiiLookupMixin, admin.ModelAdmin):
    """Nothing here can be added, changed or deleted, by anyone: the log is append-only.

    Diffs, labels and summaries may hold personal values (entries written before masking, free
    text in a summary): filtering by them needs ``view_pii`` (``pii_lookup_fields``).
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    ordering = ("-id",)  # the primary key index, backwards: a page is an index range
    list_per_page = 50
    actions = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _label(entry: LogEntry) -> str:
    return entry.content_type.app_label + "." + entry.content_type.model


def _pretty(value) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class LogEntryAdmin(ReadOnlyAuditAdmin):
    pii_lookup_fields = ("changes", "changes_text", "object_repr", "serialized_data", "additional_data")
    list_display = ("timestamp", "action", "model", "shown_object", "actor", "cid")
    list_select_related = ("content_type", "actor")
    list_filter = (
        ModelFilter,
        "action",
        ActorFilter,
        LogSubjectFilter,
        LogTagFilter,
        LogCorrelationFilter,
        ("timestamp", admin.DateFieldListFilter),
    )
    fields = ("timestamp", "action", "model", "shown_object", "actor", "cid", "shown_changes")
    readonly_fields = fields

    @admin.display(description="model")
    def model(self, entry: LogEntry) -> str:
        return _label(entry)

    @admin.display(description="object")
    def shown_object(self, entry: LogEntry) -> str:
        """Objects of PII models are named by id: a stored label may predate masking."""
        if _label(entry) in PII_FIELDS:
            return f"{_label(entry)} #{entry.object_pk}"
        return entry.object_repr

    @admin.display(description="changes (personal data masked)")
    def shown_changes(self, entry: LogEntry) -> str:
        changes = entry.changes
        if isinstance(changes, str):
            try:
                changes = json.loads(changes)
            except ValueError:
                changes = {"changes": changes}
        if _label(entry) in PII_FIELDS:
            changes = mask_changes(_label(entry), changes)
        return format_html("<pre>{}</pre>", _pretty(changes))


def safe_summary(value, key: str = ""):
    """A domain event's summary as auditors see it: numbers and known codes, every other string masked.

    Summaries hold counts, ids and codes by design; a free-text or value field (a reason, merge
    evidence) could hold personal data, so strings survive only under keys known to carry codes.
    """
    from subjects.pii import MASK

    if isinstance(value, dict):
        return {k: safe_summary(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_summary(v, key) for v in value]
    if isinstance(value, str):
        return value if key in SAFE_SUMMARY_STRINGS else (MASK if value else value)
    return value


class ActionFilter(admin.SimpleListFilter):
    """The distinct actions by a loose index scan on PostgreSQL (one probe per action, not per row)."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return [(a, a) for a in distinct_actions()]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(action=self.value())


def distinct_actions() -> list[str]:
    table = DomainEvent._meta.db_table
    if connection.vendor != "postgresql":
        return list(DomainEvent.objects.order_by("action").values_list("action", flat=True).distinct())
    sql = (
        f"WITH RECURSIVE a(action) AS ((SELECT action FROM {table} ORDER BY action LIMIT 1) UNION ALL "
        f"SELECT (SELECT action FROM {table} WHERE action > a.action ORDER BY action LIMIT 1) FROM a "
        "WHERE a.action IS NOT NULL) SELECT action FROM a WHERE action IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


class EventObjectTypeFilter(InputFilter):
    title = "object type (e.g. subjects.subject, tag:vip)"
    parameter_name = "object_type"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(object_type=value) if value else queryset


class EventSubjectFilter(InputFilter):
    """Events whose summary lists the subject id (``ids``) or names it (``subject_id``)."""

    title = "subject id"
    parameter_name = "subject"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        subject_id = self.integer()
        if connection.vendor == "postgresql":  # containment: served by a GIN (jsonb_path_ops) index
            return queryset.filter(
                Q(summary__contains={"ids": [subject_id]}) | Q(summary__contains={"subject_id": subject_id})
            )
        table = DomainEvent._meta.db_table
        return queryset.extra(  # SQLite has no JSON containment: the same test over json_each
            where=[
                f"(EXISTS (SELECT 1 FROM json_each({table}.summary, '$.ids') WHERE value = %s)"
                f" OR json_extract({table}.summary, '$.subject_id') = %s)"
            ],
            params=[subject_id, subject_id],
        )


class EventTagFilter(InputFilter):
    title = "tag id"
    parameter_name = "tag"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        tag_id = self.integer()
        if connection.vendor == "postgresql":
            return queryset.filter(summary__contains={"tag_id": tag_id})
        return queryset.filter(summary__tag_id=tag_id)


@admin.register(DomainEvent)
class DomainEventAdmin(ReadOnlyAuditAdmin):
    pii_lookup_fields = ("summary",)
    list_display = ("occurred_at", "action", "actor", "object_type", "row_count", "correlation_id")
    list_select_related = ("actor",)
    list_filter = (
        ActionFilter,
        ActorFilter,
        EventObjectTypeFilter,
        EventSubjectFilter,
        EventTagFilter,
        EventCorrelationFilter,
        ("occurred_at", admin.DateFieldListFilter),
    )
    fields = ("occurred_at", "action", "actor", "object_type", "row_count", "correlation_id", "shown_summary")
    readonly_fields = fields

    @admin.display(description="summary (personal data masked)")
    def shown_summary(self, event: DomainEvent) -> str:
        return format_html("<pre>{}</pre>", _pretty(safe_summary(event.summary)))
