"""Signals the tag engine sends; propagation and real-time triggers subscribe to them.

Sent after the writing transaction commits (never inside it), so receivers can
enqueue work that reads the committed values.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.dispatch import Signal

# kwargs: tag (TagDefinition), subject_ids (list[int] whose value changed), correlation_id (UUID)
values_changed = Signal()


def send_values_changed_on_commit(tag, subject_ids: Sequence[int], correlation_id: uuid.UUID) -> None:
    """Schedule ``values_changed`` for after the current transaction commits (now in autocommit)."""
    if not subject_ids:
        return
    ids = list(subject_ids)
    transaction.on_commit(
        lambda: values_changed.send(sender=type(tag), tag=tag, subject_ids=ids, correlation_id=correlation_id)
    )
