"""Propagation documents → a typed ``Propagation``, every problem reported at its place.

A propagation carries a *source* (a tag or an attribute of subjects of one type)
along a *path* of relationship types, walked from the source subjects to the
target subjects (the tag's type), and *aggregates* what arrives per target:

    {"propagate": {"from": {"tag": "skin_type"},
                   "path": [{"relationship": "visited"}],   # member --visited--> clinic
                   "aggregate": "share"}}

A step's ``direction`` is "out" (the walk goes from the relationship's ``from``
end to its ``to`` end) or "in" (the reverse); it may be left out when the types
decide it. Parsing is pure over a ``Context`` (tags.rules.context) so it is tested
without a database; field names point into the document ("propagate.path[1]").
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ItemError
from tags.rules.context import KEY_PATTERN, Context, TagInfo

AGGREGATES = ("share", "count", "sum", "avg", "min", "max", "top_k", "mode", "any", "all", "none", "copy")
POLICIES = ("most_recent", "highest_weight", "all")
NUMERIC = ("sum", "avg", "min", "max")
MAX_STEPS = 6
MAX_DAYS = 36_600
MAX_K = 50
CATEGORICAL = ("enum", "text", "multi_enum", "boolean")
ATTRIBUTE_KINDS = {"string": "text", "number": "number", "boolean": "boolean", "date": "date", "list": "multi_enum"}


class PropagationInvalid(Exception):
    def __init__(self, errors: list[ItemError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


# direction → (the relationship column the walk leaves from, the column it arrives at).
# "subject_*" / "*_subject" walk between a taggable relationship's own subject and one end.
COLUMNS = {
    "out": ("from_subject_id", "to_subject_id"),
    "in": ("to_subject_id", "from_subject_id"),
    "subject_to": ("subject_id", "to_subject_id"),
    "subject_from": ("subject_id", "from_subject_id"),
    "to_subject": ("to_subject_id", "subject_id"),
    "from_subject": ("from_subject_id", "subject_id"),
}


@dataclass(frozen=True)
class Step:
    relationship_type_id: int
    code: str
    direction: str  # a key of COLUMNS; out: walk from_subject → to_subject
    start_type_id: int  # the subject type the step leaves from (source side)
    end_type_id: int
    within_days: int | None = None
    where: tuple[tuple[str, object], ...] = ()  # relationship attribute == value

    @property
    def start_column(self) -> str:
        return COLUMNS[self.direction][0]

    @property
    def end_column(self) -> str:
        return COLUMNS[self.direction][1]


@dataclass(frozen=True)
class Source:
    """What is carried: a tag (``tag_id``) or an attribute (``attribute``) of the source subjects."""

    subject_type_id: int
    value_type: str  # a tag value type: enum, multi_enum, number, boolean, text, date
    tag_id: int | None = None
    tag_code: str = ""
    attribute: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Propagation:
    source: Source
    steps: tuple[Step, ...]
    aggregate: str
    target_type_id: int
    target_value_type: str
    k: int = 3
    value: object = None  # share/any/all/none: the value compared with (None: truthiness / per value)
    weighted: bool = False
    valid_now: bool = True
    policy: str = "most_recent"
    where: tuple[tuple[str, object], ...] = ()  # source subject attribute == value

    @property
    def tag_ids(self) -> frozenset[int]:
        return frozenset([self.source.tag_id]) if self.source.tag_id else frozenset()

    @property
    def relationship_type_ids(self) -> frozenset[int]:
        return frozenset(s.relationship_type_id for s in self.steps)

    @property
    def windowed(self) -> bool:
        """True when values change with time alone (a step limited to its last N days)."""
        return any(s.within_days is not None for s in self.steps)

    def result_kind(self) -> str:
        """What the value is: 'distribution' (JSON object value → share), or the tag value type."""
        return "distribution" if self.aggregate == "share" and self.value is None else self.target_value_type


def _relationship_subject_type(ctx: Context, info) -> int | None:
    """The subject type of a taggable relationship type's own subjects (None: not taggable)."""
    lookup = getattr(ctx, "relationship_subject_type", None)
    if callable(lookup):
        return lookup(info.code)
    from subjects.models import RelationshipType

    return RelationshipType.objects.filter(pk=info.id).values_list("subject_type_id", flat=True).first()


def is_propagation(document: object) -> bool:
    return isinstance(document, dict) and set(document) == {"propagate"}


def parse_propagation(document: object, *, tag: TagInfo, ctx: Context) -> Propagation:
    """Parse and type-check ``document`` for the target ``tag``; raises PropagationInvalid."""
    parser = _Parser(tag, ctx)
    result = parser.document(document)
    if parser.errors or result is None:
        raise PropagationInvalid(parser.errors or [ItemError(None, "propagate", "Invalid propagation.")])
    return result


class _Parser:
    KEYS = {"from", "path", "aggregate", "k", "value", "where", "weighted", "valid_now", "within_days", "policy"}

    def __init__(self, tag: TagInfo, ctx: Context) -> None:
        self.tag, self.ctx, self.errors = tag, ctx, []

    def fail(self, field: str, message: str, code: str = "invalid") -> None:
        self.errors.append(ItemError(None, field, message, code))

    def document(self, document: object) -> Propagation | None:
        if not is_propagation(document):
            self.fail("propagate", 'A propagation is {"propagate": {"from", "path", "aggregate", ...}}.')
            return None
        body = document["propagate"]
        if not isinstance(body, dict):
            self.fail("propagate", "Expected an object.")
            return None
        unknown = set(body) - self.KEYS
        if unknown:
            self.fail("propagate", f"Unknown key(s): {', '.join(sorted(unknown))}.")
        flags = {name: self.flag(body, name, default) for name, default in (("weighted", False), ("valid_now", True))}
        days = self.days(body.get("within_days"), "propagate.within_days")
        steps = self.path(body.get("path"), days)
        if steps is None:
            return None
        source = self.source(body.get("from"), steps[0].start_type_id if steps else None)
        where = self.equalities(body.get("where"), "propagate.where")
        if self.tag.subject_type_id != steps[-1].end_type_id:
            self.fail(
                "propagate.path",
                f"The path ends at {self.ctx.type_code(steps[-1].end_type_id)} subjects, but tag "
                f'"{self.tag.code}" is for {self.ctx.type_code(self.tag.subject_type_id)}.',
                "path_mismatch",
            )
        aggregate = body.get("aggregate")
        if aggregate not in AGGREGATES:
            self.fail("propagate.aggregate", f"Expected one of {', '.join(AGGREGATES)}.")
            return None
        policy = body.get("policy", "most_recent")
        if policy not in POLICIES:
            self.fail("propagate.policy", f"Expected one of {', '.join(POLICIES)}.")
        k = body.get("k", 3)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            self.fail("propagate.k", f"k is an integer from 1 to {MAX_K}.")
            k = 3
        if source is None or self.errors:
            return None
        prop = Propagation(
            source=source,
            steps=steps,
            aggregate=aggregate,
            target_type_id=self.tag.subject_type_id,
            target_value_type=self.tag.value_type,
            k=k,
            value=body.get("value"),
            weighted=flags["weighted"],
            valid_now=flags["valid_now"],
            policy=policy,
            where=where,
        )
        self.check_types(prop)
        return None if self.errors else prop

    def flag(self, body: dict, name: str, default: bool) -> bool:
        value = body.get(name, default)
        if not isinstance(value, bool):
            self.fail(f"propagate.{name}", "Expected true or false.")
            return default
        return value

    def days(self, value: object, field: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            self.fail(field, f"Expected a number of days from 1 to {MAX_DAYS}.")
            return None
        return value

    def equalities(self, value: object, field: str) -> tuple[tuple[str, object], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.fail(field, 'Expected an object of attribute equalities, e.g. {"channel": "online"}.')
            return ()
        pairs = []
        for key, expected in sorted(value.items()):
            if not KEY_PATTERN.match(str(key)):
                self.fail(f"{field}.{key}", "Attribute names are letters, digits and underscores.")
            elif not isinstance(expected, str | int | float | bool) or expected != expected:
                self.fail(f"{field}.{key}", "Compare with a text, number or boolean.")
            else:
                pairs.append((key, expected))
        return tuple(pairs)

    def path(self, path: object, days: int | None) -> tuple[Step, ...] | None:
        if not isinstance(path, list) or not path:
            self.fail("propagate.path", "Expected a non-empty list of steps.")
            return None
        if len(path) > MAX_STEPS:
            self.fail("propagate.path", f"A path has at most {MAX_STEPS} steps.")
            return None
        steps: list[Step] = []
        for i, raw in enumerate(path):
            step = self.step(raw, f"propagate.path[{i}]", steps[-1].end_type_id if steps else None, days)
            if step is None:
                return None
            steps.append(step)
        return tuple(steps)

    def step(self, raw: object, field: str, after: int | None, days: int | None) -> Step | None:
        if not isinstance(raw, dict) or "relationship" not in raw:
            self.fail(field, 'A step is {"relationship": code, "direction": "out"|"in"}.')
            return None
        unknown = set(raw) - {"relationship", "direction", "within_days", "where"}
        if unknown:
            self.fail(field, f"Unknown key(s): {', '.join(sorted(unknown))}.")
        info = self.ctx.relationship(raw["relationship"]) if isinstance(raw["relationship"], str) else None
        if info is None:
            self.fail(f"{field}.relationship", f"Unknown relationship type {raw['relationship']!r}.", "unknown")
            return None
        direction = raw.get("direction") or self.infer_direction(info, after)
        if direction not in COLUMNS:
            self.fail(
                f"{field}.direction",
                'Expected "out" (from → to), "in" (to → from), or for a taggable relationship'
                ' "subject_to", "subject_from", "to_subject", "from_subject".',
            )
            return None
        own = _relationship_subject_type(self.ctx, info) if "subject" in direction else None
        if "subject" in direction and own is None:
            self.fail(f"{field}.direction", f'"{info.code}" is not taggable: its relationships have no own subject.')
            return None
        ends = {"from_subject_id": info.from_type_id, "to_subject_id": info.to_type_id, "subject_id": own}
        start, end = (ends[c] for c in COLUMNS[direction])
        if after is not None and start != after:
            self.fail(
                field,
                f'The path does not connect: the previous step ends at {self.ctx.type_code(after)}, "{info.code}"'
                f" walked {direction} starts at {self.ctx.type_code(start)}.",
                "path_mismatch",
            )
            return None
        step_days = self.days(raw.get("within_days"), f"{field}.within_days")
        where = self.equalities(raw.get("where"), f"{field}.where")
        return Step(info.id, info.code, direction, start, end, step_days or days, where)

    def infer_direction(self, info, after: int | None) -> str | None:
        if info.from_type_id == info.to_type_id:
            return None
        if after is not None:
            return "in" if info.to_type_id == after else "out"
        return "in" if info.from_type_id == self.tag.subject_type_id else "out"

    def source(self, raw: object, type_id: int | None) -> Source | None:
        if type_id is None:
            return None
        if not isinstance(raw, dict) or len(raw) != 1 or not ({"tag"} >= set(raw) or {"attribute"} >= set(raw)):
            self.fail("propagate.from", 'Expected {"tag": code} or {"attribute": name}.')
            return None
        type_code = self.ctx.type_code(type_id)
        if "tag" in raw:
            info = self.ctx.tag(type_id, raw["tag"]) if isinstance(raw["tag"], str) else None
            if info is None:
                self.fail("propagate.from.tag", f"{type_code} has no tag {raw['tag']!r}.", "unknown")
                return None
            if info.status == "archived":
                self.fail("propagate.from.tag", f'Tag "{info.code}" is archived.', "archived")
            return Source(type_id, info.value_type, tag_id=info.id, tag_code=info.code, options=info.options)
        name = raw["attribute"]
        kind = self.ctx.attribute_type(type_id, (name,)) if isinstance(name, str) and KEY_PATTERN.match(name) else None
        if kind is None:
            self.fail("propagate.from.attribute", f"{type_code} has no attribute {name!r} in its schema.", "unknown")
            return None
        return Source(type_id, ATTRIBUTE_KINDS[kind], attribute=name)

    def check_types(self, p: Propagation) -> None:
        """Does the aggregate fit the source's and the target's value types?"""
        src, dst, agg = p.source.value_type, p.target_value_type, p.aggregate
        field = "propagate.aggregate"

        def need(ok: bool, message: str) -> None:
            if not ok:
                self.fail(field, message, "wrong_type")

        if agg == "count":
            need(dst == "number", f"count gives a number; the tag is {dst}.")
        elif agg in NUMERIC:
            need(src == "number", f"{agg} needs a number source; the source is {src}.")
            need(dst == "number", f"{agg} gives a number; the tag is {dst}.")
        elif agg == "share":
            need(src in CATEGORICAL, f"share counts values of an enum, text, multi-enum or boolean source, not {src}.")
            if p.value is None:
                need(dst == "text", f"share per value gives an object {{value: share}}, kept in a text tag; not {dst}.")
            else:
                need(dst == "number", f"share of one value gives a number; the tag is {dst}.")
        elif agg in ("top_k", "mode"):
            need(src in ("enum", "text", "multi_enum"), f"{agg} ranks enum, text or multi-enum values, not {src}.")
            want = ("multi_enum",) if agg == "top_k" else ("enum", "text")
            need(dst in want, f"{agg} gives {' or '.join(want)}; the tag is {dst}.")
            self.check_options(p)
        elif agg in ("any", "all", "none"):
            need(dst == "boolean", f"{agg} gives true or false; the tag is {dst}.")
            need(
                p.value is not None or src == "boolean",
                f'{agg} of a {src} source needs "value" (the value to look for).',
            )
        elif agg == "copy":
            if p.policy == "all":
                need(dst == "multi_enum", f'copy with policy "all" gathers values into a multi-enum; the tag is {dst}.')
                need(src in ("enum", "multi_enum"), f"copy all gathers enum or multi-enum values, not {src}.")
            else:
                need(src == dst, f"copy keeps the value type: the source is {src}, the tag is {dst}.")
            self.check_options(p)
        if p.weighted and agg not in ("share", "count", "sum", "avg", "top_k", "mode"):
            self.fail("propagate.weighted", f"Weighting applies to share, count, sum, avg, top_k and mode, not {agg}.")

    def check_options(self, p: Propagation) -> None:
        """Carried option values must be options of the target tag (when it has options)."""
        if self.tag.value_type not in ("enum", "multi_enum") or p.source.value_type not in ("enum", "multi_enum"):
            return
        missing = sorted(set(p.source.options) - set(self.tag.options))
        if missing:
            self.fail(
                "propagate.from",
                f'Values of the source are not options of "{self.tag.code}": {", ".join(missing)}.',
                "not_an_option",
            )
