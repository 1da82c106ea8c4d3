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
