"""Thin Celery entry points of the tag engine; the work lives in tags.services.

Tasks are idempotent (a recompute writes only what differs), acknowledged late,
requeued when the worker dies, retried with jittered backoff on database errors,
and bounded in time.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError, OperationalError
from django.utils import timezone

from audit.services import acting_as, system_actor
from tags.models import JobStatus, RecomputeJob

log = logging.getLogger(__name__)


@shared_task(
    name="tags.recompute_tag",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def recompute_tag(self, job_id: int) -> int:
    """Run the full recompute of RecomputeJob ``job_id``; a finished job is not run again.

    Its audit records are the requesting user's (or the ``system:tags.recompute_tag`` actor's).
    """
    job = RecomputeJob.objects.select_related("tag", "tag__rule", "requested_by").filter(pk=job_id).first()
    if job is None or job.status == JobStatus.DONE:
        return 0
    with acting_as(job.requested_by or system_actor("tags.recompute_tag")):
        return _recompute(self, job)


def _recompute(task, job: RecomputeJob) -> int:
    from tags.services.recompute import recompute_all

    RecomputeJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), rows_changed=0, error=""
    )
    try:
        changed = recompute_all(job.tag, job=job)
    except OperationalError:
        if task.request.retries >= task.max_retries:
            _fail(job, "database unavailable after retries")
        raise
    except DatabaseError as exc:
        _fail(job, str(exc))
        raise
    except Exception as exc:
        _fail(job, f"{type(exc).__name__}: {exc}")
        raise
    RecomputeJob.objects.filter(pk=job.pk).update(status=JobStatus.DONE, finished_at=timezone.now())
    return changed


def _fail(job: RecomputeJob, message: str) -> None:
    log.exception("recompute job %s failed", job.pk)
    RecomputeJob.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, finished_at=timezone.now(), error=message[:2000]
    )
