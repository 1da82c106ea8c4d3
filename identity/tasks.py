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
def reapply_rules(self, run_id: int) -> dict:
    """Carry out rules re-application run ``run_id`` (see :mod:`identity.services.reapply`);
    audited as the user who changed the rules, else ``system:identity.reapply_rules``."""
    from .models import ReapplyRun
    from .services.reapply import run_reapply

    run = ReapplyRun.objects.select_related("requested_by").filter(pk=run_id).first()
    if run is None:
        return {}
    actor = _actor(run.requested_by)
    with acting_as(actor):
        run = run_reapply(run.pk, actor=actor)
    if run.problems:
        log.warning("identity rules re-applied: %s stored values rejected by the current rules", run.problems)
    return {"run": run.pk, "status": run.status, "changed": run.changed, "problems": run.problems}


def _actor(user):
    if user is not None and user.is_active:
        return user
    return system_actor("identity.reapply_rules")
