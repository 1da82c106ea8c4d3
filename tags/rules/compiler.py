"""Rule trees → one SQL SELECT of ``(subject_id, value)`` for the subjects of a chunk.

The SELECT reads the subject table once, LEFT JOINs one GROUP BY per distinct event
window (type, days, filter) restricted to the chunk, one ``tags_tagvalue`` probe per
tag read, and answers ``related`` quantifiers with EXISTS / COUNT sub-queries on the
relationship indexes. Values are canonical JSON (jsonb on PostgreSQL, JSON text on
SQLite); NULL means "no value".

Values are always bound parameters; attribute and property keys are inlined only
after ``KEY_PATTERN`` validated them (letters, digits, underscores). Conditions are
two-valued — every comparison is ``COALESCE(…, FALSE)`` — so ``!`` of a comparison
with a missing operand is true, exactly as in the Python evaluator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import orjson

from . import nodes as n
from .context import KEY_PATTERN

Frag = tuple[str, list]


@dataclass(frozen=True)
class Selection:
    """The subjects a compiled rule covers: ``ids`` (a list) or ``[low, high)`` of ids."""

    ids: tuple[int, ...] | None = None
    low: int | None = None
    high: int | None = None

    @classmethod
    def of_ids(cls, ids) -> Selection:
        return cls(ids=tuple(sorted(set(ids))))

    @classmethod
    def id_range(cls, low: int, high: int) -> Selection:
        return cls(low=low, high=high)

    @classmethod
    def everything(cls) -> Selection:
        return cls(low=0, high=2**63 - 1)


@dataclass
class _Frame:
    """Where the nodes of one depth read from: the subject alias and its tag joins."""

    subject: str
    joins: list[Frag] = field(default_factory=list)
    tags: dict[int, str] = field(default_factory=dict)


class Compiler:
    def __init__(self, rule: n.Rule, *, vendor: str, subject_type_id: int, now: dt.datetime) -> None:
        self.rule = rule
        self.pg = vendor == "postgresql"
        self.subject_type_id = subject_type_id
        self.now = now
        self.today = now.astimezone(dt.UTC).date()
        self.aliases = 0
        self.selection = Selection.everything()
        self.event_joins: dict[tuple, tuple[str, dict[tuple, str], n.EventAgg]] = {}
        self.lifted: dict[str, tuple[str, Frag]] = {}

    # ---- entry points ---------------------------------------------------------------
    def select(self, selection: Selection) -> Frag:
        """``SELECT subject_id, value`` for the subjects of the rule's type in ``selection``."""
        self.selection = selection
        self.now_param = self.now_param_of(self.now)
        self.event_joins, self.aliases, self.lifted = {}, 0, {}
        main = _Frame("s")
        self.frames = [main]
        value_sql, value_params = self.value()
        event_sql, event_params = self.event_join_sql()
        chunk_sql, chunk_params = self.chunk("s.id")
        joins = "".join(" " + sql for sql, _ in main.joins)
        join_params = [p for _, params in main.joins for p in params]
        lifted_sql, lifted_params = "", []
        if self.lifted:
            columns = ", ".join(f"{frag[0]} AS {column}" for column, frag in self.lifted.values())
            lifted_sql = f" CROSS JOIN LATERAL (SELECT {columns} OFFSET 0) lx"  # OFFSET 0: evaluated once
            lifted_params = [p for _, frag in self.lifted.values() for p in frag[1]]
        sql = (
            f"SELECT s.id AS subject_id, {value_sql} AS value FROM subjects_subject s{event_sql}{joins}{lifted_sql}"
            f" WHERE s.subject_type_id = %s AND {chunk_sql}"
        )
        return sql, [
            *value_params,
            *event_params,
            *join_params,
            *lifted_params,
            self.subject_type_id,
            *chunk_params,
        ]

    def lift(self, node: n.Node, frag: Frag) -> Frag:
        """PostgreSQL: compute a repeated per-subject expression once, in a LATERAL column."""
        if not self.pg or len(self.frames) != 1:
            return frag
        key = repr(node)
        if key not in self.lifted:
            self.lifted[key] = (f"x{len(self.lifted)}", frag)
        return f"lx.{self.lifted[key][0]}", []

    def value(self) -> Frag:
        if self.rule.formula is not None:
            return self.number_json(self.expr(self.rule.formula))
        parts, params = ["CASE"], []
        for case in self.rule.cases:
            when_sql, when_params = self.expr(case.when)
            then_sql, then_params = self.json_literal(case.then)
            parts.append(f"WHEN {when_sql} THEN {then_sql}")
            params += [*when_params, *then_params]
        default_sql, default_params = self.json_literal(self.rule.default)
        parts.append(f"ELSE {default_sql} END")
        return " ".join(parts), [*params, *default_params]

    # ---- helpers ---------------------------------------------------------------------
    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    def json_literal(self, value: object) -> Frag:
        if value is None:
            return ("NULL::jsonb" if self.pg else "NULL"), []
        return ("%s::jsonb" if self.pg else "%s"), [orjson.dumps(value).decode()]

    def number_json(self, frag: Frag) -> Frag:
        sql, params = frag
        if self.pg:
            return f"to_jsonb({sql})", params
        canon = "CASE WHEN x = CAST(x AS INTEGER) AND abs(x) < 9007199254740992.0 THEN CAST(x AS INTEGER) ELSE x END"
        return f"(SELECT CASE WHEN x IS NULL THEN NULL ELSE json_quote({canon}) END FROM (SELECT {sql} AS x))", params

    def chunk(self, column: str) -> Frag:
        sel = self.selection
        if sel.ids is not None:
            if self.pg:
                return f"{column} = ANY(%s::bigint[])", [list(sel.ids)]
            return f"{column} IN (SELECT value FROM json_each(%s))", [orjson.dumps(list(sel.ids)).decode()]
        return f"{column} >= %s AND {column} < %s", [sel.low, sel.high]

    def literal(self, value: object, kind: str) -> Frag:
        if self.pg:
            cast = {n.NUMBER: "float8", n.BOOLEAN: "boolean"}.get(kind, "text")
            return f"%s::{cast}", [value]
        return "%s", [value]

    def typed_json(self, base: str, keys: tuple[str, ...], kind: str) -> Frag:
        """The value at ``keys`` of the JSON column ``base`` if it has the JSON type of ``kind``, else NULL."""
        assert all(KEY_PATTERN.match(k) for k in keys)
        if self.pg:
            j = base + "".join(f" -> '{k}'" for k in keys)
            t = f"jsonb_typeof({j})"
            return {
                n.NUMBER: f"CASE WHEN {t} = 'number' THEN ({j})::float8 END",
                n.STRING: f"CASE WHEN {t} = 'string' THEN ({j}) #>> '{{}}' END",
                n.DATE: f"CASE WHEN {t} = 'string' THEN ({j}) #>> '{{}}' END",
                n.BOOLEAN: f"CASE WHEN {t} = 'boolean' THEN ({j})::boolean END",
                n.LIST: f"CASE WHEN {t} = 'array' THEN {j} END",
            }[kind], []
        path = "$" + "".join(f".{k}" for k in keys)
        t = f"json_type({base}, '{path}')"
        x = f"json_extract({base}, '{path}')"
        return {
            n.NUMBER: f"CASE WHEN {t} IN ('integer', 'real') THEN {x} END",
            n.STRING: f"CASE WHEN {t} = 'text' THEN {x} END",
            n.DATE: f"CASE WHEN {t} = 'text' THEN {x} END",
            n.BOOLEAN: f"CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END",
            n.LIST: f"CASE WHEN {t} = 'array' THEN {x} END",
        }[kind], []

    # ---- expressions -----------------------------------------------------------------
    def expr(self, node: n.Node) -> Frag:
        method = getattr(self, "c_" + type(node).__name__.lower())
        return method(node)

    def c_lit(self, node: n.Lit) -> Frag:
        if node.value is None:
            return "NULL", []
        return self.literal(node.value, node.type)

    def c_attr(self, node: n.Attr) -> Frag:
        return self.typed_json(f"{self.frames[node.depth].subject}.attributes", node.path, node.type)

    def c_tagref(self, node: n.TagRef) -> Frag:
        frame = self.frames[node.depth]
        alias = frame.tags.get(node.tag_id)
        if alias is None:
            alias = frame.tags[node.tag_id] = self.alias("tv")
            frame.joins.append(
                (
                    f"LEFT JOIN tags_tagvalue {alias} ON {alias}.tag_id = %s AND {alias}.subject_id = {frame.subject}.id",
                    [node.tag_id],
                )
            )
        return self.typed_json(f"{alias}.value", (), node.type)

    def c_prop(self, node: n.Prop) -> Frag:
        return self.typed_json("e.properties", (node.key,), node.type or n.STRING)

    def c_isnull(self, node: n.IsNull) -> Frag:
        sql, params = self.expr(node.arg)
        return f"(({sql}) IS {'NOT ' if node.negate else ''}NULL)", params

    def c_cmp(self, node: n.Cmp) -> Frag:
        frags = [self.expr(a) for a in node.args]
        op = "<>" if node.op == "!=" else "=" if node.op == "==" else node.op
        collate = ' COLLATE "C"' if self.pg and node.op not in ("==", "!=") and node.args[0].type != n.NUMBER else ""
        text = [f"({sql}){collate}" for sql, _ in frags]
        params = [p for _, ps in frags for p in ps]
        if len(frags) == 3:
            between = f"{text[0]} {op} {text[1]} AND {text[1]} {op} {text[2]}"
            return f"COALESCE(({between}), FALSE)", [*frags[0][1], *frags[1][1], *frags[1][1], *frags[2][1]]
        return f"COALESCE(({text[0]} {op} {text[1]}), FALSE)", params

    def c_in(self, node: n.In) -> Frag:
        needle_sql, needle_params = self.expr(node.needle)
        if isinstance(node.haystack, n.ListLit):
            values = list(node.haystack.values)
            if self.pg:
                cast = {n.NUMBER: "float8", n.BOOLEAN: "boolean"}.get(node.haystack.item_type, "text")
                return f"COALESCE(({needle_sql}) = ANY(%s::{cast}[]), FALSE)", [*needle_params, values]
            return (
                f"COALESCE(({needle_sql}) IN (SELECT value FROM json_each(%s)), FALSE)",
                [*needle_params, orjson.dumps(values).decode()],
            )
        list_sql, list_params = self.expr(node.haystack)
        if self.pg:
            return f"COALESCE(({list_sql}) @> jsonb_build_array({needle_sql}), FALSE)", [*list_params, *needle_params]
        return (
            f"EXISTS (SELECT 1 FROM json_each({list_sql}) m WHERE m.value = ({needle_sql}))",
            [*list_params, *needle_params],
        )

    def c_logic(self, node: n.Logic) -> Frag:
        frags = [self.expr(a) for a in node.args]
        params = [p for _, ps in frags for p in ps]
        if node.op == "not":
            return f"(NOT {frags[0][0]})", params
        return "(" + f" {node.op.upper()} ".join(sql for sql, _ in frags) + ")", params

    def c_truth(self, node: n.Truth) -> Frag:
        sql, params = self.expr(node.arg)
        if not self.pg:
            return f"COALESCE(({sql}) = 1, FALSE)", params
        return f"COALESCE(({sql}), FALSE)", params

    def c_arith(self, node: n.Arith) -> Frag:
        frags = [self.expr(a) for a in node.args]
        params = [p for _, ps in frags for p in ps]
        sqls = [f"({sql})" for sql, _ in frags]
        if node.op in ("min", "max"):
            if len(frags) == 1:
                return sqls[0], params
            fn = ("LEAST" if node.op == "min" else "GREATEST") if self.pg else node.op
            any_null = " OR ".join(f"{s} IS NULL" for s in sqls)
            return f"(CASE WHEN {any_null} THEN NULL ELSE {fn}({', '.join(sqls)}) END)", [*params, *params]
        if node.op == "-" and len(frags) == 1:
            return f"(- {sqls[0]})", params
        if node.op == "/":
            numerator = sqls[0] if self.pg else f"CAST({sqls[0]} AS REAL)"
            return f"({numerator} / NULLIF({sqls[1]}, 0))", params
        if not self.pg:
            sqls = [f"CAST({sqls[0]} AS REAL)", *sqls[1:]] if node.op == "*" else sqls
        return "(" + f" {node.op} ".join(sqls) + ")", params

    def c_since(self, node: n.Since) -> Frag:
        return self.lift(node, self.since(node))

    def since(self, node: n.Since) -> Frag:
        if self.pg and isinstance(node.arg, n.Attr):
            # Text of any JSON type is fine here: only the YYYY-MM-DD shape passes the check below.
            keys = node.arg.path
            assert all(KEY_PATTERN.match(k) for k in keys)
            base = f"{self.frames[node.arg.depth].subject}.attributes"
            d, params = base + "".join(f" -> '{k}'" for k in keys[:-1]) + f" ->> '{keys[-1]}'", []
        else:
            d, params = self.expr(node.arg)
        if node.unit == "years":
            today = self.today.year * 10000 + self.today.month * 100 + self.today.day
            if self.pg:
                shape = f"translate(({d}), '123456789', '000000000') = '0000-00-00'"
                ymd = f"CASE WHEN {shape} THEN replace(({d}), '-', '')::int END"
            else:
                glob = "[0-9]" * 4 + "-[0-9][0-9]-[0-9][0-9]"
                ymd = f"CASE WHEN ({d}) GLOB '{glob}' THEN CAST(replace(({d}), '-', '') AS INTEGER) END"
            if self.pg:
                return f"floor((%s - ({ymd}))::float8 / 10000)", [today, *params, *params]
            floor = "CASE WHEN y >= 0 THEN y / 10000 ELSE -((9999 - y) / 10000) END"
            return f"(SELECT {floor} FROM (SELECT (%s - ({ymd})) AS y) ys)", [today, *params, *params]
        if self.pg:
            valid = f"({d}) ~ '^[0-9]{{4}}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' AND substr(({d}), 1, 4) <> '0000'"
            fits = (
                f"substr(({d}), 9, 2)::int <= extract(day from date_trunc('month', (substr(({d}), 1, 7) || '-01')::date)"
                " + interval '1 month - 1 day')"
            )
            sql = f"CASE WHEN {valid} THEN CASE WHEN {fits} THEN (%s::date - ({d})::date)::float8 END END"
            return sql, [*params, *params, *params, *params, self.today.isoformat(), *params]
        glob = "[0-9]" * 4 + "-[0-9][0-9]-[0-9][0-9]"
        valid = f"({d}) GLOB '{glob}' AND date(({d}), '+0 days') = ({d}) AND substr(({d}), 1, 4) <> '0000'"
        sql = f"CASE WHEN {valid} THEN CAST(julianday(%s) - julianday({d}) AS INTEGER) END"
        return sql, [*params, *params, *params, *params, self.today.isoformat(), *params]

    # ---- events ----------------------------------------------------------------------
    def window(self, node: n.EventAgg) -> Frag:
        sql, params = "e.type = %s AND e.occurred_at <= %s", [node.event_type, self.now_param]
        if node.days is not None:
            start = self.now - dt.timedelta(days=node.days)
            sql += " AND e.occurred_at > %s"
            params.append(self.now_param_of(start))
        if node.where is not None:
            where_sql, where_params = self.expr(node.where)
            sql += f" AND {where_sql}"
            params += where_params
        return sql, params

    def now_param_of(self, moment: dt.datetime):
        from django.db import connection

        from tags.models import Event

        return Event._meta.get_field("occurred_at").get_db_prep_value(moment, connection)

    def c_eventagg(self, node: n.EventAgg) -> Frag:
        if node.fn in n.PICK_FNS:
            return self.picked(node)
        spec = node.spec()
        if spec not in self.event_joins:
            self.event_joins[spec] = (self.alias("ea"), {}, node)
        alias, columns, _ = self.event_joins[spec]
        key = (node.fn, node.prop.key if node.prop else None, node.prop.type if node.prop else None)
        if key not in columns:
            columns[key] = f"a{len(columns)}"
        column = f"{alias}.{columns[key]}"
        if node.fn in ("count", "count_distinct", "sum"):
            column = f"COALESCE({column}, 0)"
        return (f"({column})::float8" if self.pg else column), []

    def event_join_sql(self) -> Frag:
        parts, params = [], []
        for alias, columns, node in self.event_joins.values():
            selects = []
            for (fn, key, kind), column in columns.items():
                value = self.typed_json("e.properties", (key,), kind)[0] if key else None
                agg = {
                    "count": "COUNT(*)",
                    "count_distinct": f"COUNT(DISTINCT {value})",
                    "sum": f"SUM({value})",
                    "min": f"MIN({value})",
                    "max": f"MAX({value})",
                    "avg": f"AVG({value})",
                }[fn]
                selects.append(f"{agg} AS {column}")
            window_sql, window_params = self.window(node)
            chunk_sql, chunk_params = self.chunk("e.subject_id")
            parts.append(
                f" LEFT JOIN (SELECT e.subject_id, {', '.join(selects)} FROM tags_event e"
                f" WHERE {chunk_sql} AND {window_sql} GROUP BY e.subject_id) {alias} ON {alias}.subject_id = s.id"
            )
            params += [*chunk_params, *window_params]
        return "".join(parts), params

    def picked(self, node: n.EventAgg) -> Frag:
        """first / last / mode: a correlated probe of the (subject, type, occurred_at) index per subject."""
        value, _ = self.typed_json("e.properties", (node.prop.key,), node.prop.type)
        window_sql, window_params = self.window(node)
        base = f"FROM tags_event e WHERE e.subject_id = s.id AND {window_sql} AND ({value}) IS NOT NULL"
        collate = ' COLLATE "C"' if self.pg and node.prop.type == n.STRING else ""
        if node.fn == "mode":
            sql = f"(SELECT ({value}) AS v {base} GROUP BY 1 ORDER BY COUNT(*) DESC, ({value}){collate} LIMIT 1)"
        else:
            order = "" if node.fn == "first" else " DESC"
            sql = f"(SELECT {value} {base} ORDER BY e.occurred_at{order}, e.id{order} LIMIT 1)"
        return sql, window_params

    # ---- relationships ---------------------------------------------------------------
    def c_related(self, node: n.Related) -> Frag:
        near, far = ("from_subject_id", "to_subject_id")
        if node.direction == "in":
            near, far = far, near
        rel, other = self.alias("rel"), self.alias("o")
        frame = _Frame(other)
        self.frames.append(frame)
        try:
            cond_sql, cond_params = self.expr(node.where) if node.where is not None else ("TRUE", [])
        finally:
            self.frames.pop()
        joins = "".join(" " + sql for sql, _ in frame.joins)
        join_params = [p for _, ps in frame.joins for p in ps]
        body = (
            f"FROM subjects_relationship {rel} JOIN subjects_subject {other} ON {other}.id = {rel}.{far}{joins}"
            f" WHERE {rel}.{near} = s.id AND {rel}.relationship_type_id = %s"
            f" AND ({rel}.valid_from IS NULL OR {rel}.valid_from <= %s)"
            f" AND ({rel}.valid_to IS NULL OR {rel}.valid_to > %s)"
        )
        params = [*join_params, node.relationship_type_id, self.now_param, self.now_param]
        if node.quantifier == "count":
            cast = "::float8" if self.pg else ""
            return f"(SELECT COUNT(*) {body} AND {cond_sql}){cast}", [*params, *cond_params]
        if node.quantifier == "any":
            return f"EXISTS (SELECT 1 {body} AND {cond_sql})", [*params, *cond_params]
        if node.quantifier == "none":
            return f"(NOT EXISTS (SELECT 1 {body} AND {cond_sql}))", [*params, *cond_params]
        return f"(NOT EXISTS (SELECT 1 {body} AND NOT {cond_sql}))", [*params, *cond_params]
