"""The tag dependency graph: edges ``tag → depends_on`` kept in TagDependency.

Rule activation replaces a tag's rule edges; a new edge set that closes a cycle is
refused naming it. Recomputes walk dependents in topological order.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.errors import ServiceError
from tags.models import DependencyKind, TagDefinition, TagDependency


def _edges() -> dict[int, set[int]]:
    graph: dict[int, set[int]] = {}
    for tag_id, depends_on in TagDependency.objects.values_list("tag_id", "depends_on_id"):
        graph.setdefault(tag_id, set()).add(depends_on)
    return graph


def check_no_cycle(tag: TagDefinition, depends_on: Iterable[int], *, kind: str = DependencyKind.RULE) -> None:
    """Refuse edges from ``tag`` to ``depends_on`` that would close a cycle; the message names it."""
    graph = _edges()
    kept = {d for d in TagDependency.objects.filter(tag=tag).exclude(kind=kind).values_list("depends_on_id", flat=True)}
    graph[tag.pk] = set(depends_on) | kept
    path = _cycle_through(graph, tag.pk)
    if path:
        codes = dict(TagDefinition.objects.filter(pk__in=path).values_list("pk", "code"))
        cycle = " → ".join(codes[p] for p in path)
        raise ServiceError.single("rule", f"The rule would close a dependency cycle: {cycle}.", "cycle")


def _cycle_through(graph: dict[int, set[int]], start: int) -> list[int] | None:
    """A path start → … → start, found depth-first, or None."""
    stack = [(start, iter(sorted(graph.get(start, ()))))]
    path, seen = [start], {start}
    while stack:
        _, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            path.pop()
            continue
        if child == start:
            return [*path, start]
        if child not in seen:
            seen.add(child)
            path.append(child)
            stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def replace_dependencies(tag: TagDefinition, depends_on: Iterable[int], *, kind: str = DependencyKind.RULE) -> None:
    wanted = set(depends_on)
    TagDependency.objects.filter(tag=tag, kind=kind).exclude(depends_on_id__in=wanted).delete()
    existing = set(TagDependency.objects.filter(tag=tag).values_list("depends_on_id", flat=True))
    TagDependency.objects.bulk_create(
        TagDependency(tag=tag, depends_on_id=d, kind=kind) for d in sorted(wanted - existing)
    )


def dependents_in_order(tag_id: int) -> list[int]:
    """Every tag that (transitively) reads ``tag_id``, each after all the tags it reads among them."""
    reverse: dict[int, set[int]] = {}
    for dependent, depends_on in TagDependency.objects.values_list("tag_id", "depends_on_id"):
        reverse.setdefault(depends_on, set()).add(dependent)
    reached: set[int] = set()
    frontier = [tag_id]
    while frontier:
        for d in reverse.get(frontier.pop(), ()):
            if d not in reached:
                reached.add(d)
                frontier.append(d)
    order: list[int] = []
    placed: set[int] = {tag_id}
    forward: dict[int, set[int]] = {}
    for d in reached:
        forward[d] = {p for p, kids in reverse.items() if d in kids and (p in reached or p == tag_id)}
    while len(order) < len(reached):
        ready = sorted(d for d in reached - set(order) if forward[d] <= placed)
        if not ready:  # a cycle slipped in (concurrent saves); stop rather than loop
            break
        order.extend(ready)
        placed.update(ready)
    return order
