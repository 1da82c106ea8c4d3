"""From a record's raw fields to typed, normalized identifiers and composite values.

Pure functions over a :class:`Rules` snapshot (identifier types, composite keys,
blocked values, read once per service call), so ingest costs no query per record
and tests need no database.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import NamedTuple

from .normalize import NORMALIZERS, NormalizeError

MAX_VALUES_PER_FIELD = 20
MAX_COMBINATIONS = 20  # composite values per composite key and record
MAX_VALUE_LENGTH = 512  # Identifier.value: longer values would fail the COPY of the whole batch


@dataclass(frozen=True)
class TypeRule:
    id: int
    code: str
    normalizer: str
    fields: tuple[str, ...]
    strong: bool
    priority: int
    max_per_oneid: int | None
    max_shared_records: int | None
    scoping: str


@dataclass(frozen=True)
class CompositeRule:
    id: int
    code: str
    parts: tuple[int, ...]  # identifier type ids
    priority: int
    max_shared_records: int | None


@dataclass
class Rules:
    types: list[TypeRule]
    composites: list[CompositeRule]
    blocked_exact: dict[int | None, set[str]]
    blocked_patterns: dict[int | None, list[re.Pattern]]
    strategies: dict[str, str] = field(default_factory=dict)  # golden record: attribute -> strategy
    subject_types: dict[int, tuple[str, dict]] = field(default_factory=dict)  # OneID types: id -> (code, schema)
    by_id: dict[int, TypeRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {t.id: t for t in self.types}
        self.by_field: dict[str, list[TypeRule]] = {}
        for t in self.types:
            for name in t.fields:
                self.by_field.setdefault(name, []).append(t)
        # One set and one list of compiled patterns per type (its own and the every-type ones).
        # The patterns stay separate: joined into one alternation, group numbers shift (backreferences
        # silently match something else) and two patterns naming the same group do not compile at all.
        self._blocked: dict[int, Callable[[str], bool]] = {}
        for t in self.types:
            exact = self.blocked_exact.get(t.id, set()) | self.blocked_exact.get(None, set())
            patterns = self.blocked_patterns.get(t.id, []) + self.blocked_patterns.get(None, [])
            self._blocked[t.id] = _blocker(frozenset(exact), patterns)
        self._plans: dict[SourceScope, dict[str, list[tuple]]] = {}

    def is_blocked(self, type_id: int, value: str) -> bool:
        return self._blocked[type_id](value)

    def plan(self, source: SourceScope) -> dict[str, list[tuple]]:
        """Per raw field, what extraction does for records of ``source``, resolved once per
        snapshot: ``(rule, clean, finish, blocked, scope, key prefix, status if not blocked)``."""
        plan = self._plans.get(source)
        if plan is None:
            plan = self._plans[source] = {}
            for name, rules in self.by_field.items():
                for rule in rules:
                    normalizer = NORMALIZERS[rule.normalizer]
                    scope = source.scope_for(rule.scoping)
                    prefix = f"{source.subject_type_id}\x1et{rule.id}\x1e{scope}\x1e".encode()
                    status = "link" if rule.strong else "part"
                    step = (rule, normalizer.clean, normalizer.finish, self._blocked[rule.id], scope, prefix, status)
                    plan.setdefault(name, []).append(step)
        return plan

    def shared_limit(self, type_id: int | None, composite_id: int | None) -> int | None:
        if type_id is not None:
            return self.by_id[type_id].max_shared_records if type_id in self.by_id else None
        for composite in self.composites:
            if composite.id == composite_id:
                return composite.max_shared_records
        return None

    def priority(self, type_id: int | None, composite_id: int | None) -> int:
        if type_id is not None:
            return self.by_id[type_id].priority if type_id in self.by_id else 1000
        return next((c.priority for c in self.composites if c.id == composite_id), 1000)


UNSAFE_TO_JOIN = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|\(\?[aiLmsux]+\)")


def _joined(patterns: list[re.Pattern]) -> re.Pattern | None:
    """One alternation of ``patterns`` when it matches exactly what they match one by one.

    Joining shifts group numbers and merges group names, so a pattern with a backreference,
    a conditional, a named group or inline global flags keeps the one-by-one path.
    """
    if not patterns or len({p.flags for p in patterns}) != 1:
        return None
    if any(p.groupindex or UNSAFE_TO_JOIN.search(p.pattern) for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns), patterns[0].flags)
    except re.error:
        return None


def _blocker(exact: frozenset[str], patterns: list[re.Pattern]) -> Callable[[str], bool]:
    """``value -> blocked?`` for one type: empty, an exact blocked value (case-folded) or a pattern.

    The patterns that can be joined are matched as one alternation; the others one by one."""
    unsafe = [p for p in patterns if _joined([p]) is None]
    joined = _joined([p for p in patterns if p not in unsafe])
    if joined is None and not unsafe:
        return lambda value: not value or value.casefold() in exact
    full = joined.fullmatch if joined is not None else (lambda value: None)
    if not unsafe:
        return lambda value: not value or value.casefold() in exact or full(value) is not None
    return lambda value: (
        not value
        or value.casefold() in exact
        or full(value) is not None
        or any(p.fullmatch(value) is not None for p in unsafe)
    )


def load_rules() -> Rules:
    from subjects.models import SubjectType

    from .models import BlockedValue, CompositeKey, IdentifierType, Linking, SourceSystem, SurvivorshipRule

    types = [
        TypeRule(
            t.id,
            t.code,
            t.normalizer,
            tuple(t.fields),
            t.linking == Linking.STRONG,
            t.priority,
            t.max_per_oneid,
            t.max_shared_records,
            t.scoping,
        )
        for t in IdentifierType.objects.filter(active=True).order_by("priority", "code")
    ]
    ids = {t.code: t.id for t in types}
    composites = [
        CompositeRule(c.id, c.code, tuple(ids[p] for p in c.parts), c.priority, c.max_shared_records)
        for c in CompositeKey.objects.filter(active=True).order_by("priority", "code")
        if all(p in ids for p in c.parts)
    ]
    exact: dict[int | None, set[str]] = {}
    patterns: dict[int | None, list[re.Pattern]] = {}
    for b in BlockedValue.objects.all():
        if b.value:
            exact.setdefault(b.identifier_type_id, set()).add(b.value.casefold())
        else:
            patterns.setdefault(b.identifier_type_id, []).append(re.compile(b.pattern, re.IGNORECASE))
    strategies = dict(SurvivorshipRule.objects.values_list("attribute", "strategy"))
    subject_types = {
        t.id: (t.code, t.attribute_schema)
        for t in SubjectType.objects.filter(id__in=SourceSystem.objects.values("subject_type_id"))
    }
    return Rules(types, composites, exact, patterns, strategies, subject_types)


class Extracted(NamedTuple):
    """One identifier of a record, ready to store (a tuple: ingest makes ~3.4 per record)."""

    type_id: int | None
    composite_id: int | None
    scope: str
    value: str
    key: int
    status: str  # link | part | blocked


@dataclass(frozen=True)
class SourceScope:
    """What a record's source contributes to scoping and keys."""

    code: str
    subject_type_id: int
    app_id: str
    open_platform_id: str

    def scope_for(self, scoping: str) -> str:
        if scoping == "app":
            return f"app:{self.app_id}" if self.app_id else f"source:{self.code}"
        if scoping == "source":
            return f"source:{self.code}"
        if scoping == "open_platform":
            return f"open:{self.open_platform_id}" if self.open_platform_id else f"source:{self.code}"
        return ""


def link_key(subject_type_id: int, namespace: str, scope: str, value: str) -> int:
    """A signed 64-bit digest: the graph node of a value (exact values are kept beside it)."""
    digest = hashlib.blake2b(f"{subject_type_id}\x1e{namespace}\x1e{scope}\x1e{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def extract(
    raw: Mapping, source: SourceScope, rules: Rules, notes: list[dict] | None = None
) -> tuple[list[Extracted], list[tuple[str, str]]]:
    """Identifiers of ``raw`` and the per-field problems ``(field, message)``.

    ``notes`` collects what is not an error but is not used in full (composite
    combinations beyond :data:`MAX_COMBINATIONS`), for the ingest result's warnings.
    """
    out: list[Extracted] = []
    problems: list[tuple[str, str]] = []
    usable: dict[int, list[str]] = {}  # type id -> scoped values, for composite keys
    where_of: dict[str, str] = {}  # scoped value -> the field it came from (a composite too long names it)
    seen: set[int] = set()
    plan = rules.plan(source)
    for name, raw_value in raw.items():
        if raw_value is None:
            continue
        steps = plan.get(name)
        if steps is None:
            continue
        listed = isinstance(raw_value, list)
        values = raw_value if listed else (raw_value,)
        if len(values) > MAX_VALUES_PER_FIELD:
            problems.append((f"raw.{name}", f"at most {MAX_VALUES_PER_FIELD} values"))
            continue
        for rule, clean, finish, blocked, scope, prefix, linking in steps:
            for position, one in enumerate(values):
                try:
                    cleaned = clean(one)
                    if blocked(cleaned):
                        value, status = cleaned, "blocked"
                    else:
                        value = finish(cleaned)
                        status = "blocked" if value != cleaned and blocked(value) else linking
                except NormalizeError as exc:
                    problems.append((f"raw.{name}.{position}" if listed else f"raw.{name}", f"{rule.code} {exc}"))
                    continue
                if len(value) > MAX_VALUE_LENGTH:  # NFKC can lengthen a value that passed its length check
                    where = f"raw.{name}.{position}" if listed else f"raw.{name}"
                    problems.append(
                        (where, f"{rule.code} is longer than {MAX_VALUE_LENGTH} characters once normalized")
                    )
                    continue
                key = int.from_bytes(blake2b(prefix + value.encode(), digest_size=8).digest(), "big", signed=True)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Extracted(rule.id, None, scope, value, key, status))
                if status != "blocked":
                    scoped = f"{scope}\x1d{value}" if scope else value
                    usable.setdefault(rule.id, []).append(scoped)
                    if scoped not in where_of:
                        where_of[scoped] = f"raw.{name}.{position}" if listed else f"raw.{name}"
    for composite in rules.composites:
        if not all(part in usable for part in composite.parts):
            continue
        total = 1
        for part in composite.parts:
            total *= len(usable[part])
        if total > MAX_COMBINATIONS and notes is not None:
            notes.append(
                {
                    "type": composite.code,
                    "value": "",
                    "reason": f"too_many_combinations: {total}, only the first {MAX_COMBINATIONS} are used",
                }
            )
        for combination in itertools.islice(itertools.product(*(usable[p] for p in composite.parts)), MAX_COMBINATIONS):
            value = "\x1f".join(combination)
            if len(value) > MAX_VALUE_LENGTH:
                longest = max(combination, key=len)
                problems.append(
                    (
                        where_of[longest],
                        f"{composite.code} is longer than {MAX_VALUE_LENGTH} characters (all its parts)",
                    )
                )
                break
            key = link_key(source.subject_type_id, f"c{composite.id}", "", value)
            if key not in seen:
                seen.add(key)
                out.append(Extracted(None, composite.id, "", value, key, "link"))
    return out, problems
