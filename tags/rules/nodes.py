"""The typed tree a rule document parses into; the compiler and the evaluator both walk it.

Types are static: ``number``, ``string``, ``date`` (ISO text, compared as text),
``boolean``, ``list`` (a multi-enum value) and ``null`` (the literal). Parsing fails
rather than building a tree whose types do not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUMBER, STRING, DATE, BOOLEAN, LIST, NULL = "number", "string", "date", "boolean", "list", "null"
SCALARS = (NUMBER, STRING, DATE, BOOLEAN)

# Event aggregate functions and what they need.
EVENT_FNS = ("count", "sum", "min", "max", "avg", "first", "last", "mode", "count_distinct")
NUMERIC_FNS = ("sum", "min", "max", "avg")
PICK_FNS = ("first", "last", "mode")
QUANTIFIERS = ("any", "all", "none", "count")


class Node:
    type: str


@dataclass(frozen=True)
class Lit(Node):
    value: object
    type: str


@dataclass(frozen=True)
class ListLit(Node):
    """A literal list, the right-hand side of ``in``."""

    values: tuple
    item_type: str
    type: str = LIST


@dataclass(frozen=True)
class Attr(Node):
    """An attribute of the subject in scope (``depth`` 0 = the rule's subject, 1 = a related one)."""

    path: tuple[str, ...]
    type: str
    depth: int = 0


@dataclass(frozen=True)
class TagRef(Node):
    tag_id: int
    code: str
    type: str
    depth: int = 0


@dataclass
class Prop(Node):
    """An event property; its type comes from what it is compared with or aggregated as."""

    key: str
    type: str | None = None


@dataclass(frozen=True)
class IsNull(Node):
    arg: Node
    negate: bool = False
    type: str = BOOLEAN


@dataclass(frozen=True)
class Cmp(Node):
    """``== != < <= > >=`` on two operands, or a between for ``<``/``<=`` with three."""

    op: str
    args: tuple[Node, ...]
    type: str = BOOLEAN


@dataclass(frozen=True)
class In(Node):
    needle: Node
    haystack: Node  # ListLit or a list-typed value (multi-enum membership)
    type: str = BOOLEAN


@dataclass(frozen=True)
class Logic(Node):
    op: str  # and | or | not
    args: tuple[Node, ...]
    type: str = BOOLEAN


@dataclass(frozen=True)
class Truth(Node):
    """A boolean value used as a condition: true only when it is true (null is false)."""

    arg: Node
    type: str = BOOLEAN


@dataclass(frozen=True)
class Arith(Node):
    op: str  # + - * / min max
    args: tuple[Node, ...]
    type: str = NUMBER


@dataclass(frozen=True)
class Since(Node):
    unit: str  # years | days
    arg: Node
    type: str = NUMBER


@dataclass(frozen=True)
class EventAgg(Node):
    event_type: str
    fn: str
    prop: Prop | None
    days: int | None
    where: Node | None
    type: str = NUMBER

    def spec(self) -> tuple:
        """Aggregates sharing a spec are computed by one GROUP BY."""
        return (self.event_type, self.days, repr(self.where))


@dataclass(frozen=True)
class Related(Node):
    relationship_type_id: int
    code: str
    direction: str  # out: the subject is the 'from' end
    quantifier: str
    where: Node | None
    type: str = BOOLEAN


@dataclass(frozen=True)
class Case:
    when: Node
    then: object  # canonical JSON value


@dataclass(frozen=True)
class Rule:
    cases: tuple[Case, ...] = ()
    default: object = None
    formula: Node | None = None
    tag_ids: frozenset[int] = field(default_factory=frozenset)  # tags the rule reads (dependencies)
