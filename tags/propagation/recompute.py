"""Recomputing propagated tags: over given targets (incremental) or all of the type, chunked.

The compiled SELECT goes through tags-core's one guarded writer with source
"propagated": history, unchanged values writing nothing, the domain event and
``values_changed`` work exactly as for rule tags. Both paths run the same SQL, so
the full recompute equals the union of incremental ones.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from common.errors import ServiceError
from subjects.models import Subject
from tags.models import RecomputeJob, TagDefinition, ValueSource
from tags.rules.compiler import Selection
from tags.services.recompute import chunk_bounds, write_computed
from tags.services.writer import Applied

from .active import active_propagation
from .compiler import PropagationCompiler
from .document import Propagation
from .state import apply_delta, lock_tag, mark_built, rebuild, state_built, uses_state, values_select
from .walk import targets_of_source

DEFAULT_CHUNK = 50_000


def compiled_select(prop: Propagation, selection: Selection, now: dt.datetime) -> tuple[str, list]:
    return PropagationCompiler(prop, vendor=connection.vendor, now=now).select(selection)


def _required(tag: TagDefinition) -> Propagation:
    prop = active_propagation(tag)
    if prop is None:
        raise ServiceError.single("tag", f'Tag "{tag.code}" has no active propagation to compute.', "not_computed")
    return prop


def write_selection(
    tag: TagDefinition,
    prop: Propagation,
    selection: Selection,
    *,
    now: dt.datetime,
    correlation_id: uuid.UUID,
    with_values: bool = False,
) -> Applied:
    """One chunk from all its inputs: the compiled SELECT through the shared ``write_computed``.

    A state-maintained propagation rebuilds the chunk's state first and writes the
    values derived from it (the same formula as the deltas').
    """
    if uses_state(prop):
        with transaction.atomic(savepoint=False):
            lock_tag(tag.pk)
            rebuild(tag.pk, prop, selection, now)
            sql, params = values_select(tag.pk, prop, selection, now)
            return _write(tag, sql, params, selection, now, correlation_id, with_values, lock=False)
    sql, params = compiled_select(prop, selection, now)
    return _write(tag, sql, params, selection, now, correlation_id, with_values)


def write_changes(
    tag: TagDefinition,
    prop: Propagation,
    *,
    targets: Iterable[int],
    changes: list[tuple[int, object, object]],
    now: dt.datetime,
    correlation_id: uuid.UUID,
    with_values: bool = False,
    state_ready: bool | None = None,
) -> Applied:
    """The engine's step: ``targets`` recomputed from all inputs, source ``changes`` applied as deltas.

    ``changes`` are ``(source subject, old value, new value)`` from the writer of the
    source tag. Without usable state (SQLite, a non-decomposable aggregate, a version
    whose full recompute has not finished) their targets are recomputed instead.
    """
    targets = {int(i) for i in targets}
    if state_ready is None:  # (the planner knows it from its index)
        state_ready = tag.pk in state_built([tag.pk])
    if changes and not (uses_state(prop) and state_ready):
        targets.update(targets_of_source(prop, [sid for sid, _, _ in changes]))
        changes = []
    if not changes:
        if not targets:
            return Applied(values=[] if with_values else None)
        return write_selection(
            tag, prop, Selection.of_ids(targets), now=now, correlation_id=correlation_id, with_values=with_values
        )
    with transaction.atomic(savepoint=False):
        lock_tag(tag.pk)
        if targets:
            rebuild(tag.pk, prop, Selection.of_ids(targets), now)
        ids = targets.union(apply_delta(tag.pk, prop, changes, now, skip=targets))
        if not ids:
            return Applied(values=[] if with_values else None)
        selection = Selection.of_ids(ids)
        sql, params = values_select(tag.pk, prop, selection, now)
        return _write(tag, sql, params, selection, now, correlation_id, with_values, lock=False)


def _write(tag, sql, params, selection, now, correlation_id, with_values, *, lock: bool = True) -> Applied:
    return write_computed(
        tag,
        sql,
        params,
        selection=selection,
        source=ValueSource.PROPAGATED,
        action="tags.propagated",
        asynchronous_commit=False,
        now=now,
        correlation_id=correlation_id,
        with_values=with_values,
        lock=lock,
    )


ANALYZE_AFTER_ROWS = 10_000


def _refresh_statistics(written_since: int = 0) -> bool:
    """Before a full chunk: ANALYZE the tag values if many changed since the last ANALYZE (PostgreSQL).

    A full chunk joins the source tag's values with a hash join planned from the
    statistics; a tag that just gained (or lost) its values would be planned as "no
    rows", and a nested loop over all pairs turns quadratic. The check is one
    catalog read; the ANALYZE (a 30,000-row sample) runs only when it is needed.
    """
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables WHERE relname = 'tags_tagvalue'"
        )
        row = cursor.fetchone()
        stale = bool(row) and row[0] > max(ANALYZE_AFTER_ROWS, row[1] // 10)
        if stale or written_since >= ANALYZE_AFTER_ROWS:  # this job's tag grew: table-wide counts hide it
            cursor.execute("ANALYZE tags_tagvalue")
            return True
    return False


def recompute_ids(
    tag: TagDefinition,
    subject_ids: Iterable[int],
    *,
    correlation_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
) -> Applied:
    """Recompute ``tag`` on ``subject_ids`` only; the Applied names the subjects whose value changed."""
    ids = sorted({int(i) for i in subject_ids})
    prop = active_propagation(tag)
    if prop is None or not ids:
        return Applied()
    return write_selection(
        tag, prop, Selection.of_ids(ids), now=now or timezone.now(), correlation_id=correlation_id or uuid.uuid4()
    )


def recompute_subjects(
    tag: TagDefinition,
    subject_ids: Iterable[int],
    *,
    correlation_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
    cascade: bool = True,
) -> int:
    """The contract's entry point: recompute on ids, then (``cascade``) everything downstream; rows changed."""
    if not cascade:
        return recompute_ids(tag, subject_ids, correlation_id=correlation_id, now=now).count
    from tags.realtime.planner import Plan, run_plan

    plan = Plan()
    plan.recompute(tag.pk, subject_ids)
    return run_plan(plan, correlation_id=correlation_id, now=now).rows_changed


def recompute_all(
    tag: TagDefinition,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    job: RecomputeJob | None = None,
    now: dt.datetime | None = None,
    cascade: bool = False,
) -> int:
    """Recompute ``tag`` over every subject of its type, one transaction per chunk; rows changed.

    Progress is committed per chunk (the admin shows it) and a re-run after a crash
    converges: chunks already right write nothing. With ``cascade`` the changed
    subjects' downstream tags follow through the real-time planner.
    """
    prop = _required(tag)
    now = now or timezone.now()
    correlation_id = job.correlation_id if job else uuid.uuid4()
    bounds = chunk_bounds(tag.subject_type_id, chunk_size)
    if job is not None:
        RecomputeJob.objects.filter(pk=job.pk).update(
            chunks_total=len(bounds),
            chunks_done=0,
            subject_count=Subject.objects.filter(subject_type_id=tag.subject_type_id).count(),
        )
    changed_ids: list[int] = []
    since_analyze = 0
    for low, high in bounds:
        if _refresh_statistics(since_analyze):
            since_analyze = 0
        with transaction.atomic():
            applied = write_selection(tag, prop, Selection.id_range(low, high), now=now, correlation_id=correlation_id)
            changed_ids += applied.changed_ids
            since_analyze += applied.count
            if job is not None:
                RecomputeJob.objects.filter(pk=job.pk).update(
                    chunks_done=F("chunks_done") + 1, rows_changed=F("rows_changed") + applied.count
                )
    TagDefinition.objects.filter(pk=tag.pk).update(last_computed_at=now)
    if uses_state(prop):
        mark_built(tag, now)
        with connection.cursor() as cursor:  # a state just built is "empty" to the planner until analyzed
            cursor.execute("ANALYZE tags_propagationstate")
    changed = len(changed_ids)
    if cascade and changed_ids:
        from tags.realtime.planner import Plan, run_plan

        plan = Plan()
        plan.changed(tag.pk, changed_ids)
        changed += run_plan(plan, correlation_id=correlation_id, now=now).rows_changed
    return changed
