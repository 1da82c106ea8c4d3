"""Operators' decisions: split a wrong merge, merge two OneIDs by hand.

Both are written as constraints the resolver respects on every later run, then
applied by re-resolving the records involved, so what an operator sees after the
decision is exactly what the next batch run computes:

- a split writes a do-not-link constraint between the two sides (and removes the
  manual links that crossed them), plus manual links inside a side whose records
  are not linked to each other, because the operator said they are one person;
- a manual merge writes a manual link between the two OneIDs (processed before
  any rule) and removes the do-not-link constraints that separated them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.db.models import Q

from common.errors import ConflictError, ServiceError

from ..extract import load_rules
from ..models import DoNotLink, DoNotLinkSide, ManualLink, MergeEvent, MergeKind, OneId, OneIdStatus, SourceRecord
from ..resolution.incremental import resolve_records, wait_for_batch
from ..resolution.partition import partition
from ..resolution.region import collect_region, region_graph


def _lock_active(oneids: Sequence[int], fields: Sequence[str]) -> list[OneId]:
    """Lock the OneID rows (in id order, so two operators' decisions cannot deadlock) and check, after
    locking, that each is still active: a OneID retired by a concurrent merge is a lost race (409)."""
    wait_for_batch()
    locked = {
        o.subject_id: o
        for o in OneId.objects.select_for_update(of=("self",))
        .select_related("subject")
        .filter(subject_id__in=oneids)
        .order_by("subject_id")
    }
    for oneid, field in zip(oneids, fields, strict=True):
        found = locked.get(oneid)
        if found is None:
            raise ServiceError.single(field, f"No OneID {oneid}.", "not_found")
        if found.status != OneIdStatus.ACTIVE:
            raise ConflictError.single(
                field, f"OneID {oneid} is retired (merged into {found.merged_into_id}).", "retired"
            )
    return [locked[o] for o in oneids]


def _locked_records(oneid: int) -> list[int]:
    """The OneID's records, locked in id order: the record rows (a re-push of one waits) and their
    assignment rows (a resolution moving one of them writes only that row; the split waits for it
    and then no longer counts a record that moved away)."""
    return list(
        SourceRecord.objects.select_for_update()
        .filter(assignment__oneid=oneid)
        .order_by("id")
        .values_list("id", flat=True)
    )


def _actor(actor):
    return actor if actor is not None and actor.is_authenticated else None


def _keep_together(side: list[int], rules) -> list[tuple[int, int]]:
    """Manual links that make ``side`` one group when its own links do not."""
    region = collect_region(side, rules)
    graph, _ = region_graph(region, rules)
    inside = set(side)
    graph.record_order = {r: o for r, o in graph.record_order.items() if r in inside}
    graph.links = [
        type(link)(link.order, link.rule, link.value, tuple(r for r in link.records if r in inside))
        for link in graph.links
    ]
    graph.manual = [(a, b) for a, b in graph.manual if a in inside and b in inside]
    graph.sides = {}
    reps = sorted(set(partition(graph).group_of.values()), key=graph.record_order.__getitem__)
    return [(reps[0], other) for other in reps[1:]]


def _separating(a: list[int], b: list[int]) -> list[int]:
    """Do-not-link constraints with one side among records ``a`` and the other among ``b``."""
    in_a = set(a)
    seen: dict[int, tuple[set[str], set[str]]] = {}
    for constraint, record, side in DoNotLinkSide.objects.filter(record_id__in=a + b).values_list(
        "constraint_id", "record_id", "side"
    ):
        sides = seen.setdefault(constraint, (set(), set()))
        (sides[0] if record in in_a else sides[1]).add(side)
    return sorted(c for c, (x, y) in seen.items() if any(s != t for s in x for t in y))


def oneid_split(
    *, actor, oneid: int, records: Sequence[int], reason: str = "", correlation_id: uuid.UUID | None = None
) -> tuple[int, int]:
    """Move ``records`` out of ``oneid`` into a OneID of their own; returns (OneID of the rest, new OneID)."""
    correlation_id = correlation_id or uuid.uuid4()
    rules = load_rules()
    with transaction.atomic():
        _lock_active([oneid], ["oneid"])
        held = set(_locked_records(oneid))
        side_b = sorted(set(records))
        if not side_b or not all(isinstance(r, int) for r in side_b):
            raise ServiceError.single("records", "Give the ids of the records to split off.")
        foreign = [r for r in side_b if r not in held]
        if foreign:
            raise ServiceError.single("records", f"Records {foreign[:10]} do not belong to OneID {oneid}.")
        side_a = sorted(held - set(side_b))
        if not side_a:
            raise ServiceError.single("records", "A split must leave at least one record in the OneID.")
        ManualLink.objects.filter(
            Q(record_a_id__in=side_a, record_b_id__in=side_b) | Q(record_a_id__in=side_b, record_b_id__in=side_a)
        ).delete()
        constraint = DoNotLink.objects.create(reason=reason[:500], created_by=_actor(actor))
        DoNotLinkSide.objects.bulk_create(
            [DoNotLinkSide(constraint=constraint, record_id=r, side="a") for r in side_a]
            + [DoNotLinkSide(constraint=constraint, record_id=r, side="b") for r in side_b]
        )
        for side in (side_a, side_b):
            ManualLink.objects.bulk_create(
                [
                    ManualLink(record_a_id=a, record_b_id=b, created_by=_actor(actor))
                    for a, b in _keep_together(side, rules)
                ]
            )
        outcome = resolve_records(record_ids=side_a + side_b, actor=actor, correlation_id=correlation_id, rules=rules)
        kept, new = outcome.assignment[side_a[0]], outcome.assignment[side_b[0]]
        MergeEvent.objects.filter(id__in=outcome.splits).update(
            kind=MergeKind.MANUAL_SPLIT,
            rule="manual",
            evidence=[{"reason": reason, "records_a": side_a, "records_b": side_b, "do_not_link": constraint.id}],
        )
    return kept, new


def oneid_merge(*, actor, oneids: Sequence[int], reason: str = "", correlation_id: uuid.UUID | None = None) -> int:
    """Merge two OneIDs an operator knows are one person; returns the surviving OneID."""
    if len(oneids) != 2 or len(set(oneids)) != 2:
        raise ServiceError.single("oneids", "Give two different OneIDs.")
    correlation_id = correlation_id or uuid.uuid4()
    rules = load_rules()
    with transaction.atomic():
        first, second = _lock_active(oneids, ["oneids.0", "oneids.1"])
        if first.subject.subject_type_id != second.subject.subject_type_id:
            raise ServiceError.single("oneids", "OneIDs of different subject types cannot be merged.")
        records = {o: _locked_records(o) for o in sorted(oneids)}
        a, b = records[oneids[0]], records[oneids[1]]
        removed = _separating(a, b)
        DoNotLink.objects.filter(id__in=removed).delete()
        ManualLink.objects.create(record_a_id=a[0], record_b_id=b[0], created_by=_actor(actor))
        outcome = resolve_records(record_ids=a + b, actor=actor, correlation_id=correlation_id, rules=rules)
        survivor = outcome.assignment[a[0]]
        if outcome.assignment[b[0]] != survivor:
            raise ConflictError(
                "These OneIDs cannot be one: together they would exceed a per-OneID limit"
                " (e.g. two different unionids).",
                code="limit",
            )
        MergeEvent.objects.filter(id__in=outcome.merges).update(
            kind=MergeKind.MANUAL_MERGE,
            rule="manual",
            evidence=[{"reason": reason, "oneids": list(oneids), "removed_do_not_link": removed}],
        )
    return survivor
