"""Recomputing rule tags: over given subjects (the incremental path) or all of a type, chunked.

Both paths compile the active rule to one SELECT over a chunk (ids or an id range)
and hand it to the one guarded write: a chunk is one statement on PostgreSQL and
writes only the values that changed. Tags that read the recomputed tag follow in
dependency order, over the subjects whose inputs changed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import domain_event_record
from audit.usage import record_inputs_use
from common.errors import ServiceError
from subjects.models import Subject
from tags.models import Computation, JobStatus, RecomputeJob, TagDefinition, TagStatus, ValueSource
from tags.rules import nodes as n
from tags.rules.compiler import Compiler, Selection
from tags.signals import send_values_changed_on_commit

from .compiled import active_rule
from .graph import dependents_in_order
from .writer import Applied, apply_computed

DEFAULT_CHUNK = 50_000

# Rule values are derived data: a crash can lose only the last moments of recomputes
# (values and their history together, never one without the other), which the next
# recompute restores. Not waiting for the WAL flush takes the commit off the hot path.
ASYNCHRONOUS_COMMIT = True


def _computable(tag: TagDefinition) -> n.Rule | None:
    if tag.computation != Computation.RULE or tag.status == TagStatus.ARCHIVED:
        return None
    return active_rule(tag)


def compiled_select(tag: TagDefinition, rule: n.Rule, selection: Selection, now: dt.datetime) -> tuple[str, list]:
    compiler = Compiler(rule, vendor=connection.vendor, subject_type_id=tag.subject_type_id, now=now)
    return compiler.select(selection)


def write_selection(
    tag: TagDefinition,
    rule: n.Rule,
    selection: Selection,
    *,
    now: dt.datetime,
    correlation_id: uuid.UUID,
    with_values: bool = False,
) -> Applied:
    """One chunk of a rule tag: its compiled SELECT through ``write_computed``.

    Public for the real-time planner, which needs the changed subjects (and, with
    ``with_values``, their old and new values) that ``recompute_subjects`` (a count) hides.
    """
    sql, params = compiled_select(tag, rule, selection, now)
    return write_computed(
        tag,
        sql,
        params,
        selection=selection,
        source=ValueSource.RULE,
        action="tags.recomputed",
        asynchronous_commit=ASYNCHRONOUS_COMMIT,
        now=now,
        correlation_id=correlation_id,
        with_values=with_values,
    )


def write_computed(
    tag: TagDefinition,
    sql: str,
    params: list,
    *,
    selection: Selection,
    source: str,
    action: str,
    asynchronous_commit: bool,
    now: dt.datetime,
    correlation_id: uuid.UUID,
    with_values: bool = False,
    lock: bool = True,
) -> Applied:
    """One chunk of a computed tag (rule or propagated): the guarded write, its audit event and its signal.

    The tag's writes are serialized (a transaction-level advisory lock on PostgreSQL):
    the old values this write reads, and reports with ``with_values``, are then the
    values the previous writer committed — what delta maintenance subtracts downstream.
    """
    from tags.propagation.state import lock_tag

    # No savepoint: nothing catches a failure half-way, and a plan's steps are many (a savepoint is
    # two round trips each).
    with transaction.atomic(savepoint=False):
        if lock:  # (callers that hold it already say so: one round trip less)
            lock_tag(tag.pk)
        if asynchronous_commit and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        record_inputs_use(tag.pk, source)  # tag usage: the tags this chunk reads
        applied = apply_computed(
            tag_id=tag.pk,
            computed_sql=sql,
            params=params,
            source=source,
            rule_version=tag.version,
            correlation_id=correlation_id,
            now=now,
            with_values=with_values,
        )
        if applied.count:
            domain_event_record(
                actor=None,
                action=action,
                object_type=f"tag:{tag.code}",
                row_count=applied.count,
                summary={
                    "tag_id": tag.pk,
                    "rule_version": tag.version,
                    "created": len(applied.created),
                    "updated": len(applied.updated),
                    "removed": len(applied.removed),
                    "selection": _describe(selection),
                },
                correlation_id=correlation_id,
            )
            send_values_changed_on_commit(tag, applied.changed_ids, correlation_id)
    return applied


def _describe(selection: Selection) -> dict:
    if selection.ids is not None:
        return {"ids": list(selection.ids[:1000]), "count": len(selection.ids)}
    return {"id_from": selection.low, "id_to": selection.high}


def recompute_subjects(
    tag: TagDefinition,
    subject_ids: Iterable[int],
    *,
    correlation_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
    cascade: bool = True,
) -> int:
    """Recompute ``tag`` for ``subject_ids`` (then its dependents); returns the rows changed."""
    if tag.computation == Computation.PROPAGATED:  # propagation hook
        from tags.propagation.recompute import recompute_subjects as recompute_propagated

        return recompute_propagated(tag, subject_ids, correlation_id=correlation_id, now=now, cascade=cascade)
    ids = sorted({int(i) for i in subject_ids})
    rule = _computable(tag)
    if rule is None or not ids:
        return 0
    now = now or timezone.now()
    correlation_id = correlation_id or uuid.uuid4()
    changed = write_selection(tag, rule, Selection.of_ids(ids), now=now, correlation_id=correlation_id).count
    if cascade:
        for dependent in _dependents(tag):
            if dependent.computation != Computation.RULE:
                continue  # propagated tags follow through the real-time engine (values_changed)
            affected = _affected(dependent, tag, ids)
            changed += recompute_subjects(dependent, affected, correlation_id=correlation_id, now=now, cascade=False)
    return changed


def _dependents(tag: TagDefinition) -> list[TagDefinition]:
    order = dependents_in_order(tag.pk)
    by_id = TagDefinition.objects.select_related("rule").in_bulk(order)
    return [by_id[i] for i in order if i in by_id]


def _affected(dependent: TagDefinition, source: TagDefinition, ids: list[int]) -> list[int]:
    """The dependent's subjects whose inputs may have changed when ``ids`` (of ``source``'s type) did.

    A dependent of the same subject type reads its own subject's tags: the same ids.
    One that reads the tag on related subjects is affected at the other end of
    those relationships (and a transitive dependent, conservatively, on both).
    """
    rule = active_rule(dependent) if dependent.rule_id else None
    affected = set(ids) if dependent.subject_type_id == source.subject_type_id else set()
    if rule is None:
        return sorted(affected)
    from subjects.models import Relationship

    for related in _related_nodes(rule):
        near, far = ("from_subject_id", "to_subject_id")
        if related.direction == "in":
            near, far = far, near
        affected.update(
            Relationship.objects.filter(relationship_type_id=related.relationship_type_id, **{f"{far}__in": ids})
            .values_list(near, flat=True)
            .distinct()
        )
    return sorted(affected)


def _related_nodes(rule: n.Rule) -> list[n.Related]:
    found: list[n.Related] = []

    def walk(node: object) -> None:
        if isinstance(node, n.Related):
            found.append(node)
        for value in getattr(node, "__dict__", {}).values():
            if isinstance(value, n.Node):
                walk(value)
            elif isinstance(value, tuple):
                for item in value:
                    walk(item)

    for case in rule.cases:
        walk(case.when)
    if rule.formula is not None:
        walk(rule.formula)
    return found


def chunk_bounds(subject_type_id: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[low, high)`` id ranges holding at most ``chunk_size`` subjects of the type each (keyset walk)."""
    qs = Subject.objects.filter(subject_type_id=subject_type_id).order_by("id")
    first = qs.values_list("id", flat=True).first()
    bounds: list[tuple[int, int]] = []
    low = first
    while low is not None:
        high = qs.filter(id__gte=low).values_list("id", flat=True)[chunk_size : chunk_size + 1].first()
        bounds.append((low, high if high is not None else 2**63 - 1))
        low = high
    return bounds


def recompute_all(
    tag: TagDefinition,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    job: RecomputeJob | None = None,
    now: dt.datetime | None = None,
    cascade: bool = True,
) -> int:
    """Recompute ``tag`` over every subject of its type, one transaction per chunk; returns rows changed.

    Progress is committed with each chunk, so the admin sees it while the job runs,
    and a re-run after a crash converges (chunks already right write nothing).
    """
    if tag.computation == Computation.PROPAGATED:  # propagation hook
        from tags.propagation.recompute import recompute_all as recompute_propagated

        return recompute_propagated(tag, chunk_size=chunk_size, job=job, now=now, cascade=cascade)
    rule = _computable(tag)
    if rule is None:
        raise ServiceError.single("tag", f'Tag "{tag.code}" has no active rule to compute.', "not_computed")
    now = now or timezone.now()
    correlation_id = job.correlation_id if job else uuid.uuid4()
    bounds = chunk_bounds(tag.subject_type_id, chunk_size)
    if job is not None:
        RecomputeJob.objects.filter(pk=job.pk).update(
            chunks_total=len(bounds),
            chunks_done=0,
            subject_count=Subject.objects.filter(subject_type_id=tag.subject_type_id).count(),
        )
    changed = 0
    for low, high in bounds:
        with transaction.atomic():
            applied = write_selection(tag, rule, Selection.id_range(low, high), now=now, correlation_id=correlation_id)
            changed += applied.count
            if job is not None:
                RecomputeJob.objects.filter(pk=job.pk).update(
                    chunks_done=F("chunks_done") + 1, rows_changed=F("rows_changed") + applied.count
                )
    TagDefinition.objects.filter(pk=tag.pk).update(last_computed_at=now)
    if cascade:
        for dependent in _dependents(tag):
            if _computable(dependent) is not None:
                changed += recompute_all(dependent, chunk_size=chunk_size, now=now, cascade=False)
    return changed


def start_recompute(tag: TagDefinition, *, actor) -> RecomputeJob:
    """Queue a full recompute of ``tag``; the task starts after the current transaction commits."""
    if tag.computation == Computation.PROPAGATED:  # propagation hook
        from tags.propagation.definitions import start_recompute as start_propagated

        return start_propagated(tag, actor=actor)
    if _computable(tag) is None:
        raise ServiceError.single("tag", f'Tag "{tag.code}" has no active rule to compute.', "not_computed")
    from tags.tasks import recompute_tag

    job = RecomputeJob.objects.create(
        tag=tag, status=JobStatus.QUEUED, requested_by=actor if actor and actor.is_authenticated else None
    )
    domain_event_record(
        actor=actor,
        action="tags.recompute_requested",
        object_type=f"tag:{tag.code}",
        summary={"tag_id": tag.pk, "job_id": job.pk},
        correlation_id=job.correlation_id,
    )
    transaction.on_commit(lambda: recompute_tag.delay(job.pk))
    return job
