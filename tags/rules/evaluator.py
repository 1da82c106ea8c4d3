"""The plain-Python meaning of the rule language: the oracle the compiled SQL is tested against.

Deliberately naive (it walks every event and relationship of a subject) and written
straight from docs/TAGS.md; it is not used by the product's write paths.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field

from . import nodes as n

SHAPE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


@dataclass
class World:
    """A snapshot: subjects' attributes, stored tag values, events and relationships."""

    now: dt.datetime
    attributes: dict[int, dict] = field(default_factory=dict)
    subject_types: dict[int, int] = field(default_factory=dict)
    tag_values: dict[tuple[int, int], object] = field(default_factory=dict)  # (tag_id, subject_id)
    events: dict[int, list[dict]] = field(default_factory=dict)  # subject_id → [{id, type, occurred_at, properties}]
    relationships: list[dict] = field(default_factory=list)  # {type_id, from, to, valid_from, valid_to}


def evaluate(rule: n.Rule, subject_id: int, world: World) -> object:
    """The canonical value the rule gives ``subject_id`` (None: no value)."""
    ev = _Evaluator(world, [subject_id])
    if rule.formula is not None:
        value = ev.eval(rule.formula)
        if value is None:
            return None
        value = float(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    for case in rule.cases:
        if ev.eval(case.when) is True:
            return case.then
    return rule.default


def _typed(value: object, kind: str | None) -> object:
    if kind == n.NUMBER:
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind in (n.STRING, n.DATE, None):
        return value if isinstance(value, str) else None
    if kind == n.BOOLEAN:
        return value if isinstance(value, bool) else None
    if kind == n.LIST:
        return value if isinstance(value, list) else None
    raise AssertionError(kind)


def _compare(op: str, a: object, b: object) -> bool:
    if a is None or b is None:
        return False
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


class _Evaluator:
    def __init__(self, world: World, stack: list[int], event: dict | None = None) -> None:
        self.world = world
        self.stack = stack  # subject ids by depth
        self.event = event

    def eval(self, node: n.Node) -> object:
        return getattr(self, "e_" + type(node).__name__.lower())(node)

    def e_lit(self, node: n.Lit) -> object:
        return node.value

    def e_attr(self, node: n.Attr) -> object:
        value: object = self.world.attributes.get(self.stack[node.depth], {})
        for key in node.path:
            value = value.get(key) if isinstance(value, dict) else None
        return _typed(value, node.type)

    def e_tagref(self, node: n.TagRef) -> object:
        return _typed(self.world.tag_values.get((node.tag_id, self.stack[node.depth])), node.type)

    def e_prop(self, node: n.Prop) -> object:
        return _typed(self.event["properties"].get(node.key), node.type or n.STRING)

    def e_isnull(self, node: n.IsNull) -> bool:
        return (self.eval(node.arg) is None) != node.negate

    def e_cmp(self, node: n.Cmp) -> bool:
        values = [self.eval(a) for a in node.args]
        if len(values) == 3:
            return _compare(node.op, values[0], values[1]) and _compare(node.op, values[1], values[2])
        return _compare(node.op, values[0], values[1])

    def e_in(self, node: n.In) -> bool:
        needle = self.eval(node.needle)
        if needle is None:
            return False
        if isinstance(node.haystack, n.ListLit):
            return needle in node.haystack.values
        container = self.eval(node.haystack)
        return isinstance(container, list) and needle in container

    def e_logic(self, node: n.Logic) -> bool:
        if node.op == "not":
            return not self.eval(node.args[0])
        values = [self.eval(a) for a in node.args]
        return all(values) if node.op == "and" else any(values)

    def e_truth(self, node: n.Truth) -> bool:
        return self.eval(node.arg) is True

    def e_arith(self, node: n.Arith) -> object:
        values = [self.eval(a) for a in node.args]
        if any(v is None for v in values):
            return None
        values = [float(v) for v in values]
        if node.op == "min":
            return min(values)
        if node.op == "max":
            return max(values)
        if node.op == "-":
            return -values[0] if len(values) == 1 else values[0] - values[1]
        if node.op == "/":
            return None if values[1] == 0 else values[0] / values[1]
        result = values[0]
        for v in values[1:]:
            result = result + v if node.op == "+" else result * v
        return result

    def e_since(self, node: n.Since) -> object:
        value = self.eval(node.arg)
        if not isinstance(value, str) or not SHAPE.match(value):
            return None
        today = self.world.now.astimezone(dt.UTC).date()
        if node.unit == "years":
            ymd = int(value.replace("-", ""))
            return (today.year * 10000 + today.month * 100 + today.day - ymd) // 10000
        try:
            return (today - dt.date.fromisoformat(value)).days
        except ValueError:
            return None

    def window(self, node: n.EventAgg) -> list[dict]:
        now = self.world.now
        start = now - dt.timedelta(days=node.days) if node.days is not None else None
        chosen = []
        for event in self.world.events.get(self.stack[0], []):
            if event["type"] != node.event_type or event["occurred_at"] > now:
                continue
            if start is not None and event["occurred_at"] <= start:
                continue
            if node.where is not None and _Evaluator(self.world, self.stack, event).eval(node.where) is not True:
                continue
            chosen.append(event)
        return sorted(chosen, key=lambda e: (e["occurred_at"], e["id"]))

    def e_eventagg(self, node: n.EventAgg) -> object:
        events = self.window(node)
        if node.fn == "count":
            return len(events)
        values = [_typed(e["properties"].get(node.prop.key), node.prop.type) for e in events]
        values = [v for v in values if v is not None]
        if node.fn == "count_distinct":
            return len(set(values))
        if node.fn == "sum":
            return sum(float(v) for v in values)
        if not values:
            return None
        if node.fn == "min":
            return min(values)
        if node.fn == "max":
            return max(values)
        if node.fn == "avg":
            return sum(float(v) for v in values) / len(values)
        if node.fn == "first":
            return values[0]
        if node.fn == "last":
            return values[-1]
        counts = Counter(values)
        top = max(counts.values())
        return min(v for v, c in counts.items() if c == top)

    def e_related(self, node: n.Related) -> object:
        me, now = self.stack[0], self.world.now
        near, far = ("from", "to") if node.direction == "out" else ("to", "from")
        results = []
        for rel in self.world.relationships:
            if rel["type_id"] != node.relationship_type_id or rel[near] != me:
                continue
            if rel["valid_from"] is not None and rel["valid_from"] > now:
                continue
            if rel["valid_to"] is not None and rel["valid_to"] <= now:
                continue
            inner = _Evaluator(self.world, [me, rel[far]])
            results.append(True if node.where is None else inner.eval(node.where) is True)
        if node.quantifier == "count":
            return sum(results)
        if node.quantifier == "any":
            return any(results)
        if node.quantifier == "none":
            return not any(results)
        return all(results)
