"""What reacts to what: the computed tags indexed by the inputs they read.

Built from the active rules and propagations in a handful of queries and cached
per process until a tag definition or a dependency changes (one cheap aggregate
query checks that). The planner asks it which tags an event type, a relationship
type, a subject type's attributes or a tag's values feed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tags.models import Computation, TagDefinition, TagDependency, TagStatus
from tags.rules import nodes as n


@dataclass
class Index:
    tags: dict[int, TagDefinition] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # every computed tag after the tags it reads
    dependents: dict[int, list[int]] = field(default_factory=dict)
    by_event_type: dict[str, set[int]] = field(default_factory=dict)
    by_relationship: dict[int, set[int]] = field(default_factory=dict)
    by_attributes: dict[int, set[int]] = field(default_factory=dict)  # subject type → tags reading attributes
    windowed_rules: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # tag → [(event type, days)]
    position: dict[int, int] = field(default_factory=dict)
    state_built: set[int] = field(default_factory=set)  # propagations whose whole state is built (deltas apply)

    def rule(self, tag_id: int):
        from tags.services.compiled import active_rule

        return active_rule(self.tags[tag_id])

    def propagation(self, tag_id: int):
        from tags.propagation.active import active_propagation

        return active_propagation(self.tags[tag_id])


_lock = threading.Lock()
_cached: tuple[object, Index] | None = None


def _stamp() -> object:
    """What changes when a definition, an active rule or a dependency does: one round trip."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT MAX(updated_at) FROM tags_tagdefinition), (SELECT COUNT(*) FROM tags_tagdefinition),"
            " (SELECT MAX(id) FROM tags_tagdependency), (SELECT COUNT(*) FROM tags_tagdependency),"
            " (SELECT MAX(built_at) FROM tags_propagationstatebuilt), (SELECT COUNT(*) FROM tags_propagationstatebuilt)"
        )
        return cursor.fetchone()


def current() -> Index:
    """The index for the tags as stored now."""
    global _cached
    stamp = _stamp()
    with _lock:
        if _cached is not None and _cached[0] == stamp:
            return _cached[1]
    index = build()
    with _lock:
        _cached = (stamp, index)
    return index


def forget() -> None:
    global _cached
    with _lock:
        _cached = None


def walk(node: object, found: list) -> None:
    if isinstance(node, n.Related | n.EventAgg | n.Attr):
        found.append(node)
    for value in getattr(node, "__dict__", {}).values():
        if isinstance(value, n.Node):
            walk(value, found)
        elif isinstance(value, tuple):
            for item in value:
                walk(item, found)


def rule_inputs(rule: n.Rule) -> list:
    found: list = []
    for case in rule.cases:
        walk(case.when, found)
    if rule.formula is not None:
        walk(rule.formula, found)
    return found


def build() -> Index:
    index = Index()
    computed = (
        TagDefinition.objects.select_related("rule")
        .filter(computation__in=[Computation.RULE, Computation.PROPAGATED], rule__isnull=False)
        .exclude(status=TagStatus.ARCHIVED)
    )
    index.tags = {t.pk: t for t in computed}
    for tag_id, tag in index.tags.items():
        try:
            if tag.computation == Computation.RULE:
                _index_rule(index, tag_id, tag)
            else:
                _index_propagation(index, tag_id)
        except Exception:  # a rule that no longer parses is left out, not fatal to the engine
            continue
    edges = [(t, d) for t, d in TagDependency.objects.values_list("tag_id", "depends_on_id")]
    for tag_id, depends_on in edges:
        if tag_id in index.tags:
            index.dependents.setdefault(depends_on, []).append(tag_id)
    from tags.propagation.state import state_built

    index.state_built = state_built(t for t, tag in index.tags.items() if tag.computation == Computation.PROPAGATED)
    index.order = _topological(index.tags, edges)
    index.position = {t: i for i, t in enumerate(index.order)}
    return index


def _index_rule(index: Index, tag_id: int, tag: TagDefinition) -> None:
    rule = index.rule(tag_id)
    if rule is None:
        return
    for node in rule_inputs(rule):
        if isinstance(node, n.EventAgg):
            index.by_event_type.setdefault(node.event_type, set()).add(tag_id)
            if node.days is not None:
                index.windowed_rules.setdefault(tag_id, []).append((node.event_type, node.days))
        elif isinstance(node, n.Related):
            index.by_relationship.setdefault(node.relationship_type_id, set()).add(tag_id)
    # Any attribute of the tag's own subject type may be read (conservative and cheap).
    index.by_attributes.setdefault(tag.subject_type_id, set()).add(tag_id)


def _index_propagation(index: Index, tag_id: int) -> None:
    prop = index.propagation(tag_id)
    if prop is None:
        return
    for rel in prop.relationship_type_ids:
        index.by_relationship.setdefault(rel, set()).add(tag_id)
    if prop.source.attribute or prop.where:
        index.by_attributes.setdefault(prop.source.subject_type_id, set()).add(tag_id)


def _topological(tags: dict[int, TagDefinition], edges: list[tuple[int, int]]) -> list[int]:
    reads: dict[int, set[int]] = {t: set() for t in tags}
    for tag_id, depends_on in edges:
        if tag_id in tags and depends_on in tags:
            reads[tag_id].add(depends_on)
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(reads):
        ready = sorted(t for t in reads if t not in placed and reads[t] <= placed)
        if not ready:  # a cycle slipped in (concurrent saves): place the rest by id rather than loop
            ready = sorted(t for t in reads if t not in placed)
        order.extend(ready)
        placed.update(ready)
    return order
