"""Turn a partition of records into OneID subjects, assignments and merge history.

Each group keeps the existing OneID that holds most of its records (ties: the
lowest id), each OneID going to one group at most; groups left without one get a
new subject. A OneID left without records is retired (``merged_into`` the OneID
that took most of them), never deleted. Subjects are written with
``subject_bulk_upsert`` (source ``oneid``), whose guarded write leaves unchanged
golden records untouched.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from django.db import connection

from audit.services import domain_event_record
from subjects.models import Subject, SubjectType
from subjects.services import subject_bulk_upsert

from .. import signals
from ..extract import Rules
from ..golden import RecordView, golden_record
from ..models import MergeEvent, MergeKind, OneId, OneIdStatus, RecordAssignment, SourceRecord
from ..relationships import follow_records
from ..scoping import sync_oneid_scopes
from .partition import Partition

ONEID_SOURCE = "oneid"


@dataclass
class Outcome:
    """What one resolution changed."""

    assignment: dict[int, int] = field(default_factory=dict)  # record -> OneID subject id
    created: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)
    moved: int = 0
    merges: list[int] = field(default_factory=list)  # MergeEvent ids
    splits: list[int] = field(default_factory=list)


def choose_oneids(groups: Mapping[int, list[int]], current: Mapping[int, int | None]) -> dict[int, int | None]:
    """Group representative -> the existing OneID it keeps (or None for a new one)."""
    pairs = []
    for rep, records in groups.items():
        for oneid, n in Counter(current[r] for r in records if current.get(r) is not None).items():
            pairs.append((-n, oneid, rep))
    pairs.sort()
    chosen: dict[int, int | None] = dict.fromkeys(groups)
    taken: set[int] = set()
    for _, oneid, rep in pairs:
        if chosen[rep] is None and oneid not in taken:
            chosen[rep] = oneid
            taken.add(oneid)
    return chosen


def _record_views(record_ids: list[int]) -> dict[int, tuple[RecordView, int]]:
    """Records as golden-record inputs: one statement, JSON decoded by orjson."""
    views: dict[int, tuple[RecordView, int]] = {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT r.id, s.trust_rank, extract(epoch FROM r.created_at)::float8,"
                " extract(epoch FROM r.updated_at)::float8, r.raw::text, s.subject_type_id"
                " FROM identity_sourcerecord r JOIN identity_sourcesystem s ON s.id = r.source_id"
                " WHERE r.id = ANY(string_to_array(%s, ',')::bigint[])",
                [",".join(map(str, record_ids))],
            )
            for id_, trust, created, updated, raw, type_id in cursor.fetchall():
                views[id_] = (RecordView(id_, trust, created, updated, orjson.loads(raw)), type_id)
        return views
    rows = SourceRecord.objects.filter(id__in=record_ids).values_list(
        "id", "source__trust_rank", "created_at", "updated_at", "raw", "source__subject_type_id"
    )
    for id_, trust, created, updated, raw, type_id in rows:
        views[id_] = (RecordView(id_, trust, created.timestamp(), updated.timestamp(), raw), type_id)
    return views


def golden_items(
    groups: Mapping[object, list[int]],
    ext_ids: Mapping[object, str],
    rules: Rules,
    views: Mapping[int, tuple[RecordView, int]] | None = None,
) -> list[dict]:
    """Subject upsert items carrying the golden record of each group (keyed like ``ext_ids``);
    ``views``: the records' golden inputs when the caller already read them."""
    wanted = [r for records in groups.values() for r in records]
    if views is None or any(r not in views for r in wanted):
        views = _record_views(wanted)
    items = []
    for group, records in groups.items():
        type_id = views[records[0]][1]
        if type_id not in rules.subject_types:
            subject_type = SubjectType.objects.get(id=type_id)
            rules.subject_types[type_id] = (subject_type.code, subject_type.attribute_schema)
        code, schema = rules.subject_types[type_id]
        attributes, name = golden_record([views[r][0] for r in records], schema, rules.strategies)
        items.append(
            {
                "type": code,
                "source": ONEID_SOURCE,
                "external_id": ext_ids[group],
                "display_name": name,
                "attributes": attributes,
            }
        )
    return items


def apply_partition(
    *,
    partition: Partition,
    current: Mapping[int, int | None],
    oneids: Iterable[int],
    actor,
    correlation_id: uuid.UUID,
    rules: Rules,
    changed_records: Iterable[int] = (),
    views: Mapping[int, tuple[RecordView, int]] | None = None,
) -> Outcome:
    groups: dict[int, list[int]] = {}
    for record, rep in partition.group_of.items():
        groups.setdefault(rep, []).append(record)
    chosen = choose_oneids(groups, current)
    changed = set(changed_records)
    needs_golden = [
        rep
        for rep, records in groups.items()
        if chosen[rep] is None
        or any(current.get(r) != chosen[rep] for r in records)
        or any(r in changed for r in records)
        or len(records) != _count_of(chosen[rep], current)
    ]
    ext = dict(Subject.objects.filter(id__in=[v for v in chosen.values() if v]).values_list("id", "external_id"))
    ext_ids = {rep: ext[chosen[rep]] if chosen[rep] else uuid.uuid4().hex for rep in needs_golden}
    outcome = Outcome()
    if needs_golden:
        items = golden_items({rep: groups[rep] for rep in needs_golden}, ext_ids, rules, views)
        result = subject_bulk_upsert(
            actor=None, items=items, correlation_id=correlation_id, action="identity.oneids_upserted"
        )  # OneID subjects are derived: written as the system (pushes are scope-checked), actor on identity.resolved
        for rep, item_result in zip(needs_golden, result.results, strict=True):
            if chosen[rep] is None:
                chosen[rep] = item_result.id
                outcome.created.append(item_result.id)
        _activate(outcome.created)
    for rep, records in groups.items():
        for r in records:
            outcome.assignment[r] = chosen[rep]
    moving = sorted(r for r, oneid in outcome.assignment.items() if current.get(r) != oneid)
    if moving:  # one upsert, in record order (the order of every writer)
        RecordAssignment.objects.bulk_create(
            [RecordAssignment(record_id=r, oneid_id=outcome.assignment[r]) for r in moving],
            update_conflicts=True,
            unique_fields=["record"],
            update_fields=["oneid"],
        )
        outcome.moved = len(moving)
    kept = set(chosen.values())
    lost = sorted(set(oneids) - kept)
    for oneid in lost:
        heirs = Counter(outcome.assignment[r] for r, o in current.items() if o == oneid)
        heir = min(heirs, key=lambda h: (-heirs[h], h)) if heirs else None
        OneId.objects.filter(subject_id=oneid).update(status=OneIdStatus.RETIRED, merged_into=heir)
        outcome.retired.append(oneid)
    moves = {r: (current.get(r), new) for r, new in outcome.assignment.items() if current.get(r) != new}
    heirs = dict(OneId.objects.filter(subject_id__in=outcome.retired).values_list("subject_id", "merged_into_id"))
    follow_records(moves=moves, heirs=heirs, actor=actor, correlation_id=correlation_id)
    _history(partition, groups, chosen, current, actor, correlation_id, outcome)
    if outcome.moved or outcome.created or outcome.merges or outcome.splits:
        domain_event_record(
            actor=actor,
            action="identity.resolved",
            object_type="identity.sourcerecord",
            row_count=outcome.moved,
            summary={
                "moved": outcome.moved,
                "created": outcome.created[:1000],
                "retired": outcome.retired[:1000],
                "merge_events": outcome.merges + outcome.splits,
            },
            correlation_id=correlation_id,
        )
    sync_oneid_scopes(set(oneids) | set(outcome.assignment.values()))
    return outcome


def _activate(subject_ids: list[int]) -> None:
    """Active OneID state rows for new subjects (one statement on PostgreSQL)."""
    if not subject_ids:
        return
    if connection.vendor != "postgresql":
        OneId.objects.bulk_create([OneId(subject_id=s) for s in subject_ids], ignore_conflicts=True)
        OneId.objects.filter(subject_id__in=subject_ids).update(status=OneIdStatus.ACTIVE, merged_into=None)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO identity_oneid (subject_id, status, merged_into_id, created_at, updated_at)"
            " SELECT x, 'active', NULL, now(), now() FROM unnest(%s::bigint[]) AS x ORDER BY x"
            " ON CONFLICT (subject_id) DO UPDATE SET status = 'active', merged_into_id = NULL",
            [sorted(subject_ids)],
        )


def _count_of(oneid: int | None, current: Mapping[int, int | None]) -> int:
    return sum(1 for o in current.values() if o == oneid) if oneid is not None else -1


def _history(partition, groups, chosen, current, actor, correlation_id, outcome: Outcome) -> None:
    """One merge event per group that joined several OneIDs; one split event per OneID torn apart."""
    held = Counter(o for o in current.values() if o is not None)
    for rep, records in groups.items():
        sources = {current.get(r) for r in records} - {None}
        if len(sources) < 2:
            continue
        crossing = [
            {"rule": u.rule, "value": u.value, "records": list(u.records)}
            for u in partition.unions.get(rep, [])
            if current.get(u.records[0]) != current.get(u.records[1])
        ]
        event = MergeEvent.objects.create(
            kind=MergeKind.MERGE,
            oneid_id=chosen[rep],
            others=sorted(sources - {chosen[rep]}),
            rule=crossing[0]["rule"] if crossing else "",
            evidence=crossing,
            records=sorted(records),
            actor=actor if actor is not None and actor.is_authenticated else None,
            correlation_id=correlation_id,
        )
        outcome.merges.append(event.id)
        origins = {o: sorted(r for r in records if current.get(r) == o) for o in sorted(sources)}
        signals.oneid_merged.send(
            sender=MergeEvent,
            survivor=chosen[rep],
            merged=sorted(sources - {chosen[rep]}),
            record_ids=sorted(records),
            event=event,
            origins=origins,
            absorbed=[o for o in sorted(sources - {chosen[rep]}) if len(origins[o]) == held[o]],
        )
    by_old: dict[int, set[int]] = {}
    for record, old in current.items():
        if old is not None:
            by_old.setdefault(old, set()).add(outcome.assignment[record])
    for old, targets in by_old.items():
        if len(targets) < 2:
            continue
        keeper = old if old in targets else min(targets)
        into = {t: sorted(r for r, o in current.items() if o == old and outcome.assignment[r] == t) for t in targets}
        event = MergeEvent.objects.create(
            kind=MergeKind.SPLIT,
            oneid_id=keeper,
            others=sorted(targets - {keeper}),
            rule="rules",
            evidence=[{"rule": u.rule, "value": u.value, "records": list(u.records)} for u in partition.refused][:50],
            records=sorted(r for r, o in current.items() if o == old),
            actor=actor if actor is not None and actor.is_authenticated else None,
            correlation_id=correlation_id,
        )
        outcome.splits.append(event.id)
        signals.oneid_split.send(sender=MergeEvent, source=old, parts=into, event=event)
