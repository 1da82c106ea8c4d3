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
