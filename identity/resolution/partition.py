"""The partition of records into OneIDs, as a pure function of the data.

Definition (batch and incremental both compute exactly this):

1. An *edge* joins all records holding the same linking key — a strong
   identifier or a full composite key, same subject type, type, scope and value —
   unless the value is blocked or held by more records than its
   ``max_shared_records``. Operators' manual links are edges too.
2. Edges are processed in a fixed order that depends only on content: manual
   links first, then by (priority, kind, scope, value); the holders of a value in
   (source code, external id) order, each united with the first holder.
3. A union is *refused* when the joined group would hold both sides of a
   do-not-link constraint, or more distinct values of a type than its
   ``max_per_oneid`` (per scope).

Without refusals the result is plain connected components, which is why batch
resolution computes components with scipy and runs this function only on the
few components where a constraint could bite. Because the order is by content
(never by arrival or database id), the partition does not depend on the order in
which records arrived.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    """A linking value and its holders."""

    order: tuple  # (priority, kind, scope, value)
    rule: str
    value: str
    records: tuple[int, ...]


@dataclass
class Graph:
    record_order: dict[int, tuple]  # record id -> (source code, external id)
    links: list[Link]
    manual: list[tuple[int, int]] = field(default_factory=list)
    sides: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # record -> [(constraint, side)]
    limited: dict[int, list[tuple[Hashable, int]]] = field(default_factory=dict)  # record -> [(bucket, key)]
    limits: dict[Hashable, int] = field(default_factory=dict)  # bucket -> max distinct values


@dataclass
class Union:
    rule: str
    value: str
    records: tuple[int, int]


@dataclass
class Partition:
    group_of: dict[int, int]  # record -> representative record
    unions: dict[int, list[Union]]  # representative -> successful unions
    refused: list[Union]


class _Group:
    __slots__ = ("members", "sides", "unions", "values")

    def __init__(self, record: int, graph: Graph) -> None:
        self.members = [record]
        self.sides: dict[int, set[str]] = {}
        for constraint, side in graph.sides.get(record, ()):
            self.sides.setdefault(constraint, set()).add(side)
        self.values: dict[Hashable, set[int]] = {}
        for bucket, key in graph.limited.get(record, ()):
            self.values.setdefault(bucket, set()).add(key)
        self.unions: list[Union] = []


def _compatible(a: _Group, b: _Group, limits: dict[Hashable, int]) -> bool:
    for constraint, sides in b.sides.items():
        if constraint in a.sides and len(a.sides[constraint] | sides) > 1:
            return False
    for bucket, values in b.values.items():
        if bucket in a.values and len(a.values[bucket] | values) > limits[bucket]:
            return False
    return True


def partition(graph: Graph) -> Partition:
    order = graph.record_order
    groups: dict[int, _Group] = {r: _Group(r, graph) for r in order}
    root: dict[int, int] = {r: r for r in order}
    refused: list[Union] = []

    def unite(x: int, y: int, rule: str, value: str) -> None:
        gx, gy = root[x], root[y]
        if gx == gy:
            return
        a, b = groups[gx], groups[gy]
        if not _compatible(a, b, graph.limits):
            refused.append(Union(rule, value, (x, y)))
            return
        if len(a.members) < len(b.members):
            a, b, gx, gy = b, a, gy, gx
        for member in b.members:
            root[member] = gx
        a.members += b.members
        for constraint, sides in b.sides.items():
            a.sides.setdefault(constraint, set()).update(sides)
        for bucket, values in b.values.items():
            a.values.setdefault(bucket, set()).update(values)
        a.unions += b.unions
        a.unions.append(Union(rule, value, (x, y)))
        del groups[gy]

    for x, y in sorted(graph.manual, key=lambda p: (order[p[0]], order[p[1]])):
        unite(x, y, "manual", "")
    for link in sorted(graph.links, key=lambda link: link.order):
        holders = sorted(link.records, key=order.__getitem__)
        for other in holders[1:]:
            unite(holders[0], other, link.rule, link.value)
    group_of: dict[int, int] = {}
    unions: dict[int, list[Union]] = {}
    for group in groups.values():
        representative = min(group.members, key=order.__getitem__)
        for member in group.members:
            group_of[member] = representative
        unions[representative] = group.unions
    return Partition(group_of, unions, refused)


def is_clean(records: list[int], graph: Graph) -> bool:
    """True when no union inside this connected set can be refused, so the set is one group."""
    probe = _Group(records[0], graph)
    for record in records[1:]:
        other = _Group(record, graph)
        if not _compatible(probe, other, graph.limits):
            return False
        for constraint, sides in other.sides.items():
            probe.sides.setdefault(constraint, set()).update(sides)
        for bucket, values in other.values.items():
            probe.values.setdefault(bucket, set()).update(values)
    return True
