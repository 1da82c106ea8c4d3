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


def collect_region(seeds: Iterable[int], rules: Rules, changed_keys: Mapping[int, int | None] | None = None) -> Region:
    """Breadth-first closure from ``seeds``; typically three rounds of three small queries.

    A value held by the seeds (or removed from them: ``changed_keys``) is followed
    while its holder count is within ``limit + len(seeds)``: its count changed by
    at most that much, so beyond it the value linked neither before nor after.
    """
    region = Region()
    limit_of: dict[int, int | None] = dict(changed_keys or {})  # removed values: key -> shared limit
    forced = set(limit_of)
    new_records = set(seeds)
    slack = len(new_records)
    new_keys = set(forced)
    first = True
    while new_records or new_keys:
        region.records |= new_records
        rows = SourceRecord.objects.filter(id__in=new_records).exclude(oneid=None).values_list("oneid_id", flat=True)
        new_oneids = set(rows) - region.oneids
        region.oneids |= new_oneids
        found: set[int] = set()
        if new_oneids:
            found |= set(SourceRecord.objects.filter(oneid_id__in=new_oneids).values_list("id", flat=True))
        for key, type_id, composite_id in Identifier.objects.filter(
            record_id__in=new_records, status=IdentifierStatus.LINK
        ).values_list("key", "identifier_type_id", "composite_key_id"):
            limit_of.setdefault(key, rules.shared_limit(type_id, composite_id))
            if first:
                forced.add(key)
            if key not in region.keys:
                new_keys.add(key)
        found |= set(ManualLink.objects.filter(record_a_id__in=new_records).values_list("record_b_id", flat=True))
        found |= set(ManualLink.objects.filter(record_b_id__in=new_records).values_list("record_a_id", flat=True))
        new_keys -= region.keys
        region.keys |= new_keys
        by_key: dict[int, list[int]] = {}
        for key, record in _holders(sorted(new_keys), HOLDER_CAP):
            by_key.setdefault(key, []).append(record)
        for key, records in by_key.items():
            region.holders[key] = len(records)
            limit = limit_of.get(key)
            if limit is None or len(records) <= limit + (slack if key in forced else 0):
                found.update(records)
        new_keys = set()
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
        rule = rules.by_id.get(type_id) if type_id is not None else None
        if rule is not None and rule.max_per_oneid is not None:
            bucket = (type_id, scope)
            graph.limits[bucket] = rule.max_per_oneid
            graph.limited.setdefault(record, []).append((bucket, key))
    for key, records_of_key in holders.items():
        type_id, composite_id, scope, value = detail[key]
        limit = rules.shared_limit(type_id, composite_id)
        count = region.holders.get(key, len(records_of_key))
        if limit is not None and count > limit:
            continue
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
