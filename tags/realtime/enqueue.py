"""Hand a plan to the engine: a request stored with the write, a message after its commit.

The plan (the affected subject ids per tag) is stored as a ``RefreshRequest`` in the
writing transaction — committed with the write, so it cannot be lost with a
message — and one ``tags.refresh`` message follows the commit: one per committed
write (an event batch, a relationship batch, a manual edit), never one per event.
A refresh runs every request waiting (``run_pending``), so a worker behind a burst
coalesces them instead of recomputing the same targets once per message. Without a
broker (the embedded default) Celery runs the task in process, right after the
commit, with the same code.
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction

from .planner import Plan

log = logging.getLogger(__name__)
MAX_IDS_PER_MESSAGE = 20_000


def enqueue_after_commit(plan: Plan, correlation_id: uuid.UUID | None = None) -> None:
    """Schedule ``tags.refresh`` for ``plan`` once the current transaction commits (now in autocommit).

    ``correlation_id`` (the triggering write's) is carried to the values the engine writes,
    so history and domain events tie a downstream change to the event batch that caused it.
    """
    if not plan:
        return
    from tags.models import RefreshRequest

    RefreshRequest.objects.bulk_create(
        [RefreshRequest(payload=part.as_payload(), correlation_id=correlation_id) for part in _split(plan)]
    )
    cid = str(correlation_id) if correlation_id else None
    transaction.on_commit(lambda: _send(None, cid))


def _send(payload: dict | None, correlation_id: str | None = None) -> None:
    """One ``tags.refresh`` message; it runs this request with whatever else is waiting."""
    from .tasks import refresh

    refresh.delay(payload, correlation_id)


MAX_REQUESTS = 500


def run_pending(
    payload: dict | None = None, correlation_id: uuid.UUID | None = None, *, queue: str | None = None
) -> dict:
    """Run the waiting refresh requests (and ``payload``) as one plan; what ``tags.refresh`` does.

    Requests are claimed in id order with ``FOR UPDATE SKIP LOCKED`` (two workers take
    disjoint sets) up to ``MAX_IDS_PER_MESSAGE`` subjects, merged and run in one
    transaction with their deletion: a worker killed half-way leaves them waiting for
    the redelivered message. When several requests ran together, a domain event
    ``tags.refresh_coalesced`` names their correlation ids (the values carry the first).
    """
    from audit.services import domain_event_record
    from tags.models import RefreshRequest

    from .planner import ENGINE_ACTIVE, run_plan

    plan = Plan.from_payload(payload) if payload else Plan()
    token = ENGINE_ACTIVE.set(True)  # until the outer commit: the engine's own writes need no new task
    try:
        with transaction.atomic():
            claimed = (
                RefreshRequest.objects.select_for_update(skip_locked=True)
                .order_by("id")
                .values_list("id", "payload", "correlation_id")[:MAX_REQUESTS]
            )
            taken, correlations = [], [correlation_id] if correlation_id else []
            for pk, part, cid in claimed:
                request = Plan.from_payload(part)
                if taken and plan.subject_count() + request.subject_count() > MAX_IDS_PER_MESSAGE:
                    break
                plan.merge(request)
                taken.append(pk)
                if cid is not None and cid not in correlations:
                    correlations.append(cid)
            stopped_early = len(taken) < len(claimed)  # the claim's rows are cached by the loop
            RefreshRequest.objects.filter(id__in=taken).delete()
            lead = correlations[0] if correlations else None
            outcome = run_plan(plan, correlation_id=lead)
            if len(correlations) > 1:
                domain_event_record(
                    actor=None,
                    action="tags.refresh_coalesced",
                    object_type="tags.refresh",
                    row_count=len(taken),
                    summary={"correlations": [str(c) for c in correlations], "rows_changed": outcome.rows_changed},
                    correlation_id=lead,
                )
    finally:
        ENGINE_ACTIVE.reset(token)
    _follow_up(stopped_early=stopped_early, claimed_nothing=not taken, queue=queue)
    return {"requests": len(taken), "rows_changed": outcome.rows_changed, "steps": outcome.steps}


FOLLOW_UP_SECONDS = 2


def _follow_up(*, stopped_early: bool, claimed_nothing: bool, queue: str | None) -> None:
    """Make sure no waiting request is left without a message that will run it.

    Two cases would otherwise strand requests: this run stopped at its size limit (the rest's
    messages may already be consumed), or it claimed nothing because another session holds the
    rows — a live worker about to finish, or the connection of a worker just killed, whose
    locks last until PostgreSQL notices it is gone and rolls it back. Then one more
    ``tags.refresh`` follows in a moment. It stops as soon as a run claims something or finds
    nothing waiting, so follow-ups never multiply. It goes to the queue this run came from.
    """
    from celery import current_app

    from tags.models import RefreshRequest

    if not (stopped_early or claimed_nothing) or not RefreshRequest.objects.exists():
        return
    from .tasks import refresh

    if current_app.conf.task_always_eager:
        if stopped_early:  # in process: run the rest now (each round claims something)
            run_pending()
        return
    refresh.apply_async(countdown=FOLLOW_UP_SECONDS, **({"queue": queue} if queue else {}))


def _split(plan: Plan) -> list[Plan]:
    """Messages of at most ``MAX_IDS_PER_MESSAGE`` ids, so a huge batch cannot make one huge message."""
    if plan.subject_count() <= MAX_IDS_PER_MESSAGE:
        return [plan]
    parts, current, size = [], Plan(), 0
    for kind in ("pending", "changes"):
        for tag_id, ids in getattr(plan, kind).items():
            ordered = sorted(ids)
            for start in range(0, len(ordered), MAX_IDS_PER_MESSAGE):
                chunk = ordered[start : start + MAX_IDS_PER_MESSAGE]
                if size + len(chunk) > MAX_IDS_PER_MESSAGE and size:
                    parts.append(current)
                    current, size = Plan(), 0
                (current.recompute if kind == "pending" else current.changed)(tag_id, chunk)
                size += len(chunk)
    if current:
        parts.append(current)
    return parts
