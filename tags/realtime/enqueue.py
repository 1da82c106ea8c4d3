"""Hand a plan to the engine after the writing transaction commits.

A task message carries a batch of affected subject ids per tag — one message per
committed write (an event batch, a relationship batch, a manual edit), never one
per event. Without a broker (the embedded default) Celery runs the task in
process, right after the commit, with the same code.
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
    cid = str(correlation_id) if correlation_id else None
    for part in _split(plan):
        payload = part.as_payload()
        transaction.on_commit(lambda payload=payload: _send(payload, cid))


def _send(payload: dict, correlation_id: str | None = None) -> None:
    from .tasks import refresh

    refresh.delay(payload, correlation_id)


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
