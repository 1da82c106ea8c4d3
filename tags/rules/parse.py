"""Rule documents → typed trees, with every problem reported at its place in the document.

A field like ``rule.cases[1].when.and[0].var`` names the offending node, so the admin
and the API can point at it. Parsing collects as many problems as it can in one pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.errors import ItemError
from tags.services.values import ValueProblem, canonical_value

from . import nodes as n
from .context import KEY_PATTERN, Context, TagInfo, tag_value_type

SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_NODES = 2000
MAX_DEPTH = 40
MAX_DAYS = 36_600
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
ORDERED = (n.NUMBER, n.STRING, n.DATE)


class RuleInvalid(Exception):
    def __init__(self, errors: list[ItemError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Scope:
    subject_type_id: int
    depth: int = 0  # 0: the rule's subject; 1: a related subject
    events: bool = False  # inside an event_agg where: only properties.*


@dataclass
class _Parser:
    tag: TagInfo
    ctx: Context
    errors: list[ItemError] = field(default_factory=list)
    tag_ids: set[int] = field(default_factory=set)
    count: int = 0

    def fail(self, path: str, message: str, code: str = "invalid") -> None:
        self.errors.append(ItemError(None, path, message, code))

    # ---- documents -------------------------------------------------------------
    def document(self, doc: object) -> n.Rule | None:
        if not isinstance(doc, dict):
            self.fail("rule", 'A rule is an object with "cases" (and "default") or "formula".')
            return None
        unknown = set(doc) - {"cases", "default", "formula"}
        if unknown:
            self.fail("rule", f"Unknown key(s): {', '.join(sorted(unknown))}.")
        if "formula" in doc:
            if "cases" in doc or "default" in doc:
                self.fail("rule", 'A rule has either "formula" or "cases", not both.')
            return self.formula(doc["formula"])
        if "cases" not in doc:
            self.fail("rule", 'A rule needs "cases" or "formula".')
            return None
        return self.cases(doc["cases"], doc.get("default"))

    def formula(self, expr: object) -> n.Rule | None:
        if self.tag.value_type != "number":
            self.fail("rule.formula", f"A formula computes a number; this tag's values are {self.tag.value_type}.")
            return None
        node = self.expr(expr, "rule.formula", Scope(self.tag.subject_type_id))
        if node is not None and node.type != n.NUMBER:
            self.fail("rule.formula", f"A formula must be a number expression, not {node.type}.", "wrong_type")
        return n.Rule(formula=node, tag_ids=frozenset(self.tag_ids)) if node is not None else None

    def cases(self, cases: object, default: object) -> n.Rule | None:
        if not isinstance(cases, list) or not cases:
            self.fail("rule.cases", "Expected a non-empty list of cases.")
            return None
        if len(cases) > 200:
            self.fail("rule.cases", "At most 200 cases.")
            return None
        parsed = []
        for i, case in enumerate(cases):
            path = f"rule.cases[{i}]"
            if not isinstance(case, dict) or set(case) != {"when", "then"}:
                self.fail(path, 'Each case is an object with exactly "when" and "then".')
                continue
            when = self.condition(case["when"], f"{path}.when", Scope(self.tag.subject_type_id))
            then = self.value(case["then"], f"{path}.then")
            if when is not None:
                parsed.append(n.Case(when, then))
        default = self.value(default, "rule.default")
        return n.Rule(cases=tuple(parsed), default=default, tag_ids=frozenset(self.tag_ids))

    def value(self, value: object, path: str) -> object:
        try:
            return canonical_value(self.tag.value_type, self.tag.options, value)
        except ValueProblem as problem:
            self.fail(path, str(problem), problem.code)
            return None

    # ---- expressions -----------------------------------------------------------
    def condition(self, expr: object, path: str, scope: Scope) -> n.Node | None:
        return self.condition_at(expr, path, scope, 0)

    def expr(self, expr: object, path: str, scope: Scope, depth: int = 0) -> n.Node | None:
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            if self.count == MAX_NODES + 1 or depth == MAX_DEPTH + 1:
                self.fail(path, "The rule is too large or too deeply nested.", "too_large")
            return None
        if expr is None:
            return n.Lit(None, n.NULL)
        if isinstance(expr, bool):
            return n.Lit(expr, n.BOOLEAN)
        if isinstance(expr, int | float):
            if (isinstance(expr, int) and abs(expr) >= 2**53) or expr != expr or expr in (float("inf"), float("-inf")):
                self.fail(path, "Numbers must be finite and below 2**53.", "out_of_range")
                return None
            return n.Lit(expr, n.NUMBER)
        if isinstance(expr, str):
            if "\x00" in expr or len(expr) > 1000:
                self.fail(path, "Strings must be under 1,000 characters, without NUL.")
                return None
            return n.Lit(expr, n.STRING)
        if isinstance(expr, list):
            self.fail(path, 'A list is only allowed as the second operand of "in".')
            return None
        if not isinstance(expr, dict) or len(expr) != 1:
            self.fail(path, "An operation is an object with exactly one key (the operator).")
            return None
        op, args = next(iter(expr.items()))
        handler = _HANDLERS.get(op)
        if handler is None:
            self.fail(f"{path}.{op}", f'Unknown operator "{op}".', "unknown_operator")
            return None
        return handler(self, op, args, f"{path}.{op}", scope, depth + 1)

    def args(self, op: str, args: object, path: str, arity: tuple[int, int | None]) -> list | None:
        if not isinstance(args, list):
            args = [args]
        low, high = arity
        if len(args) < low or (high is not None and len(args) > high):
            want = f"{low}" if low == high else f"{low} to {high}" if high else f"at least {low}"
            self.fail(path, f'"{op}" takes {want} argument(s), got {len(args)}.', "wrong_arity")
            return None
        return args

    def operands(self, args: list, path: str, scope: Scope, depth: int) -> list[n.Node] | None:
        parsed = [self.expr(a, f"{path}[{i}]", scope, depth) for i, a in enumerate(args)]
        return None if any(p is None for p in parsed) else parsed

    # ---- operators -------------------------------------------------------------
    def var(self, op, args, path, scope, depth):
        if isinstance(args, list) and len(args) == 1:
            args = args[0]
        if not isinstance(args, str):
            self.fail(path, 'A "var" names one value: "attributes.<key>", "tags.<code>" or "properties.<key>".')
            return None
        head, _, rest = args.partition(".")
        if scope.events:
            if head != "properties" or not KEY_PATTERN.match(rest):
                self.fail(path, f'Inside an event "where" only "properties.<key>" can be read, not "{args}".')
                return None
            return n.Prop(rest)
        if head == "attributes":
            return self.attribute(rest, path, scope)
        if head == "tags":
            return self.tag_ref(rest, path, scope)
        self.fail(path, f'Unknown variable "{args}": use "attributes.<key>" or "tags.<code>".', "unknown_variable")
        return None

    def attribute(self, dotted: str, path: str, scope: Scope):
        keys = tuple(dotted.split("."))
        if not all(KEY_PATTERN.match(k) for k in keys):
            self.fail(path, f'"{dotted}" is not an attribute path (letters, digits, underscores, dots).')
            return None
        kind = self.ctx.attribute_type(scope.subject_type_id, keys)
        if kind is None:
            type_code = self.ctx.type_code(scope.subject_type_id)
            self.fail(path, f'Unknown attribute "{dotted}" of subject type "{type_code}".', "unknown_attribute")
            return None
        return n.Attr(keys, kind, scope.depth)

    def tag_ref(self, code: str, path: str, scope: Scope):
        info = self.ctx.tag(scope.subject_type_id, code)
        if info is None:
            type_code = self.ctx.type_code(scope.subject_type_id)
            self.fail(path, f'Unknown tag "{code}" of subject type "{type_code}".', "unknown_tag")
            return None
        if info.id == self.tag.id and scope.depth == 0:
            self.fail(path, f"A rule cannot read its own tag: {code} → {code}.", "cycle")
            return None
        if info.status == "archived":
            self.fail(path, f'Tag "{code}" is archived.', "archived")
            return None
        self.tag_ids.add(info.id)
        return n.TagRef(info.id, code, tag_value_type(info.value_type), scope.depth)

    def compare(self, op, args, path, scope, depth):
        arity = (2, 3) if op in ("<", "<=") else (2, 2)
        args = self.args(op, args, path, arity)
        parsed = args and self.operands(args, path, scope, depth)
        if not parsed:
            return None
        if op in ("==", "!=") and any(isinstance(p, n.Lit) and p.type == n.NULL for p in parsed):
            other = parsed[1] if isinstance(parsed[0], n.Lit) and parsed[0].type == n.NULL else parsed[0]
            if isinstance(other, n.Prop):
                other.type = other.type or n.STRING
            return n.IsNull(other, negate=op == "!=")
        if not self.unify(parsed, path):
            return None
        kinds = {p.type for p in parsed}
        if op not in ("==", "!=") and not kinds <= set(ORDERED):
            self.fail(path, f'"{op}" compares numbers, text or dates, not {"/".join(sorted(kinds))}.', "wrong_type")
            return None
        if kinds & {n.LIST}:
            self.fail(path, 'Compare multi-enum values with "in".', "wrong_type")
            return None
        return n.Cmp(op, tuple(parsed))

    def unify(self, parsed: list[n.Node], path: str) -> bool:
        """Give untyped event properties the type of the other operands; check the types agree."""
        known = [p.type for p in parsed if p.type is not None]
        if not known:
            self.fail(path, "Compare an event property with a literal or a typed value.", "wrong_type")
            return False
        for p in parsed:
            if isinstance(p, n.Prop) and p.type is None:
                p.type = n.DATE if known[0] == n.DATE else known[0]
        groups = {_group(p.type) for p in parsed}
        if len(groups) > 1:
            kinds = ", ".join(p.type for p in parsed)
            self.fail(path, f"The operands have different types ({kinds}).", "wrong_type")
            return False
        return True

    def membership(self, op, args, path, scope, depth):
        args = self.args(op, args, path, (2, 2))
        if not args:
            return None
        needle = self.expr(args[0], f"{path}[0]", scope, depth)
        haystack = args[1]
        if isinstance(haystack, list):
            if not haystack or len(haystack) > 1000:
                self.fail(f"{path}[1]", "Expected a list of 1 to 1,000 values.")
                return None
            items = [self.expr(v, f"{path}[1][{i}]", scope, depth) for i, v in enumerate(haystack)]
            if needle is None or any(not isinstance(i, n.Lit) or i.type == n.NULL for i in items):
                if needle is not None:
                    self.fail(f"{path}[1]", "The list holds literal values (no null, no expressions).")
                return None
            if not self.unify([needle, *items], path):
                return None
            if needle.type == n.LIST:
                self.fail(f"{path}[0]", 'Test one value of a multi-enum with {"in": [value, list]}.', "wrong_type")
                return None
            return n.In(needle, n.ListLit(tuple(i.value for i in items), items[0].type))
        container = self.expr(haystack, f"{path}[1]", scope, depth)
        if needle is None or container is None:
            return None
        if container.type != n.LIST:
            self.fail(f"{path}[1]", 'The second operand of "in" is a list or a multi-enum value.', "wrong_type")
            return None
        if isinstance(needle, n.Prop):
            needle.type = n.STRING
        if needle.type != n.STRING:
            self.fail(f"{path}[0]", "Membership in a multi-enum value tests an option value (text).", "wrong_type")
            return None
        return n.In(needle, container)

    def logic(self, op, args, path, scope, depth):
        arity = (1, 1) if op == "!" else (1, None)
        args = self.args(op, args, path, arity)
        if not args:
            return None
        parsed = [self.condition_at(a, f"{path}[{i}]", scope, depth) for i, a in enumerate(args)]
        if any(p is None for p in parsed):
            return None
        return n.Logic({"and": "and", "or": "or", "!": "not"}[op], tuple(parsed))

    def condition_at(self, expr, path, scope, depth):
        node = self.expr(expr, path, scope, depth)
        if node is None:
            return None
        if isinstance(node, n.Prop):
            node.type = node.type or n.BOOLEAN
        if node.type != n.BOOLEAN:
            self.fail(path, f"Expected a condition (true/false), got a {node.type} expression.", "wrong_type")
            return None
        return n.Truth(node) if isinstance(node, n.Attr | n.TagRef | n.Lit | n.Prop) else node

    def arithmetic(self, op, args, path, scope, depth):
        arity = {"-": (1, 2), "/": (2, 2)}.get(op, (1, 50))
        args = self.args(op, args, path, arity)
        parsed = args and self.operands(args, path, scope, depth)
        if not parsed:
            return None
        for i, p in enumerate(parsed):
            if isinstance(p, n.Prop) and p.type is None:
                p.type = n.NUMBER
            if p.type != n.NUMBER:
                self.fail(f"{path}[{i}]", f'"{op}" works on numbers, not {p.type}.', "wrong_type")
                return None
        return n.Arith(op, tuple(parsed))

    def since(self, op, args, path, scope, depth):
        args = self.args(op, args, path, (1, 1))
        parsed = args and self.operands(args, path, scope, depth)
        if not parsed:
            return None
        arg = parsed[0]
        if isinstance(arg, n.Prop) and arg.type is None:
            arg.type = n.DATE
        if arg.type not in (n.DATE, n.STRING) or (arg.type == n.STRING and not isinstance(arg, n.Lit)):
            self.fail(f"{path}[0]", f'"{op}" needs a date, not {arg.type}.', "wrong_type")
            return None
        return n.Since("years" if op == "years_since" else "days", arg)

    def event_agg(self, op, args, path, scope, depth):
        if scope.depth or scope.events:
            self.fail(path, '"event_agg" reads the rule subject\'s own events; it cannot be nested here.')
            return None
        if not isinstance(args, dict):
            self.fail(path, 'Expected {"type", "fn", "property", "days", "where"}.')
            return None
        unknown = set(args) - {"type", "fn", "property", "days", "where", "as"}
        if unknown:
            self.fail(path, f"Unknown key(s): {', '.join(sorted(unknown))}.")
            return None
        event_type, fn, prop, days = args.get("type"), args.get("fn", "count"), args.get("property"), args.get("days")
        ok = True
        if not isinstance(event_type, str) or not SLUG.match(event_type):
            self.fail(f"{path}.type", "Expected an event type (lower-case letters, digits, underscores).")
            ok = False
        if fn not in n.EVENT_FNS:
            self.fail(
                f"{path}.fn", f'Unknown event function "{fn}"; use one of {", ".join(n.EVENT_FNS)}.', "unknown_fn"
            )
            return None
        if fn == "count" and prop is not None:
            self.fail(f"{path}.property", '"count" counts events; it takes no property.')
            ok = False
        if fn != "count" and (not isinstance(prop, str) or not KEY_PATTERN.match(prop)):
            self.fail(f"{path}.property", f'"{fn}" needs a property key (letters, digits, underscores).')
            ok = False
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_DAYS):
            self.fail(f"{path}.days", f"Expected a whole number of days from 1 to {MAX_DAYS}.")
            ok = False
        as_type = args.get("as", n.NUMBER if fn in n.NUMERIC_FNS else n.STRING)
        if (fn in n.NUMERIC_FNS and as_type != n.NUMBER) or as_type not in (n.NUMBER, n.STRING):
            self.fail(f"{path}.as", '"as" is "number" or "string" ("number" for sum, min, max, avg).')
            ok = False
        where = None
        if "where" in args:
            where = self.condition_at(args["where"], f"{path}.where", Scope(scope.subject_type_id, 0, True), depth)
            ok = ok and where is not None
        if not ok:
            return None
        result = n.NUMBER if fn in ("count", "count_distinct") else as_type
        return n.EventAgg(event_type, fn, n.Prop(prop, as_type) if prop else None, days, where, result)

    def related(self, op, args, path, scope, depth):
        if scope.depth or scope.events:
            self.fail(path, '"related" cannot be nested inside another "related" or an event filter.')
            return None
        if not isinstance(args, dict):
            self.fail(path, 'Expected {"relationship", "direction", "quantifier", "where"}.')
            return None
        unknown = set(args) - {"relationship", "direction", "quantifier", "where"}
        if unknown:
            self.fail(path, f"Unknown key(s): {', '.join(sorted(unknown))}.")
            return None
        code, direction = args.get("relationship"), args.get("direction", "out")
        quantifier = args.get("quantifier", "any")
        info = self.ctx.relationship(code) if isinstance(code, str) else None
        if info is None:
            self.fail(f"{path}.relationship", f'Unknown relationship type "{code}".', "unknown_relationship")
            return None
        if direction not in ("out", "in"):
            self.fail(f"{path}.direction", 'Expected "out" (the subject is the "from" end) or "in".')
            return None
        if quantifier not in n.QUANTIFIERS:
            self.fail(f"{path}.quantifier", f"Expected one of {', '.join(n.QUANTIFIERS)}.")
            return None
        near, far = (info.from_type_id, info.to_type_id) if direction == "out" else (info.to_type_id, info.from_type_id)
        if near != scope.subject_type_id:
            end = "from" if direction == "out" else "to"
            self.fail(
                f"{path}.direction",
                f'Relationship "{code}" has "{self.ctx.type_code(near)}" at its "{end}" end, '
                f'not "{self.ctx.type_code(scope.subject_type_id)}".',
                "wrong_end_type",
            )
            return None
        where = None
        if "where" in args:
            where = self.condition_at(args["where"], f"{path}.where", Scope(far, 1), depth)
            if where is None:
                return None
        kind = n.NUMBER if quantifier == "count" else n.BOOLEAN
        return n.Related(info.id, code, direction, quantifier, where, kind)


def _group(kind: str | None) -> str | None:
    return n.STRING if kind == n.DATE else kind


_HANDLERS = {
    "var": _Parser.var,
    **{op: _Parser.compare for op in COMPARISONS},
    "in": _Parser.membership,
    "and": _Parser.logic,
    "or": _Parser.logic,
    "!": _Parser.logic,
    **{op: _Parser.arithmetic for op in ("+", "-", "*", "/", "min", "max")},
    "years_since": _Parser.since,
    "days_since": _Parser.since,
    "event_agg": _Parser.event_agg,
    "related": _Parser.related,
}


def parse_rule(document: object, *, tag: TagInfo, ctx: Context) -> n.Rule:
    """The typed tree of ``document`` for ``tag``; raises RuleInvalid listing every problem."""
    parser = _Parser(tag, ctx)
    rule = parser.document(document)
    if parser.errors or rule is None:
        raise RuleInvalid(parser.errors or [ItemError(None, "rule", "Invalid rule.")])
    return rule
