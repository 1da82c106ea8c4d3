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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.db import connection

from ..extract import Rules
from ..models import DoNotLinkSide, Identifier, IdentifierStatus, ManualLink, SourceRecord
from .partition import Graph, Link

HOLDER_CAP = 10_000  # beyond this a value is over every sensible limit; we stop reading holders


@dataclass
class Region:
    records: set[int] = field(default_factory=set)
    oneids: set[int] = field(default_factory=set)
    keys: set[int] = field(default_factory=set)
    holders: dict[int, int] = field(default_factory=dict)  # key -> holder count (capped)


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
       (SELECT (SELECT x.oneid_id FROM identity_sourcerecord x WHERE x.id = s.id) AS oid FROM s) q
       WHERE q.oid IS NOT NULL AND q.oid <> ALL(%(oneids)s::bigint[])),
 k AS (SELECT DISTINCT i.key, i.identifier_type_id AS t, i.composite_key_id AS c FROM s CROSS JOIN LATERAL
       (SELECT y.* FROM identity_identifier y WHERE y.record_id = s.id) i WHERE i.status = 'link'),
 kk AS (SELECT key FROM k WHERE key <> ALL(%(keys)s::bigint[]) UNION SELECT unnest(%(extra)s::bigint[]))
SELECT 'o', id, NULL::bigint FROM o
UNION ALL SELECT 'r', r.id, NULL FROM identity_sourcerecord r WHERE r.oneid_id IN (SELECT id FROM o)
UNION ALL SELECT 'k', k.key, coalesce(k.t, -k.c)::bigint FROM k
UNION ALL SELECT 'h', kk.key, h.record_id FROM kk CROSS JOIN LATERAL
  (SELECT i.record_id FROM identity_identifier i WHERE i.key = kk.key AND i.status = 'link' LIMIT %(cap)s) h
UNION ALL SELECT 'm', m.record_b_id, NULL FROM identity_manuallink m WHERE m.record_a_id IN (SELECT id FROM s)
UNION ALL SELECT 'm', m.record_a_id, NULL FROM identity_manuallink m WHERE m.record_b_id IN (SELECT id FROM s)
"""


def _round_postgresql(records, region, extra) -> list[tuple]:
    """One round of the closure in one statement (PostgreSQL). Every probe is an index lookup
    (scalar subquery or LATERAL) driven by the round's ids, so the plan does not depend on table statistics (a batch
    run that just assigned a million OneIDs leaves them stale)."""
    with connection.cursor() as cursor:
        cursor.execute(
            ROUND_SQL,
            {
                "records": sorted(records),
                "oneids": sorted(region.oneids),
                "keys": sorted(region.keys),
                "extra": sorted(extra),
                "cap": HOLDER_CAP,
            },
        )
        return cursor.fetchall()


def _round_orm(records, region, extra) -> list[tuple]:
    """The same round through the ORM (SQLite)."""
    rows: list[tuple] = []
    oneids = set(SourceRecord.objects.filter(id__in=records).exclude(oneid=None).values_list("oneid_id", flat=True))
    oneids -= region.oneids
    rows += [("o", o, None) for o in oneids]
    rows += [("r", r, None) for r in SourceRecord.objects.filter(oneid_id__in=oneids).values_list("id", flat=True)]
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


def collect_region(seeds: Iterable[int], rules: Rules, changed_keys: Mapping[int, int | None] | None = None) -> Region:
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
        rows = one_round(new_records, region, extra)
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


def region_graph(region: Region, rules: Rules) -> tuple[Graph, dict[int, int | None]]:
    """The partition input for a closed region, and each record's current OneID."""
    records = list(region.records)
    order: dict[int, tuple] = {}
    current: dict[int, int | None] = {}
    for id_, code, external_id, oneid in SourceRecord.objects.filter(id__in=records).values_list(
        "id", "source__code", "external_id", "oneid_id"
    ):
        order[id_] = (code, external_id)
        current[id_] = oneid
    graph = Graph(record_order=order, links=[])
    holders: dict[int, list[int]] = {}
    detail: dict[int, tuple] = {}
    for record, key, type_id, composite_id, scope, value in Identifier.objects.filter(
        record_id__in=records, status=IdentifierStatus.LINK
    ).values_list("record_id", "key", "identifier_type_id", "composite_key_id", "scope", "value"):
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
    graph.manual = list(
        ManualLink.objects.filter(record_a_id__in=records, record_b_id__in=records).values_list(
            "record_a_id", "record_b_id"
        )
    )
    for record, constraint, side in DoNotLinkSide.objects.filter(record_id__in=records).values_list(
        "record_id", "constraint_id", "side"
    ):
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
