"""The affected-set planner: which tags to recompute on which subjects, then everything downstream.

A ``Plan`` holds, per tag, the subjects to recompute (an event arrived, a
relationship changed) and the subjects whose value already changed (a manual
edit). ``run_plan`` visits the computed tags once, in dependency order: each tag
is recomputed on its pending subjects (one statement), and the subjects whose
value actually changed are carried to its dependents — the same subjects for a
rule of the same type, the far ends of the relationships a rule reads, or the
targets reached along a propagation's path. Since the graph is acyclic, one pass
reaches the fixed point: nothing downstream is left stale, nothing is written
twice, and only changed values are written.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from tags.models import Computation
from tags.rules.compiler import Selection
from tags.services.writer import Applied

from . import index as tag_index

# Set while the engine runs: its own writes' ``values_changed`` need no new task.
ENGINE_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("tagweave_engine_active", default=False)


@dataclass
class Plan:
    pending: dict[int, set[int]] = field(default_factory=dict)
    changes: dict[int, set[int]] = field(default_factory=dict)

    def recompute(self, tag_id: int, subject_ids: Iterable[int]) -> None:
        ids = {int(i) for i in subject_ids}
        if ids:
            self.pending.setdefault(int(tag_id), set()).update(ids)

    def changed(self, tag_id: int, subject_ids: Iterable[int]) -> None:
        ids = {int(i) for i in subject_ids}
        if ids:
            self.changes.setdefault(int(tag_id), set()).update(ids)

    def merge(self, other: Plan) -> None:
        for tag_id, ids in other.pending.items():
            self.recompute(tag_id, ids)
        for tag_id, ids in other.changes.items():
            self.changed(tag_id, ids)

    def __bool__(self) -> bool:
        return bool(self.pending or self.changes)

    def as_payload(self) -> dict:
        """JSON for a task message: ``{"recompute": {tag: [ids]}, "changed": {tag: [ids]}}``."""
        return {
            "recompute": {str(t): sorted(ids) for t, ids in self.pending.items()},
            "changed": {str(t): sorted(ids) for t, ids in self.changes.items()},
        }

    @classmethod
    def from_payload(cls, payload: dict) -> Plan:
        plan = cls()
        for tag_id, ids in (payload.get("recompute") or {}).items():
            plan.recompute(int(tag_id), ids)
        for tag_id, ids in (payload.get("changed") or {}).items():
            plan.changed(int(tag_id), ids)
        return plan

    def subject_count(self) -> int:
        return sum(len(v) for v in self.pending.values()) + sum(len(v) for v in self.changes.values())


@dataclass
class Outcome:
    rows_changed: int = 0
    steps: list[tuple[int, int, int]] = field(default_factory=list)  # (tag, subjects recomputed, changed)


def run_plan(plan: Plan, *, correlation_id: uuid.UUID | None = None, now: dt.datetime | None = None) -> Outcome:
    """Recompute the plan's tags and everything downstream of the changes, in dependency order."""
    index = tag_index.current()
    now = now or timezone.now()
    correlation_id = correlation_id or uuid.uuid4()
    pending: dict[int, set[int]] = {t: set(ids) for t, ids in plan.pending.items() if t in index.tags}
    deltas: dict[int, list] = {}
    for tag_id, ids in plan.changes.items():
        _carry(index, tag_id, ids, pending)
    outcome = Outcome()
    token = ENGINE_ACTIVE.set(True)
    try:
        with transaction.atomic():  # all or nothing: a worker killed half-way leaves nothing half-carried
            _run(index, pending, deltas, outcome, now, correlation_id)
    finally:
        ENGINE_ACTIVE.reset(token)
    return outcome


def _run(
    index,
    pending: dict[int, set[int]],
    deltas: dict[int, list],
    outcome: Outcome,
    now: dt.datetime,
    correlation_id: uuid.UUID,
) -> None:
    for tag_id in index.order:
        ids, changes = pending.pop(tag_id, set()), deltas.pop(tag_id, [])
        if not ids and not changes:
            continue
        applied = _recompute(index, tag_id, ids, changes, now, correlation_id)
        outcome.rows_changed += applied.count
        outcome.steps.append((tag_id, len(ids) + len(changes), applied.count))
        if applied.count:
            _carry(index, tag_id, applied.changed_ids, pending, deltas, applied.values)


def _with_values(index, tag_id: int) -> bool:
    """Do some dependents take this tag's changes as deltas (so the writer should return old and new)?"""
    from tags.propagation.state import uses_state

    return any(
        index.tags.get(d) is not None
        and index.tags[d].computation == Computation.PROPAGATED
        and uses_state(index.propagation(d))
        for d in index.dependents.get(tag_id, ())
    )


def _recompute(
    index, tag_id: int, ids: set[int], changes: list, now: dt.datetime, correlation_id: uuid.UUID
) -> Applied:
    tag = index.tags[tag_id]
    with_values = _with_values(index, tag_id)
    if tag.computation == Computation.PROPAGATED:
        from tags.propagation.recompute import write_changes

        prop = index.propagation(tag_id)
        if prop is None:
            return Applied()
        return write_changes(
            tag,
            prop,
            targets=ids,
            changes=changes,
            now=now,
            correlation_id=correlation_id,
            with_values=with_values,
            state_ready=tag_id in index.state_built,
        )
    from tags.services.recompute import write_selection

    rule = index.rule(tag_id)
    if rule is None or not ids:
        return Applied()
    return write_selection(
        tag, rule, Selection.of_ids(ids), now=now, correlation_id=correlation_id, with_values=with_values
    )


def _carry(
    index,
    tag_id: int,
    changed: Iterable[int],
    pending: dict[int, set[int]],
    deltas: dict[int, list] | None = None,
    values: list | None = None,
) -> None:
    """Add to ``pending`` the dependents' subjects that read ``tag_id`` on the ``changed`` subjects.

    With the changes' old and new ``values``, a state-maintained propagation takes them
    as deltas instead (``deltas``): its targets are found, and touched, by the delta.
    """
    changed = sorted({int(i) for i in changed})
    if not changed:
        return
    from tags.propagation.state import uses_state

    source = index.tags.get(tag_id)
    for dependent_id in index.dependents.get(tag_id, ()):
        dependent = index.tags.get(dependent_id)
        if dependent is None:
            continue
        if (
            values is not None
            and deltas is not None
            and dependent.computation == Computation.PROPAGATED
            and uses_state(index.propagation(dependent_id))
        ):
            deltas.setdefault(dependent_id, []).extend(values)
            continue
        if dependent.computation == Computation.PROPAGATED:
            from tags.propagation.walk import targets_of_source

            prop = index.propagation(dependent_id)
            affected = targets_of_source(prop, changed) if prop is not None else []
        else:
            affected = _rule_affected(index, dependent, source, tag_id, changed)
        if affected:
            pending.setdefault(dependent_id, set()).update(affected)


def _rule_affected(index, dependent, source, source_id: int, changed: list[int]) -> list[int]:
    """A rule reads a tag on its own subject (same ids) or on related subjects (the other ends)."""
    from subjects.models import Relationship

    rule = index.rule(dependent.pk)
    affected = set(changed) if source is None or dependent.subject_type_id == source.subject_type_id else set()
    if rule is None:
        return sorted(affected)
    for node in tag_index.rule_inputs(rule):
        if not isinstance(node, tag_index.n.Related):
            continue
        near, far = (
            ("from_subject_id", "to_subject_id") if node.direction == "out" else ("to_subject_id", "from_subject_id")
        )
        affected.update(
            Relationship.objects.filter(relationship_type_id=node.relationship_type_id, **{f"{far}__in": changed})
            .values_list(near, flat=True)
            .distinct()
        )
    return sorted(affected)


# ---- planning from inputs ----------------------------------------------------------------------


def plan_for_events(events: Iterable[tuple[int, str]], *, subject_types: dict[int, int] | None = None) -> Plan:
    """Events ``(subject_id, type)`` → the rule tags aggregating that event type, on those subjects.

    ``subject_types`` (``{subject: type}``, known to the caller) saves the lookup; event types
    that no tag reads cost nothing.
    """
    index = tag_index.current()
    plan = Plan()
    by_type: dict[str, set[int]] = {}
    for subject_id, event_type in events:
        if event_type in index.by_event_type:
            by_type.setdefault(event_type, set()).add(subject_id)
    if not by_type:
        return plan
    wanted = {i for ids in by_type.values() for i in ids}
    types = subject_types if subject_types is not None and wanted <= subject_types.keys() else _subject_types(wanted)
    for event_type, ids in by_type.items():
        for tag_id in index.by_event_type.get(event_type, ()):
            type_id = index.tags[tag_id].subject_type_id
            plan.recompute(tag_id, (i for i in ids if types.get(i) == type_id))
    return plan


def _subject_types(ids: set[int]) -> dict[int, int]:
    from subjects.models import Subject

    if not ids:
        return {}
    return dict(Subject.objects.filter(id__in=ids).values_list("id", "subject_type_id"))


def plan_for_relationships(changes: Iterable[tuple]) -> Plan:
    """Relationships ``(type, from, to[, own subject])`` added, changed or removed → affected tags and subjects."""
    from tags.propagation.walk import targets_of_relationships

    index = tag_index.current()
    plan = Plan()
    ends: dict[int, dict[str, set[int]]] = {}
    for type_id, from_id, to_id, *own in changes:
        entry = ends.setdefault(type_id, {"from": set(), "to": set(), "subject": set()})
        entry["from"].add(from_id)
        entry["to"].add(to_id)
        if own and own[0] is not None:
            entry["subject"].add(own[0])
    for type_id, entry in ends.items():
        for tag_id in index.by_relationship.get(type_id, ()):
            tag = index.tags[tag_id]
            if tag.computation == Computation.PROPAGATED:
                prop = index.propagation(tag_id)
                if prop is not None:
                    plan.recompute(tag_id, targets_of_relationships(prop, type_id, entry))
                continue
            rule = index.rule(tag_id)
            for node in tag_index.rule_inputs(rule) if rule else ():
                if isinstance(node, tag_index.n.Related) and node.relationship_type_id == type_id:
                    plan.recompute(tag_id, entry["from"] if node.direction == "out" else entry["to"])
    return plan


def plan_for_subjects(subjects: Iterable[tuple[int, int]]) -> Plan:
    """Subjects ``(id, subject type)`` whose attributes may have changed → tags reading attributes."""
    from tags.propagation.walk import targets_of_source

    index = tag_index.current()
    plan = Plan()
    by_type: dict[int, set[int]] = {}
    for subject_id, type_id in subjects:
        by_type.setdefault(type_id, set()).add(subject_id)
    for type_id, ids in by_type.items():
        for tag_id in index.by_attributes.get(type_id, ()):
            tag = index.tags[tag_id]
            if tag.computation == Computation.PROPAGATED:
                prop = index.propagation(tag_id)
                if prop is not None:
                    plan.recompute(tag_id, targets_of_source(prop, ids))
            elif tag.subject_type_id == type_id:
                plan.recompute(tag_id, ids)
    return plan
