"""Domain events: the audit trail of operations, bulk and set-based ones included.

django-auditlog keeps field diffs of single-object writes; bulk upserts, imports
and recomputes bypass model signals, so their services write one domain event
per operation with counts, the ids they wrote and a correlation id.
"""

import uuid

from django.conf import settings
from django.db import models


class DomainEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    action = models.CharField(max_length=100, db_index=True, help_text="e.g. subjects.bulk_upserted")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    correlation_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} ({self.row_count})"


class UsageKind(models.TextChoices):
    READ = "read", "Read (API or admin)"
    RULE = "rule", "Input of a rule"
    PROPAGATION = "propagation", "Source of a propagation"
    PREVIEW = "preview", "Preview"
    EXPORT = "export", "Export"


class TagUsage(models.Model):
    """How often a tag was used, per day and kind: one row per (tag, day, kind), never one per subject.

    ``audit.usage.record_tag_use`` adds to ``count`` with one upsert per request or
    operation for all the tags it touched (``count = count + EXCLUDED.count``), so
    reads stay cheap and concurrent requests never lose an increment.
    """

    id = models.BigAutoField(primary_key=True)
    tag = models.ForeignKey("tags.TagDefinition", on_delete=models.CASCADE, related_name="usage", db_index=False)
    day = models.DateField(db_index=True)
    kind = models.CharField(max_length=20, choices=UsageKind.choices)
    count = models.BigIntegerField(default=0, help_text="Requests or operations that used the tag that day.")

    class Meta:
        ordering = ["-day", "tag", "kind"]
        verbose_name = verbose_name_plural = "tag usage"
        constraints = [models.UniqueConstraint(fields=["tag", "day", "kind"], name="tag_usage_unique_day_kind")]

    def __str__(self) -> str:
        return f"{self.tag_id} {self.kind} {self.day}: {self.count}"
