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
def refresh(self, payload: dict | None = None, correlation_id: str | None = None) -> dict:
    """Run the waiting refresh requests (and ``payload``, a Plan, if given), then everything downstream."""
    from .enqueue import run_pending  # the waiting requests too: a worker behind a burst coalesces them

    cid = uuid.UUID(correlation_id) if correlation_id else None
    return run_pending(payload, cid)


@shared_task(name="tags.recompute_propagated", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300, **COMMON)
def recompute_propagated(self, job_id: int) -> int:
    """Full recompute of a propagated tag (RecomputeJob ``job_id``), then its downstream tags."""
    from tags.propagation.recompute import recompute_all

    job = RecomputeJob.objects.select_related("tag", "tag__rule").filter(pk=job_id).first()
    if job is None or job.status == JobStatus.DONE:
        return 0
    RecomputeJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), rows_changed=0, error=""
    )
    try:
        changed = recompute_all(job.tag, job=job, cascade=True)
    except OperationalError:
        if self.request.retries >= self.max_retries:
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

    return sweep()


@shared_task(name="tags.reconcile_propagated", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300, **COMMON)
def reconcile_propagated(self) -> int:
    """Beat (nightly): full recompute of every propagated tag — the safety net for missed triggers."""
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
