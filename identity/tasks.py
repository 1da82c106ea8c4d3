"""Celery entry points of OneID: re-applying the rules after an operator changed them.

Acknowledged late and requeued when the worker dies; retried on database errors.
Idempotent: the re-extraction writes only identifiers that differ and the
resolution only assignments that differ, so a second run (or two rule edits
enqueueing two runs) converges to the same state and writes nothing more.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

from audit.services import acting_as, system_actor

log = logging.getLogger(__name__)


@shared_task(
    name="identity.reapply_rules",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def reapply_rules(self, refresh_golden: bool = False, actor_id: int | None = None) -> dict:
    """Re-extract every record's identifiers under the current rules and re-resolve (see
    :mod:`identity.services.reapply`); audited as the user who changed the rules."""
    from .services.reapply import identity_rules_reapply

    actor = _actor(actor_id)
    with acting_as(actor):
        result = identity_rules_reapply(actor=actor, refresh_golden=refresh_golden)
    if result.problems:
        log.warning("identity rules re-applied: %s stored values rejected by the current rules", result.problems)
    return result.summary()


def _actor(actor_id: int | None):
    if actor_id is not None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=actor_id, is_active=True).first()
        if user is not None:
            return user
    return system_actor("identity.reapply_rules")
