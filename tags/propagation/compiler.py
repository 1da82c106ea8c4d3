"""Propagations → one SELECT of ``(subject_id, value)`` over a chunk of target subjects.

The walk starts at the chunk's targets and joins the path's relationship types
backwards to the source subjects: a chain of joins on integer keys, each on the
``(to_subject, type)`` / ``(from_subject, type)`` indexes. What arrives is reduced
to distinct *(target, source)* pairs (a member who visited a clinic twice counts
once; ``weighted`` sums the product of the weights along every path instead), the
source values are joined in, and one GROUP BY per target aggregates them. Roll-up
and push-down are the same statement walked in opposite directions.

Every target of the chunk is in the result — with NULL when nothing arrives — so
the guarded writer removes values that lost their inputs. Values are canonical
JSON (jsonb on PostgreSQL, JSON text on SQLite); numbers are rounded to 6 decimal
places so sums of floats do not flap between the incremental and the full path.
"""

from __future__ import annotations

import datetime as dt

import orjson

from tags.rules.compiler import Selection

from .document import Propagation, Step

Frag = tuple[str, list]
DECIMALS = 6


def _ends(step: Step) -> tuple[str, str]:
    """(near, far): the relationship column towards the target, and towards the source."""
    return step.end_column, step.start_column


class PropagationCompiler:
    def __init__(self, prop: Propagation, *, vendor: str, now: dt.datetime) -> None:
        self.p = prop
        self.pg = vendor == "postgresql"
        self.now = now
        self.probe_sources = True
        # PostgreSQL, a tag source and a decomposable aggregate: values come from per-target
        # state (tags.propagation.state), whose sums are exact numerics.
        from .state import maintained

        self.exact = self.pg and maintained(prop)

    # ---- parameters -------------------------------------------------------------------
    def moment(self, value: dt.datetime):
        from django.db import connection

        from subjects.models import Relationship

        return Relationship._meta.get_field("valid_from").get_db_prep_value(value, connection)

    def ids_in(self, column: str, selection: Selection) -> Frag:
        if selection.ids is not None:
            if self.pg:
                return f"{column} = ANY(%s::bigint[])", [list(selection.ids)]
            return f"{column} IN (SELECT value FROM json_each(%s))", [orjson.dumps(list(selection.ids)).decode()]
        return f"{column} >= %s AND {column} < %s", [selection.low, selection.high]

    def equals(self, column: str, key: str, value: object) -> Frag:
        """``column`` (a JSON object) has ``key`` equal to ``value``."""
        if self.pg:
            return f"({column} -> '{key}') = %s::jsonb", [orjson.dumps(value).decode()]
        if isinstance(value, bool):
            return f"json_type({column}, '$.{key}') = %s", ["true" if value else "false"]
        return f"json_extract({column}, '$.{key}') = %s", [value]

    # ---- the walk ---------------------------------------------------------------------
    def reach(self, selection: Selection) -> Frag:
        """``(target_id, source_id, w, at, rid)`` for every path from a chunk target to a source."""
        steps = list(reversed(self.p.steps))
        now = self.moment(self.now)
        joins, conds, params = [], [], []
        weight = []
        for i, step in enumerate(steps):
            near = _ends(step)[0]
            alias = f"r{i}"
            on = f"{alias}.relationship_type_id = %s"
            on_params: list = [step.relationship_type_id]
            if i:
                on = f"{alias}.{near} = r{i - 1}.{_ends(steps[i - 1])[1]} AND {on}"
            for cond, cond_params in self.step_filters(alias, step, now):
                on += f" AND {cond}"
                on_params += cond_params
            if i == 0:
                conds.append(on)
                params_first = on_params
            else:
                joins.append((f"JOIN subjects_relationship {alias} ON {on}", on_params))
            weight.append(f"{alias}.weight")
        first_near = _ends(steps[0])[0]
        last_far = f"r{len(steps) - 1}.{_ends(steps[-1])[1]}"
        chunk_sql, chunk_params = self.ids_in(f"r0.{first_near}", selection)
        params = [*params_first, *chunk_params]
        join_sql = " ".join(sql for sql, _ in joins)
        join_params = [p for _, ps in joins for p in ps]
        at = "COALESCE(r0.valid_from, r0.created_at)"
        w = " * ".join(weight)
        if self.exact:  # state-maintained: exact sums, equal whichever way they are added up
            w = f"({w})::numeric"
        sql = (
            f"SELECT r0.{first_near} AS target_id, {last_far} AS source_id, {w} AS w,"
            f" {at} AS at, r0.id AS rid FROM subjects_relationship r0 {join_sql}"
            f" WHERE {conds[0]} AND {chunk_sql}"
        )
        return sql, [*join_params, *params]

    def reach_from_sources(self, sources: Selection) -> Frag:
        """``reach`` bounded at the source end: the paths a few changed sources take (deltas).

        Walked from the sources towards the targets, each further step a LATERAL index probe
        (``OFFSET 0``): the planner, estimating a join of a few rows with a type of thousands,
        otherwise merge-joins a whole index of the relationship table.
        """
        steps = list(reversed(self.p.steps))  # r0 ends at the target, r{last} starts at the source
        now = self.moment(self.now)
        last = len(steps) - 1
        cols = "id, weight, valid_from, valid_to, created_at, attributes, from_subject_id, to_subject_id, subject_id"
        where = [(f"r{last}.relationship_type_id = %s", [steps[last].relationship_type_id])]
        where += self.step_filters(f"r{last}", steps[last], now)
        where.append(self.ids_in(f"r{last}.{_ends(steps[last])[1]}", sources))
        joins: list[Frag] = []
        for i in range(last - 1, -1, -1):
            alias, step = f"r{i}", steps[i]
            conds = [
                (f"{alias}.{_ends(step)[1]} = r{i + 1}.{_ends(steps[i + 1])[0]}", []),
                (f"{alias}.relationship_type_id = %s", [step.relationship_type_id]),
                *self.step_filters(alias, step, now),
            ]
            inner = " AND ".join(sql for sql, _ in conds)
            joins.append(
                (
                    f"CROSS JOIN LATERAL (SELECT {cols} FROM subjects_relationship {alias} WHERE {inner} OFFSET 0) {alias}",
                    [x for _, ps in conds for x in ps],
                )
            )
        w = " * ".join(f"r{i}.weight" for i in range(len(steps)))
        if self.exact:
            w = f"({w})::numeric"
        sql = (
            f"SELECT r0.{_ends(steps[0])[0]} AS target_id, r{last}.{_ends(steps[last])[1]} AS source_id, {w} AS w,"
            f" COALESCE(r0.valid_from, r0.created_at) AS at, r0.id AS rid FROM subjects_relationship r{last}"
            f" {' '.join(sql for sql, _ in joins)} WHERE {' AND '.join(sql for sql, _ in where)}"
        )
        return sql, [*(x for _, ps in joins for x in ps), *(x for _, ps in where for x in ps)]

    def step_filters(self, alias: str, step: Step, now) -> list[Frag]:
        filters: list[Frag] = []
        if self.p.valid_now:
            filters.append(
                (
                    f"({alias}.valid_from IS NULL OR {alias}.valid_from <= %s)"
                    f" AND ({alias}.valid_to IS NULL OR {alias}.valid_to > %s)",
                    [now, now],
                )
            )
        if step.within_days is not None:
            start = self.moment(self.now - dt.timedelta(days=step.within_days))
            filters.append((f"COALESCE({alias}.valid_from, {alias}.created_at) > %s", [start]))
        for key, value in step.where:
            filters.append(self.equals(f"{alias}.attributes", key, value))
        return filters

    def pairs(self, selection: Selection, sources: Selection | None = None) -> Frag:
        """Distinct (target, source) with the summed path weight and the latest relationship."""
        reach_sql, params = self.reach(selection) if sources is None else self.reach_from_sources(sources)
        if self.p.aggregate == "copy" and self.p.policy == "most_recent":
            # the latest relationship decides: its path's row, no pairs needed (nor their grouping)
            return f"SELECT target_id, source_id, w, at, rid FROM ({reach_sql}) reach", params
        if self.p.weighted or self.p.aggregate == "copy":
            sql = (
                "SELECT target_id, source_id, SUM(w) AS w, MAX(at) AS at, MAX(rid) AS rid"
                f" FROM ({reach_sql}) reach GROUP BY target_id, source_id"
            )
        else:  # only the pairs matter: a plain DISTINCT, as one would write it by hand
            sql = (
                "SELECT target_id, source_id, 1 AS w, NULL AS at, NULL AS rid"
                f" FROM (SELECT DISTINCT target_id, source_id FROM ({reach_sql}) reach) d"
            )
        return sql, params

    # ---- source values ----------------------------------------------------------------
    def source_join(self) -> Frag:
        """Join clause giving ``src_value`` (JSON) for pair ``p``; inner: pairs without a value drop out."""
        src = self.p.source
        where_sql, where_params = "", []
        if self.p.where or src.attribute:
            where = [self.equals("ss.attributes", k, v) for k, v in self.p.where]
            where_sql = "".join(f" AND {sql}" for sql, _ in where)
            where_params = [x for _, ps in where for x in ps]
        if src.tag_id is not None:
            if self.pg and self.probe_sources:
                # Incremental (a list of ids): one (tag, subject) index probe per pair, whatever
                # the statistics say — a source tag that just gained its values is estimated at
                # "no rows", and a planner that believes it puts it outside a nested loop over
                # all pairs. Full chunks use a plain join (a hash join) on fresh statistics.
                sql = (
                    "CROSS JOIN LATERAL (SELECT x.value FROM tags_tagvalue x"
                    " WHERE x.tag_id = %s AND x.subject_id = p.source_id OFFSET 0) sv"
                )
            else:
                sql = "JOIN tags_tagvalue sv ON sv.tag_id = %s AND sv.subject_id = p.source_id"
            params: list = [src.tag_id]
            if where_sql:
                sql += f" JOIN subjects_subject ss ON ss.id = p.source_id{where_sql}"
                params += where_params
            return sql, params
        return f"JOIN subjects_subject ss ON ss.id = p.source_id{where_sql}", where_params

    def raw_value(self) -> str:
        """The source value as JSON (jsonb / JSON text), NULL when absent or of the wrong JSON type."""
        src = self.p.source
        if src.tag_id is not None:
            return "sv.value"
        key = src.attribute
        json_type = {"number": "number", "boolean": "boolean", "multi_enum": "array"}.get(src.value_type, "string")
        if self.pg:
            return f"CASE WHEN jsonb_typeof(ss.attributes -> '{key}') = '{json_type}' THEN ss.attributes -> '{key}' END"
        lite = {"number": "('integer', 'real')", "boolean": "('true', 'false')", "array": "('array')"}
        kinds = lite.get(json_type, "('text')")
        return f"CASE WHEN json_type(ss.attributes, '$.{key}') IN {kinds} THEN ss.attributes -> '$.{key}' END"

    def scalar(self, raw: str) -> str:
        """A SQL scalar of the source value: float, boolean or text."""
        kind = self.p.source.value_type
        if self.pg:
            if kind == "number":
                return f"({raw})::numeric" if self.exact else f"({raw})::float8"
            if kind == "boolean":
                return f"({raw})::boolean"
            return f"(({raw}) #>> '{{}}')"
        if kind == "boolean":
            return f"(CASE json_type({raw}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
        return f"json_extract({raw}, '$')"

    def values(self, selection: Selection, *, elements: bool) -> Frag:
        """``(target_id, source_id, w, at, rid, raw, v)``; with ``elements`` a multi-enum gives one row per item."""
        pairs_sql, pairs_params = self.pairs(selection)
        join_sql, join_params = self.source_join()
        raw = self.raw_value()
        multi = self.p.source.value_type == "multi_enum"
        if elements and multi:
            if self.pg:
                item = f"jsonb_array_elements_text({raw})"
                sql = (
                    f"SELECT p.target_id, p.source_id, p.w, p.at, p.rid, NULL::jsonb AS raw, x.v"
                    f" FROM ({pairs_sql}) p {join_sql} CROSS JOIN LATERAL {item} AS x(v)"
                )
            else:
                sql = (
                    f"SELECT p.target_id, p.source_id, p.w, p.at, p.rid, NULL AS raw, x.value AS v"
                    f" FROM ({pairs_sql}) p {join_sql}, json_each({raw}) x"
                )
            return sql, [*pairs_params, *join_params]
        v = "NULL" if multi else self.scalar("raw")
        inner = f"SELECT p.target_id, p.source_id, p.w, p.at, p.rid, {raw} AS raw FROM ({pairs_sql}) p {join_sql}"
        sql = f"SELECT q.*, {v} AS v FROM ({inner}) q WHERE q.raw IS NOT NULL"
        return sql, [*pairs_params, *join_params]

    # ---- canonical JSON -----------------------------------------------------------------
    def number(self, expr: str) -> str:
        if self.pg:
            return f"to_jsonb(round(({expr})::numeric, {DECIMALS})::float8)"
        x = f"round({expr}, {DECIMALS})"
        canon = f"CASE WHEN {x} = CAST({x} AS INTEGER) AND abs({x}) < 9007199254740992.0 THEN CAST({x} AS INTEGER) ELSE {x} END"
        return f"(CASE WHEN ({expr}) IS NULL THEN NULL ELSE json_quote({canon}) END)"

    def boolean(self, expr: str) -> str:
        if self.pg:
            return f"to_jsonb({expr})"
        return f"(CASE WHEN ({expr}) IS NULL THEN NULL WHEN ({expr}) THEN json('true') ELSE json('false') END)"

    def text(self, expr: str) -> str:
        return f"to_jsonb(({expr})::text)" if self.pg else f"json_quote({expr})"

    def weight(self) -> str:
        return "w" if self.p.weighted else "1"

    def matches(self) -> Frag:
        """Does a value row match ``value`` (or, for a boolean source without one, is it true)?"""
        value = self.p.value
        if value is None:
            return ("v" if self.pg else "(v = 1)"), []
        if self.p.source.value_type == "multi_enum":
            if self.pg:
                return "(raw @> jsonb_build_array(%s::text))", [value]
            return "EXISTS (SELECT 1 FROM json_each(raw) m WHERE m.value = %s)", [value]
        if self.pg:
            return "(raw = %s::jsonb)", [orjson.dumps(value).decode()]
        return "(json_extract(raw, '$') IS json_extract(%s, '$'))", [orjson.dumps(value).decode()]

    # ---- aggregates ---------------------------------------------------------------------
    def aggregated(self, selection: Selection) -> Frag:
        """``(target_id, value)`` for the chunk's targets that something reached."""
        if self.exact:
            from .state import StateSql

            return StateSql(self).computed(selection)
        agg = self.p.aggregate
        method = {
            "share": self.a_share,
            "top_k": self.a_ranked,
            "mode": self.a_ranked,
            "copy": self.a_copy,
        }.get(agg, self.a_simple)
        return method(selection)

    def grouped(self, vals: str, expr: str, kind: str) -> str:
        """Aggregate ``expr`` per target in an inner query, canonical JSON outside (no repeated params)."""
        outer = self.number("n") if kind == "number" else self.boolean("n")
        inner = f"SELECT target_id, {expr} AS n FROM ({vals}) vals GROUP BY target_id"
        return f"SELECT target_id, {outer} AS value FROM ({inner}) g"

    def a_simple(self, selection: Selection) -> Frag:
        vals, params = self.values(selection, elements=False)
        w, agg = self.weight(), self.p.aggregate
        numeric = {
            "count": f"SUM({w})",
            "sum": f"SUM({w} * v)",
            "avg": f"SUM({w} * v) * 1.0 / SUM({w})",
            "min": "MIN(v)",
            "max": "MAX(v)",
        }
        if agg in numeric:
            return self.grouped(vals, numeric[agg], "number"), params
        match, match_params = self.matches()  # any / all / none
        if self.pg:
            fn = {"any": "bool_or", "all": "bool_and", "none": "NOT bool_or"}[agg]
            expr = f"{fn}(COALESCE({match}, FALSE))"
        else:
            hit = f"MAX(CASE WHEN {match} THEN 1 ELSE 0 END)"
            every = f"MIN(CASE WHEN {match} THEN 1 ELSE 0 END) = 1"
            expr = {"any": f"{hit} = 1", "none": f"{hit} = 0", "all": every}[agg]
        return self.grouped(vals, expr, "boolean"), [*match_params, *params]

    def a_share(self, selection: Selection) -> Frag:
        w = self.weight()
        if self.p.value is not None:
            vals, params = self.values(selection, elements=False)
            match, match_params = self.matches()
            share = f"SUM(CASE WHEN {match} THEN {w} ELSE 0 END) * 1.0 / SUM({w})"
            return self.grouped(vals, share, "number"), [*match_params, *params]
        if self.p.source.value_type != "multi_enum":
            return self.share_by_window(selection)
        elements, element_params = self.values(selection, elements=True)
        totals, total_params = self.values(selection, elements=False)
        share = (
            f"ROUND(n::numeric / t.total::numeric, {DECIMALS})::float8"
            if self.pg
            else f"round(n * 1.0 / t.total, {DECIMALS})"
        )
        per_value = (
            f"SELECT e.target_id, e.v, SUM({'e.w' if self.p.weighted else '1'}) AS n FROM ({elements}) e"
            f" GROUP BY e.target_id, e.v"
        )
        total = f"SELECT target_id, SUM({w}) AS total FROM ({totals}) tv GROUP BY target_id"
        shares = (
            f"SELECT pv.target_id, pv.v, {share} AS share FROM ({per_value}) pv"
            f" JOIN ({total}) t ON t.target_id = pv.target_id"
        )
        if self.pg:
            obj = "jsonb_object_agg(v, share)"
            sql = f"SELECT target_id, {obj} AS value FROM ({shares}) s GROUP BY target_id"
        else:
            sql = (
                "SELECT target_id, json_group_object(v, share) AS value"
                f" FROM (SELECT * FROM ({shares}) s ORDER BY target_id, v) s GROUP BY target_id"
            )
        return sql, [*element_params, *total_params]

    def share_by_window(self, selection: Selection) -> Frag:
        """One value per source: count per (target, value) and divide by the target's total (a window)."""
        vals, params = self.values(selection, elements=False)
        w = "w" if self.p.weighted else "1"
        total = "SUM(n) OVER (PARTITION BY target_id)"
        share = (
            f"ROUND(n::numeric / ({total})::numeric, {DECIMALS})::float8"
            if self.pg
            else f"round(n * 1.0 / ({total}), {DECIMALS})"
        )
        per_value = f"SELECT target_id, v, SUM({w}) AS n FROM ({vals}) e GROUP BY target_id, v"
        shares = f"SELECT target_id, v, {share} AS share FROM ({per_value}) pv"
        if self.pg:
            return f"SELECT target_id, jsonb_object_agg(v, share) AS value FROM ({shares}) s GROUP BY target_id", params
        return (
            "SELECT target_id, json_group_object(v, share) AS value"
            f" FROM (SELECT * FROM ({shares}) s ORDER BY target_id, v) s GROUP BY target_id",
            params,
        )

    def a_ranked(self, selection: Selection) -> Frag:
        """top_k (a sorted multi-enum of the k most frequent values) and mode (the most frequent)."""
        elements, params = self.values(selection, elements=True)
        k = 1 if self.p.aggregate == "mode" else self.p.k
        collate = ' COLLATE "C"' if self.pg else ""
        ranked = (
            f"SELECT target_id, v, ROW_NUMBER() OVER (PARTITION BY target_id ORDER BY n DESC, v{collate}) AS rank"
            f" FROM (SELECT target_id, v, SUM({'w' if self.p.weighted else '1'}) AS n FROM ({elements}) e"
            f" GROUP BY target_id, v) counted"
        )
        if self.p.aggregate == "mode":
            return f"SELECT target_id, {self.text('v')} AS value FROM ({ranked}) r WHERE rank = 1", params
        if self.pg:
            value = 'jsonb_agg(v ORDER BY v COLLATE "C")'
            return f"SELECT target_id, {value} AS value FROM ({ranked}) r WHERE rank <= {k} GROUP BY target_id", params
        return (
            "SELECT target_id, json_group_array(v) AS value"
            f" FROM (SELECT target_id, v FROM ({ranked}) r WHERE rank <= {k} ORDER BY target_id, v) r GROUP BY target_id",
            params,
        )

    def a_copy(self, selection: Selection) -> Frag:
        if self.p.policy == "all":
            elements, params = self.values(selection, elements=True)
            if self.p.source.value_type == "enum":
                elements, params = self.values(selection, elements=False)
            if self.pg:
                value = 'jsonb_agg(v ORDER BY v COLLATE "C")'
                distinct = f"SELECT DISTINCT target_id, v FROM ({elements}) e"
                return f"SELECT target_id, {value} AS value FROM ({distinct}) e GROUP BY target_id", params
            return (
                "SELECT target_id, json_group_array(v) AS value"
                f" FROM (SELECT DISTINCT target_id, v FROM ({elements}) e ORDER BY target_id, v) e GROUP BY target_id",
                params,
            )
        vals, params = self.values(selection, elements=False)
        order = "at DESC, rid DESC" if self.p.policy == "most_recent" else "w DESC, at DESC, rid DESC"
        if self.pg:  # one sort, the first row per target (what one writes by hand)
            return (
                f"SELECT DISTINCT ON (target_id) target_id, raw AS value FROM ({vals}) vals ORDER BY target_id, {order}",
                params,
            )
        picked = f"SELECT target_id, raw, ROW_NUMBER() OVER (PARTITION BY target_id ORDER BY {order}) AS pick FROM ({vals}) vals"
        return f"SELECT target_id, raw AS value FROM ({picked}) c WHERE pick = 1", params

    # ---- entry point --------------------------------------------------------------------
    def select(self, selection: Selection) -> Frag:
        """``SELECT subject_id, value`` for every target subject in ``selection`` (NULL: nothing arrives)."""
        self.probe_sources = selection.ids is not None
        agg_sql, agg_params = self.aggregated(selection)
        chunk_sql, chunk_params = self.ids_in("t.id", selection)
        # MATERIALIZED: the aggregate runs once, not once per target row of a nested loop
        # (the planner's estimates for a list of ids are often a row or two).
        sql = (
            f"WITH agg AS MATERIALIZED ({agg_sql})"
            f" SELECT t.id AS subject_id, a.value AS value FROM subjects_subject t"
            f" LEFT JOIN agg a ON a.target_id = t.id WHERE t.subject_type_id = %s AND {chunk_sql}"
        )
        return sql, [*agg_params, self.p.target_type_id, *chunk_params]
