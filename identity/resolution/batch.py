"""Batch resolution of every record: links out of PostgreSQL, scipy components, one write back.

1. The linking identifiers ``(record, key, rule)`` and the records ``(id, OneID)``
   are read with binary ``COPY`` straight into numpy arrays.
2. Values over their shared limit are dropped (``np.unique`` counts); records and
   values become the nodes of a sparse bipartite graph (manual links add
   record–record edges) and ``scipy.sparse.csgraph.connected_components`` labels it.
3. A component where a constraint could refuse a union (both sides of a
   do-not-link, or more distinct values of a limited type than allowed) is
   re-partitioned by the exact rule of :mod:`.partition`, the same function the
   incremental path uses; every other component *is* its group. So batch and
   incremental give the same partition.
4. Groups are matched to existing OneIDs (most records kept), new ones get a
   subject with its golden record through ``subject_bulk_upsert`` (set-based),
   and the assignments go back by ``COPY``: new ones straight into the narrow
   ``identity_recordassignment``, changed ones through a staging table and one
   ``UPDATE``. Merge and split events record what changed.

The run holds a ``SHARE ROW EXCLUSIVE`` lock on the source records (concurrent
ingest waits; readers do not). SQLite (tests) reads the same arrays through the ORM.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import orjson
from django.db import connection, transaction
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from audit.services import domain_event_record
from subjects.models import Subject
from subjects.services import subject_bulk_upsert

from .. import signals
from ..extract import Rules, load_rules
from ..models import (
    DoNotLinkSide,
    Identifier,
    ManualLink,
    MergeEvent,
    MergeKind,
    OneId,
    OneIdStatus,
    RecordAssignment,
    SourceRecord,
)
from ..relationships import follow_records
from ..scoping import sync_oneid_scopes
from .apply import choose_oneids, golden_items
from .copy import copy_in
from .golden_sql import write_golden
from .partition import partition
from .region import Region, region_graph, rule_label, value_label

SUBJECT_CHUNK = 20_000


@dataclass
class BatchResult:
    records: int = 0
    identifiers: int = 0
    groups: int = 0
    moved: int = 0
    created: int = 0
    retired: int = 0
    merges: int = 0
    splits: int = 0
    conflicted_components: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    correlation_id: uuid.UUID | None = None


ELEMENT = np.dtype([("l", ">i4"), ("v", ">i8")])


def _copy_arrays(sql: str) -> list[np.ndarray]:
    """The ``bigint[]`` columns of the one row ``sql`` returns (``array_agg`` of NOT NULL ids), as
    int64 arrays; a NULL column (the aggregate of no rows) is empty.

    A binary COPY streams one message per row, and reading a million of them costs the client
    about 0.7 s; the same ids aggregated into one array arrive as one message (about 0.1 s).
    Layout: per column a 4-byte length, then (for a one-dimensional array) a 20-byte header and
    an (length, value) pair of 4 + 8 bytes per element."""
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:
        buffer = b"".join(bytes(chunk) for chunk in copy)
    columns = int.from_bytes(buffer[19:21], "big")
    position, found = 21, []
    for _ in range(columns):
        length = int.from_bytes(buffer[position : position + 4], "big", signed=True)
        position += 4
        if length < 0:
            found.append(np.empty(0, np.int64))
            continue
        count = (length - 20) // ELEMENT.itemsize if length >= 20 else 0
        elements = np.frombuffer(buffer, dtype=ELEMENT, offset=position + 20, count=count)
        found.append(elements["v"].astype(np.int64))
        position += length
    return found


ARRAY_CHUNK = 5_000_000  # ids per aggregated read: arrays stay far below PostgreSQL's 1 GB value limit


def _read_columns(table: str, id_column: str, expressions: list[str], where: str = "true") -> list[np.ndarray]:
    """Every row's ``expressions`` (NOT NULL bigints) as aligned int64 arrays, ordered by ``id_column``
    when there is one expression; ``array_agg`` over ranges of ``ARRAY_CHUNK`` ids.

    The aggregates of one statement consume the same rows in the same order, so the arrays align.
    After each range the next one starts at the next stored id (an index probe), so a gap in the
    ids costs no empty reads."""
    order = f" ORDER BY {id_column}" if len(expressions) == 1 else ""
    aggregates = ", ".join(f"array_agg({e}{order})" for e in expressions)
    parts: list[list[np.ndarray]] = [[np.empty(0, np.int64)] for _ in expressions]
    start = _next_id(table, id_column, None)
    while start is not None:
        end = start + ARRAY_CHUNK
        sql = f"SELECT {aggregates} FROM {table} WHERE {where} AND {id_column} >= {start} AND {id_column} < {end}"
        for part, column in zip(parts, _copy_arrays(sql), strict=True):
            part.append(column)
        start = _next_id(table, id_column, end)
    return [np.concatenate(part) for part in parts]


def _next_id(table: str, id_column: str, at_least: int | None) -> int | None:
    with connection.cursor() as cursor:
        if at_least is None:
            cursor.execute(f"SELECT min({id_column}) FROM {table}")
        else:
            cursor.execute(f"SELECT min({id_column}) FROM {table} WHERE {id_column} >= %s", [at_least])
        found = cursor.fetchone()[0]
    return None if found is None else int(found)


def read_links() -> np.ndarray:
    """``(record, key, rule ref)``: rule ref is the identifier type id, or minus the composite key id."""
    if connection.vendor == "postgresql":
        columns = _read_columns(
            "identity_identifier",
            "record_id",
            ["record_id", "key", "coalesce(identifier_type_id, -composite_key_id)::bigint"],
            where="status = 'link'",
        )
        return np.stack(columns, axis=1)
    rows = Identifier.objects.filter(status="link").values_list(
        "record_id", "key", "identifier_type_id", "composite_key_id"
    )
    return np.array([(r, k, t if t is not None else -c) for r, k, t, c in rows], dtype=np.int64).reshape(-1, 3)


def read_records() -> np.ndarray:
    """``(record id, current OneID or 0)`` ordered by id.

    Two reads joined in numpy (the records' ids, then the assignments), not one SQL join: each
    is one scan aggregated into arrays, and the join of sorted ids is one ``searchsorted``."""
    if connection.vendor == "postgresql":
        (ids,) = _read_columns("identity_sourcerecord", "id", ["id"])
        assigned = np.stack(_read_columns("identity_recordassignment", "record_id", ["record_id", "oneid_id"]), axis=1)
    else:
        ids = np.array(SourceRecord.objects.order_by("id").values_list("id", flat=True), dtype=np.int64)
        assigned = np.array(RecordAssignment.objects.values_list("record_id", "oneid_id"), dtype=np.int64).reshape(
            -1, 2
        )
    current = np.zeros(len(ids), dtype=np.int64)
    if len(assigned) and len(ids):
        position = np.searchsorted(ids, assigned[:, 0])
        found = position < len(ids)
        found[found] = ids[position[found]] == assigned[found, 0]  # a row of no record (no constraint) counts for none
        current[position[found]] = assigned[found, 1]
    return np.stack([ids, current], axis=1)


def shared_limit_mask(links: np.ndarray, rules: Rules) -> tuple[np.ndarray, dict[int, int]]:
    """Which link rows are under their value's shared limit, and each key's holder count."""
    if not len(links):
        return np.zeros(0, bool), {}
    keys, inverse, counts = np.unique(links[:, 1], return_inverse=True, return_counts=True)
    refs = links[:, 2]
    limit = np.full(len(links), np.iinfo(np.int64).max, dtype=np.int64)
    for ref in np.unique(refs):
        value = rules.shared_limit(int(ref), None) if ref > 0 else rules.shared_limit(None, int(-ref))
        if value is not None:
            limit[refs == ref] = value
    holders = counts[inverse]
    return holders <= limit, {"keys": keys, "counts": counts}


def components(records: np.ndarray, links: np.ndarray, manual: list[tuple[int, int]]) -> np.ndarray:
    """Component label of every record (aligned with ``records``)."""
    n = len(records)
    if not len(links) and not manual:
        return np.arange(n)
    key_ids, key_index = np.unique(links[:, 1], return_inverse=True) if len(links) else (np.zeros(0), np.zeros(0))
    rows = np.searchsorted(records, links[:, 0]) if len(links) else np.zeros(0, np.int64)
    cols = n + key_index
    if manual:
        pairs = np.array(manual, dtype=np.int64)
        rows = np.concatenate([rows, np.searchsorted(records, pairs[:, 0])])
        cols = np.concatenate([cols, np.searchsorted(records, pairs[:, 1])])
    size = n + len(key_ids)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels[:n]


def _conflicted(records: np.ndarray, labels: np.ndarray, links: np.ndarray, rules: Rules) -> set[int]:
    """Labels of components where a do-not-link or a per-OneID limit could refuse a union."""
    bad: set[int] = set()
    sides: dict[int, dict[str, set[int]]] = {}
    for record, constraint, side in DoNotLinkSide.objects.values_list("record_id", "constraint_id", "side"):
        position = np.searchsorted(records, record)
        if position < len(records) and records[position] == record:
            sides.setdefault(constraint, {}).setdefault(side, set()).add(int(labels[position]))
    for by_side in sides.values():
        bad |= by_side.get("a", set()) & by_side.get("b", set())
    limited = {t.id: t.max_per_oneid for t in rules.types if t.max_per_oneid is not None}
    for type_id, limit in limited.items():
        rows = links[links[:, 2] == type_id]
        if not len(rows):
            continue
        owner = labels[np.searchsorted(records, rows[:, 0])]
        pairs = np.unique(np.stack([owner, rows[:, 1]], axis=1), axis=0)
        owners, counts = np.unique(pairs[:, 0], return_counts=True)
        bad |= {int(x) for x in owners[counts > limit]}
    return bad


def resolve_all(
    *,
    actor=None,
    rules: Rules | None = None,
    refresh_golden: bool = False,
    correlation_id: uuid.UUID | None = None,
) -> BatchResult:
    """Re-partition every record; writes only what changed (a re-run writes nothing)."""
    import time

    rules = rules or load_rules()
    result = BatchResult(correlation_id=correlation_id or uuid.uuid4())
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.timings[name] = round(now - clock, 3)
        clock = now

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE identity_sourcerecord IN SHARE ROW EXCLUSIVE MODE")
        links = read_links()
        table = read_records()
        lap("read")
        records, current = table[:, 0], table[:, 1]
        result.records, result.identifiers = len(records), len(links)
        mask, stats = shared_limit_mask(links, rules)
        linking = links[mask] if len(links) else links
        manual = list(ManualLink.objects.values_list("record_a_id", "record_b_id"))
        labels = components(records, linking, manual)
        lap("components")
        labels = _exact_where_constrained(records, current, labels, linking, stats, rules, result)
        lap("constraints")
        _write(records, current, labels, links, actor, rules, result, refresh_golden, lap)
    return result


def _exact_where_constrained(records, current, labels, linking, stats, rules, result) -> np.ndarray:
    bad = _conflicted(records, labels, linking, rules)
    result.conflicted_components = len(bad)
    if not bad:
        return labels
    labels = labels.copy()
    in_bad = np.isin(labels, list(bad))
    region = Region(records={int(r) for r in records[in_bad]})
    region.holders = dict(zip(stats["keys"].tolist(), stats["counts"].tolist(), strict=True))
    graph, _ = region_graph(region, rules)
    parts = partition(graph).group_of
    next_label = int(labels.max()) + 1
    fresh: dict[int, int] = {}
    for position in np.flatnonzero(in_bad):
        rep = parts[int(records[position])]
        if rep not in fresh:
            fresh[rep] = next_label
            next_label += 1
        labels[position] = fresh[rep]
    return labels


def _unique_pairs(a: np.ndarray, b: np.ndarray, counts: bool = False):
    """Distinct ``(a, b)`` rows (sorted), optionally with their counts: one int64 ``np.unique``
    instead of the much slower row-wise ``axis=0`` one (both are non-negative ids)."""
    width = int(b.max()) + 1 if len(b) else 1
    combined = a.astype(np.int64) * width + b
    found = np.unique(combined, return_counts=counts)
    keys, n = found if counts else (found, None)
    pairs = np.stack([keys // width, keys % width], axis=1)
    return (pairs, n) if counts else pairs


def _choose(labels: np.ndarray, current: np.ndarray) -> dict[int, int]:
    """Label -> existing OneID it keeps (the one holding most of its records, each OneID once)."""
    held = current > 0
    if not held.any():
        return {}
    pairs, counts = _unique_pairs(labels[held], current[held], counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs, counts = pairs[order], counts[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    best = pairs[first]
    oneids, taken = np.unique(best[:, 1], return_counts=True)
    contested = set(oneids[taken > 1].tolist())
    chosen = {int(label): int(oneid) for label, oneid in best if int(oneid) not in contested}
    if contested:
        involved = {int(label) for label, oneid in best if int(oneid) in contested}
        groups = {label: [] for label in involved}
        cur: dict[int, int | None] = {}
        for i in np.flatnonzero(np.isin(labels, list(involved))):
            groups[int(labels[i])].append(i)
            cur[i] = int(current[i]) or None
        taken_ids = set(chosen.values())
        for label, oneid in choose_oneids(
            groups, {i: (o if o not in taken_ids else None) for i, o in cur.items()}
        ).items():
            if oneid is not None:
                chosen[label] = oneid
    return chosen


def _write(records, current, labels, links, actor, rules, result: BatchResult, refresh_golden, lap) -> None:
    chosen = _choose(labels, current)
    unique_labels = np.unique(labels)
    result.groups = len(unique_labels)
    target = np.array([chosen.get(int(label), 0) for label in unique_labels], dtype=np.int64)
    new_oneid = target[np.searchsorted(unique_labels, labels)]
    moved_mask = new_oneid != current
    changed_labels = set(labels[moved_mask].tolist()) | {int(x) for x in unique_labels[target == 0]}
    if refresh_golden:
        changed_labels = set(unique_labels.tolist())
    lap("match")
    created = _golden(records, labels, changed_labels, chosen, actor, rules, result)
    lap("golden")
    if created:
        for label, oneid in created.items():
            chosen[label] = oneid
        target = np.array([chosen.get(int(label), 0) for label in unique_labels], dtype=np.int64)
        new_oneid = target[np.searchsorted(unique_labels, labels)]
        moved_mask = new_oneid != current
    result.moved = int(moved_mask.sum())
    _write_assignment(records[moved_mask], new_oneid[moved_mask], current[moved_mask])
    if connection.vendor == "postgresql" and result.moved > max(10_000, len(records) // 10):
        with connection.cursor() as cursor:  # keep the planner's picture of the assignments true
            cursor.execute("ANALYZE identity_recordassignment")
    lap("assignment")
    _history(records, current, labels, new_oneid, links, actor, rules, result)
    _follow(records, current, new_oneid, moved_mask, actor, result)
    sync_oneid_scopes()  # every OneID: a record's brand may have changed in an unresolved load
    if result.moved or result.created or result.merges or result.splits:
        domain_event_record(
            actor=actor,
            action="identity.batch_resolved",
            object_type="identity.sourcerecord",
            row_count=result.moved,
            summary={
                "records": result.records,
                "groups": result.groups,
                "moved": result.moved,
                "created": result.created,
                "retired": result.retired,
                "merges": result.merges,
                "splits": result.splits,
            },
            correlation_id=result.correlation_id,
        )
    lap("history")


def _golden(records, labels, changed_labels, chosen, actor, rules, result) -> dict[int, int]:
    """Upsert the OneID subjects of changed groups in chunks; returns label -> new subject id."""
    if not changed_labels:
        return {}
    if connection.vendor == "postgresql":
        created = write_golden(
            labels=labels,
            records=records,
            changed=np.array(sorted(changed_labels), dtype=np.int64),
            chosen=chosen,
            rules=rules,
            actor=actor,
            correlation_id=result.correlation_id,
        )
        result.created = len(created)
        return created
    changed = np.isin(labels, list(changed_labels))
    by_label: dict[int, list[int]] = {}
    for label, record in zip(labels[changed].tolist(), records[changed].tolist(), strict=True):
        by_label.setdefault(label, []).append(record)
    existing = dict(
        Subject.objects.filter(id__in=[chosen[x] for x in by_label if x in chosen]).values_list("id", "external_id")
    )
    created: dict[int, int] = {}
    order = sorted(by_label)
    for start in range(0, len(order), SUBJECT_CHUNK):
        part = order[start : start + SUBJECT_CHUNK]
        ext = {x: existing[chosen[x]] if x in chosen else uuid.uuid4().hex for x in part}
        items = golden_items({x: by_label[x] for x in part}, ext, rules)
        upserted = subject_bulk_upsert(  # derived subjects: written as the system, as the incremental path
            actor=None, items=items, correlation_id=result.correlation_id, action="identity.oneids_upserted"
        )
        for label, item in zip(part, upserted.results, strict=True):
            if label not in chosen:
                created[label] = item.id
    if created:
        _insert_oneids(sorted(created.values()))
    result.created = len(created)
    return created


def _insert_oneids(ids: list[int]) -> None:
    """OneID state rows for new subjects in one statement (no model instances)."""
    if connection.vendor != "postgresql":
        OneId.objects.bulk_create([OneId(subject_id=s) for s in ids], batch_size=10_000)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO identity_oneid (subject_id, status, created_at, updated_at)"
            " SELECT x::bigint, 'active', now(), now() FROM unnest(string_to_array(%s, ',')) AS x",
            [",".join(map(str, ids))],
        )


def _write_assignment(ids: np.ndarray, oneids: np.ndarray, current: np.ndarray) -> None:
    """Assign ``ids`` to ``oneids``: records without a OneID (``current`` 0) get a row, copied
    straight into the table; reassigned records' rows are updated from a staging copy.

    Under the run's lock no other writer touches assignments, so "no row" is what ``current``
    says (the first run: a million rows by one ``COPY``, no conflict handling)."""
    if not len(ids):
        return
    new = current == 0
    if connection.vendor != "postgresql":
        RecordAssignment.objects.bulk_create(
            [
                RecordAssignment(record_id=r, oneid_id=o)
                for r, o in zip(ids[new].tolist(), oneids[new].tolist(), strict=True)
            ],
            batch_size=10_000,
        )
        for oneid in np.unique(oneids[~new]):
            RecordAssignment.objects.filter(record_id__in=ids[~new][oneids[~new] == oneid].tolist()).update(
                oneid=int(oneid)
            )
        return
    with connection.cursor() as cursor:
        copy_in(cursor, "identity_recordassignment", ids[new], oneids[new], columns="record_id, oneid_id")
        if new.all():
            return
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS tw_stage_identity_assignment (id bigint, oneid bigint)")
        cursor.execute("TRUNCATE tw_stage_identity_assignment")
        copy_in(cursor, "tw_stage_identity_assignment", ids[~new], oneids[~new])
        cursor.execute(
            "UPDATE identity_recordassignment s SET oneid_id = a.oneid FROM tw_stage_identity_assignment a"
            " WHERE s.record_id = a.id AND s.oneid_id <> a.oneid"
        )


def _history(records, current, labels, new_oneid, links, actor, rules, result: BatchResult) -> None:
    """Merge events for groups that joined OneIDs, split events for OneIDs torn apart, retirements."""
    held = current > 0
    if not held.any():
        return
    pairs = _unique_pairs(new_oneid[held], current[held])
    targets, sources_per_target = np.unique(pairs[:, 0], return_counts=True)
    olds, targets_per_old = np.unique(pairs[:, 1], return_counts=True)
    alive = set(new_oneid.tolist())
    lost = [int(o) for o in olds if int(o) not in alive]
    actor_id = actor if actor is not None and actor.is_authenticated else None
    events: list[tuple[MergeEvent, dict]] = []
    whole = set(olds[targets_per_old == 1].tolist())  # OneIDs whose records all went to one group
    for target in targets[sources_per_target > 1].tolist():
        members = np.flatnonzero(new_oneid == target)
        olds_here = sorted(set(current[members].tolist()) - {0})
        origins: dict[int, list[int]] = {o: [] for o in olds_here}
        for record, old in zip(records[members].tolist(), current[members].tolist(), strict=True):
            if old:
                origins[old].append(record)
        evidence = _evidence(records[members], current[members], links, rules)
        event = MergeEvent(
            kind=MergeKind.MERGE,
            oneid_id=target,
            others=[o for o in olds_here if o != target],
            rule=evidence[0]["rule"] if evidence else "",
            evidence=evidence,
            records=sorted(records[members].tolist()),
            actor=actor_id,
            correlation_id=result.correlation_id,
        )
        events.append(
            (
                event,
                {
                    "survivor": target,
                    "merged": event.others,
                    "record_ids": event.records,
                    "origins": {o: sorted(rs) for o, rs in origins.items()},
                    "absorbed": [o for o in event.others if o in whole],
                },
            )
        )
    for old in olds[targets_per_old > 1].tolist():
        members = np.flatnonzero(current == old)
        parts: dict[int, list[int]] = {}
        for i in members:
            parts.setdefault(int(new_oneid[i]), []).append(int(records[i]))
        keeper = old if old in parts else min(parts)
        event = MergeEvent(
            kind=MergeKind.SPLIT,
            oneid_id=keeper,
            others=sorted(set(parts) - {keeper}),
            rule="rules",
            records=sorted(records[members].tolist()),
            actor=actor_id,
            correlation_id=result.correlation_id,
        )
        events.append((event, {"source": old, "parts": parts}))
    MergeEvent.objects.bulk_create([e for e, _ in events])
    for event, payload in events:
        signal = signals.oneid_merged if event.kind == MergeKind.MERGE else signals.oneid_split
        signal.send(sender=MergeEvent, event=event, **payload)
        if event.kind == MergeKind.MERGE:
            result.merges += 1
        else:
            result.splits += 1
    for old in lost:
        heirs = Counter(new_oneid[current == old].tolist())
        heir = min(heirs, key=lambda h: (-heirs[h], h))
        OneId.objects.filter(subject_id=old).update(status=OneIdStatus.RETIRED, merged_into=heir)
    result.retired = len(lost)


def _follow(records, current, new_oneid, moved_mask, actor, result: BatchResult) -> None:
    """Relationships of records that left an existing OneID follow them (see identity.relationships)."""
    leaving = moved_mask & (current > 0)
    if not leaving.any():
        return
    moves = {
        int(r): (int(o), int(n)) for r, o, n in zip(records[leaving], current[leaving], new_oneid[leaving], strict=True)
    }
    heirs = dict(
        OneId.objects.filter(subject_id__in={o for o, _ in moves.values()}, status=OneIdStatus.RETIRED).values_list(
            "subject_id", "merged_into_id"
        )
    )
    follow_records(moves=moves, heirs=heirs, actor=actor, correlation_id=result.correlation_id)


def _evidence(records: np.ndarray, owners: np.ndarray, links: np.ndarray, rules: Rules) -> list[dict]:
    """Values held by records of different former OneIDs: why they were merged."""
    rows = links[np.isin(links[:, 0], records)]
    owner_of = dict(zip(records.tolist(), owners.tolist(), strict=True))
    by_key: dict[int, set[int]] = {}
    for record, key, _ in rows.tolist():
        by_key.setdefault(key, set()).add(record)
    crossing = [k for k, rs in by_key.items() if len({owner_of[r] for r in rs}) > 1]
    details = Identifier.objects.filter(record_id__in=records.tolist(), key__in=crossing).values_list(
        "key", "identifier_type_id", "composite_key_id", "value"
    )
    seen: dict[int, dict] = {}
    for key, type_id, composite_id, value in details:
        seen.setdefault(
            key,
            {
                "rule": rule_label(rules, type_id, composite_id),
                "value": value_label(value),
                "records": sorted(by_key[key]),
                "_p": rules.priority(type_id, composite_id),
            },
        )
    evidence = sorted(seen.values(), key=lambda e: (e.pop("_p"), e["rule"], e["value"]))
    return orjson.loads(orjson.dumps(evidence))
