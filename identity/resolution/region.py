"""The part of the graph a change can affect, and the data to partition it.

A *region* is closed under everything that can join records: the OneIDs its
records belong to (all their records), linking values under their shared limit
(all their holders) and manual links. Re-partitioning a closed region gives the
same answer as re-partitioning everything, because nothing outside it can be
joined to anything inside. Values whose holder count changed in this batch are
followed even when they are now over the limit, so a value that just stopped
linking splits the OneID it used to hold together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from django.db import connection

from subjects.services.staging import one_round_trip

from ..extract import Rules
from ..golden import RecordView
from ..models import DoNotLinkSide, Identifier, IdentifierStatus, ManualLink, RecordAssignment, SourceRecord
from .partition import Graph, Link

HOLDER_CAP = 10_000  # beyond this a value is over every sensible limit; we stop reading holders


@dataclass
class Region:
    records: set[int] = field(default_factory=set)
    oneids: set[int] = field(default_factory=set)
    keys: set[int] = field(default_factory=set)
    holders: dict[int, int] = field(default_factory=dict)  # key -> holder count (capped)
    views: dict[int, tuple[RecordView, int]] = field(default_factory=dict)  # golden inputs, if read with the graph


def _holders(keys: list[int], cap: int) -> list[tuple[int, int]]:
    """``(key, record)`` for linking identifiers of ``keys``, at most ``cap`` per key."""
    if not keys:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT k.key, h.record_id FROM unnest(%s::bigint[]) AS k(key) CROSS JOIN LATERAL"
                " (SELECT i.record_id FROM identity_identifier i WHERE i.key = k.key AND i.status = 'link'"
                " LIMIT %s) h",
                [keys, cap],
            )
            return cursor.fetchall()
    return list(Identifier.objects.filter(key__in=keys, status=IdentifierStatus.LINK).values_list("key", "record_id"))


ROUND_SQL = """
WITH s AS (SELECT unnest(%(records)s::bigint[]) AS id),
 o AS (SELECT DISTINCT q.oid AS id FROM
       (SELECT (SELECT x.oneid_id FROM identity_recordassignment x WHERE x.record_id = s.id) AS oid FROM s) q
       WHERE q.oid IS NOT NULL AND q.oid <> ALL(%(oneids)s::bigint[])),
 k AS (SELECT DISTINCT i.key, i.identifier_type_id AS t, i.composite_key_id AS c FROM s CROSS JOIN LATERAL
       (SELECT y.* FROM identity_identifier y WHERE y.record_id = s.id) i WHERE i.status = 'link'),
 kk AS (SELECT key FROM k WHERE key <> ALL(%(keys)s::bigint[]) UNION SELECT unnest(%(extra)s::bigint[]))
SELECT 'o', id, NULL::bigint FROM o
UNION ALL SELECT 'r', a.record_id, NULL FROM identity_recordassignment a WHERE a.oneid_id IN (SELECT id FROM o)
UNION ALL SELECT 'k', k.key, coalesce(k.t, -k.c)::bigint FROM k
UNION ALL SELECT 'h', kk.key, h.record_id FROM kk CROSS JOIN LATERAL
  (SELECT i.record_id FROM identity_identifier i WHERE i.key = kk.key AND i.status = 'link' LIMIT %(cap)s) h
UNION ALL SELECT 'm', m.record_b_id, NULL FROM identity_manuallink m WHERE m.record_a_id IN (SELECT id FROM s)
UNION ALL SELECT 'm', m.record_a_id, NULL FROM identity_manuallink m WHERE m.record_b_id IN (SELECT id FROM s)
"""


LOCK_SQL = "SELECT count(pg_advisory_xact_lock(x)) FROM unnest(%(lock)s::bigint[]) AS x; "


def _round_postgresql(records, region, extra, lock=()) -> list[tuple]:
    """One round of the closure in one statement (PostgreSQL). Every probe is an index lookup
    (scalar subquery or LATERAL) driven by the round's ids, so the plan does not depend on table statistics (a batch
    run that just assigned a million OneIDs leaves them stale). ``lock``: advisory locks taken first, in
    the same round trip (a statement of its own, so the round reads what committed before it got them)."""
    params = {
        "records": sorted(records),
        "oneids": sorted(region.oneids),
        "keys": sorted(region.keys),
        "extra": sorted(extra),
        "cap": HOLDER_CAP,
    }
    with connection.cursor() as cursor:
        if lock and one_round_trip(cursor):
            cursor.execute(LOCK_SQL + ROUND_SQL, {**params, "lock": list(lock)})
            cursor.nextset()
            return cursor.fetchall()
        if lock:
            cursor.execute(LOCK_SQL, {"lock": list(lock)})
        cursor.execute(ROUND_SQL, params)
        return cursor.fetchall()


def _round_orm(records, region, extra, lock=()) -> list[tuple]:
    """The same round through the ORM (SQLite)."""
    rows: list[tuple] = []
    oneids = set(RecordAssignment.objects.filter(record_id__in=records).values_list("oneid_id", flat=True))
    oneids -= region.oneids
    rows += [("o", o, None) for o in oneids]
    rows += [
        ("r", r, None) for r in RecordAssignment.objects.filter(oneid_id__in=oneids).values_list("record_id", flat=True)
    ]
    keys = set()
    for key, type_id, composite_id in Identifier.objects.filter(
        record_id__in=records, status=IdentifierStatus.LINK
    ).values_list("key", "identifier_type_id", "composite_key_id"):
        rows.append(("k", key, type_id if type_id is not None else -composite_id))
        keys.add(key)
    wanted = (keys - region.keys) | set(extra)
    rows += [("h", k, r) for k, r in _holders(sorted(wanted), HOLDER_CAP)]
    rows += [
        ("m", b, None) for b in ManualLink.objects.filter(record_a_id__in=records).values_list("record_b_id", flat=True)
    ]
    rows += [
        ("m", a, None) for a in ManualLink.objects.filter(record_b_id__in=records).values_list("record_a_id", flat=True)
    ]
    return rows


def collect_region(
    seeds: Iterable[int],
    rules: Rules,
    changed_keys: Mapping[int, int | None] | None = None,
    lock: Sequence[int] = (),
) -> Region:
    """Breadth-first closure from ``seeds``: one statement per round, typically three rounds.

    A value held by the seeds (or removed from them: ``changed_keys``) is followed
    while its holder count is within ``limit + len(seeds)``: its count changed by
    at most that much, so beyond it the value linked neither before nor after.
    """
    region = Region()
    limit_of: dict[int, int | None] = dict(changed_keys or {})  # removed values: key -> shared limit
    forced = set(limit_of)
    new_records = set(seeds)
    slack = len(new_records)
    extra = set(forced)
    first = True
    one_round = _round_postgresql if connection.vendor == "postgresql" else _round_orm
    while new_records:
        rows = one_round(new_records, region, extra, lock)
        lock = ()
        region.records |= new_records
        found: set[int] = set()
        by_key: dict[int, list[int]] = {}
        for kind, a, b in rows:
            if kind == "o":
                region.oneids.add(a)
            elif kind in ("r", "m"):
                found.add(a)
            elif kind == "k":
                limit_of.setdefault(a, rules.shared_limit(b, None) if b > 0 else rules.shared_limit(None, -b))
                if first:
                    forced.add(a)
                region.keys.add(a)
            else:
                by_key.setdefault(a, []).append(b)
        region.keys |= extra
        for key, records in by_key.items():
            region.holders[key] = len(records)
            limit = limit_of.get(key)
            if limit is None or len(records) <= limit + (slack if key in forced else 0):
                found.update(records)
        extra = set()
        first = False
        new_records = found - region.records
    return region


GRAPH_SQL = """
WITH x AS (SELECT unnest(%(records)s::bigint[]) AS id)
SELECT 'r', r.id, (SELECT a.oneid_id FROM identity_recordassignment a WHERE a.record_id = r.id), s.trust_rank::bigint, s.subject_type_id, s.code::text, r.external_id::text,
  CASE WHEN %(views)s THEN r.raw::text END, extract(epoch FROM r.created_at)::float8,
  extract(epoch FROM r.updated_at)::float8
  FROM x JOIN identity_sourcerecord r ON r.id = x.id JOIN identity_sourcesystem s ON s.id = r.source_id
UNION ALL SELECT 'i', i.record_id, i.key, i.identifier_type_id, i.composite_key_id, i.scope::text, i.value::text,
  NULL, NULL, NULL
  FROM x CROSS JOIN LATERAL (SELECT y.* FROM identity_identifier y WHERE y.record_id = x.id) i WHERE i.status = 'link'
UNION ALL SELECT 'm', m.record_a_id, m.record_b_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM identity_manuallink m WHERE m.record_a_id IN (SELECT id FROM x) AND m.record_b_id IN (SELECT id FROM x)
UNION ALL SELECT 'd', d.record_id, d.constraint_id, NULL, NULL, d.side::text, NULL, NULL, NULL, NULL
  FROM identity_donotlinkside d WHERE d.record_id IN (SELECT id FROM x)
"""


def _graph_rows(records: list[int], views: dict | None) -> tuple[list, list, list, list]:
    """Records, linking identifiers, manual links and do-not-link sides of ``records``: one
    statement on PostgreSQL (each part an index probe per record), four ORM queries elsewhere.
    With ``views`` (PostgreSQL) the records' golden-record inputs are read in the same statement."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(GRAPH_SQL, {"records": records, "views": views is not None})
            rows = cursor.fetchall()
        parts: dict[str, list] = {"r": [], "i": [], "m": [], "d": []}
        for kind, a, b, c, d, t1, t2, raw, created, updated in rows:
            if kind == "r":
                parts["r"].append((a, t1, t2, b))
                if views is not None:
                    views[a] = (RecordView(a, c, created, updated, orjson.loads(raw)), d)
            elif kind == "i":
                parts["i"].append((a, b, c, d, t1, t2))
            elif kind == "m":
                parts["m"].append((a, b))
            else:
                parts["d"].append((a, b, t1))
        return parts["r"], parts["i"], parts["m"], parts["d"]
    return (
        list(
            SourceRecord.objects.filter(id__in=records).values_list(
                "id", "source__code", "external_id", "assignment__oneid"
            )
        ),
        list(
            Identifier.objects.filter(record_id__in=records, status=IdentifierStatus.LINK).values_list(
                "record_id", "key", "identifier_type_id", "composite_key_id", "scope", "value"
            )
        ),
        list(
            ManualLink.objects.filter(record_a_id__in=records, record_b_id__in=records).values_list(
                "record_a_id", "record_b_id"
            )
        ),
        list(DoNotLinkSide.objects.filter(record_id__in=records).values_list("record_id", "constraint_id", "side")),
    )


def region_graph(region: Region, rules: Rules, with_views: bool = False) -> tuple[Graph, dict[int, int | None]]:
    """The partition input for a closed region, and each record's current OneID.

    ``with_views``: also fill ``region.views`` (PostgreSQL), so applying the partition reads no
    record again for the golden records (incremental: one round trip fewer per call)."""
    records = sorted(region.records)
    views = region.views if with_views and connection.vendor == "postgresql" else None
    record_rows, identifier_rows, manual_rows, side_rows = _graph_rows(records, views)
    order: dict[int, tuple] = {}
    current: dict[int, int | None] = {}
    for id_, code, external_id, oneid in record_rows:
        order[id_] = (code, external_id)
        current[id_] = oneid
    graph = Graph(record_order=order, links=[])
    holders: dict[int, list[int]] = {}
    detail: dict[int, tuple] = {}
    for record, key, type_id, composite_id, scope, value in identifier_rows:
        holders.setdefault(key, []).append(record)
        detail[key] = (type_id, composite_id, scope, value)
    for key, records_of_key in holders.items():
        type_id, composite_id, scope, value = detail[key]
        limit = rules.shared_limit(type_id, composite_id)
        count = region.holders.get(key, len(records_of_key))
        if limit is not None and count > limit:
            continue
        # Only values that link count toward max_per_oneid, as in batch: an over-limit value joins nobody.
        rule = rules.by_id.get(type_id) if type_id is not None else None
        if rule is not None and rule.max_per_oneid is not None:
            bucket = (type_id, scope)
            graph.limits[bucket] = rule.max_per_oneid
            for record in records_of_key:
                graph.limited.setdefault(record, []).append((bucket, key))
        graph.links.append(
            Link(
                (rules.priority(type_id, composite_id), _kind(type_id, composite_id), scope, value),
                rule_label(rules, type_id, composite_id),
                value_label(value),
                tuple(sorted(set(records_of_key))),
            )
        )
    graph.manual = manual_rows
    for record, constraint, side in side_rows:
        graph.sides.setdefault(record, []).append((constraint, side))
    return graph, current


def _kind(type_id: int | None, composite_id: int | None) -> str:
    return f"t{type_id:09d}" if type_id is not None else f"c{composite_id:09d}"


def rule_label(rules: Rules, type_id: int | None, composite_id: int | None) -> str:
    if type_id is not None:
        rule = rules.by_id.get(type_id)
        return f"identifier:{rule.code if rule else type_id}"
    composite = next((c for c in rules.composites if c.id == composite_id), None)
    return f"composite:{composite.code if composite else composite_id}"


def value_label(value: str) -> str:
    """A composite value for people: parts joined by ' + ', scopes dropped."""
    return " + ".join(part.rsplit("\x1d", 1)[-1] for part in value.split("\x1f"))
