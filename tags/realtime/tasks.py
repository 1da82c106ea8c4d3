"""Celery entry points of the real-time engine; thin, idempotent, bounded.

Every task is acknowledged late and requeued when its worker dies
(``reject_on_worker_lost``), retried with jittered exponential backoff on database
errors up to a bound, and time-limited. Idempotence comes from the writes: a
recompute writes only values that differ from what is stored, so a task run
twice, or re-run after a worker was killed mid-way (its transaction rolled back or
committed chunk by chunk), converges to the same values.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from audit.services import acting_as, current_actor, system_actor
from tags.models import JobStatus, RecomputeJob

log = logging.getLogger(__name__)

COMMON = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="tags.refresh", soft_time_limit=240, time_limit=300, **COMMON)
def refresh(self, payload: dict | None = None, correlation_id: str | None = None, actor_id: int | None = None) -> dict:
    """Recompute the tags and subjects of ``payload`` (a Plan), then everything downstream.

    Audited as the user whose write triggered it (``actor_id``) or ``system:tags.refresh``; the
    correlation id links it to that write's own events.
    """
    from .enqueue import run_pending  # the waiting requests too: a worker behind a burst coalesces them

    cid = uuid.UUID(correlation_id) if correlation_id else None
    with acting_as(_actor(actor_id, "tags.refresh")):
        queue = (self.request.delivery_info or {}).get("routing_key")
        return run_pending(payload, cid, queue=queue)


def _actor(actor_id: int | None, task_name: str):
    """The requesting user when still active, else (eager, in a request) that request's user, else the
    task's named system actor."""
    if actor_id is not None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=actor_id, is_active=True).first()
        if user is not None:
            return user
    return current_actor() or system_actor(task_name)


@shared_task(name="tags.recompute_propagated", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300, **COMMON)
def recompute_propagated(self, job_id: int) -> int:
    """Full recompute of a propagated tag (RecomputeJob ``job_id``), then its downstream tags.

    Audited as the job's requesting user (or ``system:tags.recompute_propagated``).
    """
    job = RecomputeJob.objects.select_related("tag", "tag__rule", "requested_by").filter(pk=job_id).first()
    if job is None or job.status == JobStatus.DONE:
        return 0
    with acting_as(job.requested_by or system_actor("tags.recompute_propagated")):
        return _recompute_propagated(self, job)


def _recompute_propagated(task, job: RecomputeJob) -> int:
    from tags.propagation.recompute import recompute_all

    RecomputeJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), rows_changed=0, error=""
    )
    try:
        changed = recompute_all(job.tag, job=job, cascade=True)
    except OperationalError:
        if task.request.retries >= task.max_retries:
            _fail(job, "database unavailable after retries")
        raise
    except Exception as exc:
        _fail(job, f"{type(exc).__name__}: {exc}")
        raise
    RecomputeJob.objects.filter(pk=job.pk).update(status=JobStatus.DONE, finished_at=timezone.now())
    return changed


def _fail(job: RecomputeJob, message: str) -> None:
    log.exception("propagation recompute job %s failed", job.pk)
    RecomputeJob.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, finished_at=timezone.now(), error=message[:2000]
    )


@shared_task(name="tags.expire_windows", soft_time_limit=1500, time_limit=1800, **COMMON)
def expire_windows(self) -> dict:
    """Beat: recompute the subjects whose windowed inputs aged out since the last sweep."""
    from .expiry import sweep

    with acting_as(system_actor("tags.expire_windows")):
        return sweep()


@shared_task(name="tags.reconcile_propagated", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300, **COMMON)
def reconcile_propagated(self) -> int:
    """Beat (nightly): full recompute of every propagated tag — the safety net for missed triggers."""
    with acting_as(system_actor("tags.reconcile_propagated")):
        return _reconcile()


def _reconcile() -> int:
    from tags.models import Computation, TagDefinition, TagStatus
    from tags.propagation.recompute import recompute_all

    changed = 0
    tags = (
        TagDefinition.objects.select_related("rule")
        .filter(computation=Computation.PROPAGATED, rule__isnull=False)
        .exclude(status=TagStatus.ARCHIVED)
    )
    from . import index as tag_index

    order = tag_index.current().position
    for tag in sorted(tags, key=lambda t: order.get(t.pk, 0)):
        changed += recompute_all(tag, cascade=True)
    return changed
