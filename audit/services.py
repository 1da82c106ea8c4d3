"""Writing audit records; called by the services of every app inside their transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import DomainEvent


def domain_event_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str = "",
    row_count: int = 0,
    summary: Mapping | None = None,
    correlation_id: uuid.UUID | None = None,
) -> DomainEvent:
    return DomainEvent.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else None,
        object_type=object_type,
        row_count=row_count,
        summary=dict(summary or {}),
        correlation_id=correlation_id or uuid.uuid4(),
    )


def bulk_write_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str,
    counts: Mapping[str, int],
    ids: list[int],
    correlation_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record one bulk write with the ids it wrote; returns its correlation id.

    A batch that wrote nothing (every item unchanged) leaves no event, so an
    idempotent re-run changes nothing at all. Callers pass one ``correlation_id``
    for all the batches of one operation (a CSV import in chunks).
    """
    correlation_id = correlation_id or uuid.uuid4()
    if ids:
        domain_event_record(
            actor=actor,
            action=action,
            object_type=object_type,
            row_count=len(ids),
            summary={**counts, "ids": ids},
            correlation_id=correlation_id,
        )
    return correlation_id
