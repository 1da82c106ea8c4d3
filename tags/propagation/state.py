"""Delta maintenance of decomposable propagations: per-target aggregate state, changed by deltas.

A region's average over 20,000 members should not be re-aggregated because one
member's value changed. For the aggregates that decompose — count, sum, avg, share
(per value or of one value), any / all / none, top-k / mode (per-value counts) and
copy of all values — each target keeps its state in ``tags_propagationstate``:

- key ``""``: ``c`` valued sources, ``n`` their summed path weight, ``s`` the running
  sum the aggregate needs (Σ w·v for sum / avg, Σ w·match for a share of one value,
  the number of matches for any / all / none);
- key ``"=" + value``: ``c`` and ``n`` of the sources holding that value (one element
  of a multi-enum).

A source that changed from ``old`` to ``new`` (the writer returns both) subtracts
its old contribution and adds its new one along the pairs it takes part in
(``reach`` bounded at the source end): the refresh touches the changed sources and
their targets only. Relationship changes, manual edits and attribute sources
rebuild the affected targets' state from all their inputs instead, as does a full
recompute, chunk by chunk. Values are always derived from state by the same SQL
(``StateSql.values``) — the full recompute's compiled SELECT aggregates the same
rows in a subquery — and the sums are exact ``numeric``, so incremental equals
full to the last digit. min / max and copy of one value are not decomposable and
keep recomputing the affected targets. PostgreSQL only; SQLite recomputes.

Deltas assume the state is consistent with the inputs: they are applied only when
a full recompute built the whole state for the active rule version
(``PropagationStateBuilt``), and the engine serializes the writes of a tag
(``lock_tag``), so old values read by one plan are the values the previous plan
committed. A target whose state would turn inconsistent (negative counts) is
rebuilt from its inputs instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import orjson
from django.db import connection

from tags.rules.compiler import Selection

from .document import Propagation

Frag = tuple[str, list]
STATE = "tags_propagationstate"
DECOMPOSABLE = ("count", "sum", "avg", "share", "any", "all", "none", "top_k", "mode")
TOTALS = "''"  # the totals row's key; value rows are "=" || value, so no value can collide with it


def maintained(prop: Propagation) -> bool:
    """Does ``prop`` keep per-target state? (a tag source and a decomposable aggregate)."""
    if prop.source.tag_id is None:
        return False
    return prop.aggregate in DECOMPOSABLE or (prop.aggregate == "copy" and prop.policy == "all")


def uses_state(prop: Propagation | None) -> bool:
    return prop is not None and connection.vendor == "postgresql" and maintained(prop)


class StateSql:
    """The state's SQL for one compiled propagation (``PropagationCompiler`` with ``exact``)."""

    def __init__(self, compiler) -> None:
        self.c = compiler
        self.p: Propagation = compiler.p

    @property
    def per_value(self) -> bool:
        p = self.p
        return (p.aggregate == "share" and p.value is None) or p.aggregate in ("top_k", "mode", "copy")

    # ---- rows → state --------------------------------------------------------------------
    def running_sum(self) -> Frag:
        """What ``s`` accumulates per signed value row (columns ``w``, ``raw``, ``v``)."""
        agg = self.p.aggregate
        if agg in ("sum", "avg"):
            return "w * v", []
        if agg == "share" and self.p.value is not None:
            match, params = self.c.matches()
            return f"CASE WHEN {match} THEN w ELSE 0 END", params
        if agg in ("any", "all", "none"):
            match, params = self.c.matches()
            return f"CASE WHEN COALESCE({match}, FALSE) THEN 1 ELSE 0 END", params
        return "0", []

    def state_rows(self, vals: Frag, elements: Frag) -> Frag:
        """``(target_id, key, c, n, s)`` from signed value rows (``sign`` +1 / −1)."""
        if self.per_value and self.p.source.value_type != "multi_enum":
            # One value per source: the totals are the sums of the per-value rows (one pass over
            # the sources, not two; ``s`` is 0 for every per-value aggregate).
            per_value = (
                "SELECT target_id, '=' || (v)::text AS key, SUM(sign)::bigint AS c, SUM(sign * w)::numeric AS n"
                f" FROM ({vals[0]}) x GROUP BY target_id, v"
            )
            sql = (
                f"WITH pv AS MATERIALIZED ({per_value})"
                f" SELECT target_id, {TOTALS}::text AS key, SUM(c)::bigint AS c, SUM(n)::numeric AS n, 0::numeric AS s"
                " FROM pv GROUP BY target_id UNION ALL SELECT target_id, key, c, n, 0::numeric FROM pv"
            )
            return sql, list(vals[1])
        s_expr, s_params = self.running_sum()
        sql = (
            f"SELECT target_id, {TOTALS}::text AS key, SUM(sign)::bigint AS c, SUM(sign * w)::numeric AS n,"
            f" SUM(sign * ({s_expr}))::numeric AS s FROM ({vals[0]}) x GROUP BY target_id"
        )
        params = [*s_params, *vals[1]]
        if self.per_value:
            sql += (
                " UNION ALL SELECT target_id, '=' || (v)::text, SUM(sign)::bigint, SUM(sign * w)::numeric, 0::numeric"
                f" FROM ({elements[0]}) e GROUP BY target_id, v"
            )
            params += elements[1]
        return sql, params

    def rebuilt(self, selection: Selection) -> Frag:
        """State rows of the selection's targets computed from all their inputs."""
        # a list of targets probes the source values per pair; a chunk hash-joins them (as ``select``)
        self.c.probe_sources = selection.ids is not None
        vals = self.c.values(selection, elements=False)
        elements = self.c.values(selection, elements=True) if self.per_value else ("", [])
        signed = (f"SELECT q.*, 1 AS sign FROM ({vals[0]}) q", vals[1])
        signed_elements = (f"SELECT q.*, 1 AS sign FROM ({elements[0]}) q", elements[1])
        return self.state_rows(signed, signed_elements)

    def delta(self, changes: Sequence[tuple[int, object, object]]) -> Frag:
        """State deltas: each changed source's old value subtracted, its new value added, per pair."""
        rows = [[sid, old, -1] for sid, old, _ in changes if old is not None]
        rows += [[sid, new, 1] for sid, _, new in changes if new is not None]
        sources = Selection.of_ids({sid for sid, _, _ in changes})
        pairs_sql, pairs_params = self.c.pairs(sources, sources=sources)
        d = (
            "SELECT (e ->> 0)::bigint AS source_id, e -> 1 AS raw, (e ->> 2)::int AS sign"
            " FROM jsonb_array_elements(%s::jsonb) e"
        )
        where_sql, where_params = self._source_where()
        joined = f"FROM ({pairs_sql}) p JOIN ({d}) d ON d.source_id = p.source_id{where_sql}"
        params = [*pairs_params, orjson.dumps(rows).decode(), *where_params]
        v = "NULL" if self.p.source.value_type == "multi_enum" else self.c.scalar("d.raw")
        vals = (f"SELECT p.target_id, p.w, d.raw, {v} AS v, d.sign {joined}", params)
        elements = ("", [])
        if self.per_value:
            if self.p.source.value_type == "multi_enum":
                elements = (
                    f"SELECT p.target_id, p.w, x.v, d.sign {joined}"
                    " CROSS JOIN LATERAL jsonb_array_elements_text(d.raw) AS x(v)",
                    params,
                )
            else:
                elements = vals
        return self.state_rows(vals, elements)

    def _source_where(self) -> Frag:
        if not self.p.where:
            return "", []
        where = [self.c.equals("ss.attributes", k, v) for k, v in self.p.where]
        sql = " JOIN subjects_subject ss ON ss.id = p.source_id" + "".join(f" AND {s}" for s, _ in where)
        return sql, [x for _, ps in where for x in ps]

    # ---- state → values ------------------------------------------------------------------
    def values(self, state: Frag) -> Frag:
        """``(target_id, value)`` from state rows; the one formula of incremental and full."""
        agg, number, boolean = self.p.aggregate, self.c.number, self.c.boolean
        totals = f"FROM st WHERE key = {TOTALS} AND c > 0"
        ratio = "trim_scale(s) / NULLIF(trim_scale(n), 0)"
        simple = {
            "count": number("n"),
            "sum": number("s"),
            "avg": number(ratio),
            "any": boolean("s > 0"),
            "all": boolean("s = c"),
            "none": boolean("s = 0"),
        }
        value_rows = f"FROM st WHERE key <> {TOTALS} AND c > 0"
        if agg == "share" and self.p.value is not None:
            final = f"SELECT target_id, {number(ratio)} AS value {totals}"
        elif agg in simple:
            final = f"SELECT target_id, {simple[agg]} AS value {totals}"
        elif agg == "share":
            # The totals reach their value rows by a window, not a self-join of ``st``: a state just
            # rebuilt is unknown to the statistics ("1 row"), and a nested loop over its value rows ×
            # totals rows took 30 s for 5,000 clinics; the window is one sort whatever the plan.
            share = "ROUND(trim_scale(n) / NULLIF(trim_scale(total), 0), 6)::float8"
            with_total = (
                f"SELECT st.*, max(n) FILTER (WHERE key = {TOTALS}) OVER (PARTITION BY target_id) AS total FROM st"
            )
            final = (
                f"SELECT target_id, jsonb_object_agg(substr(key, 2), {share}) AS value FROM ({with_total}) p"
                f" WHERE key <> {TOTALS} AND c > 0 AND total IS NOT NULL GROUP BY target_id"
            )
        elif agg == "copy":
            final = (
                'SELECT target_id, jsonb_agg(substr(key, 2) ORDER BY substr(key, 2) COLLATE "C") AS value'
                f" {value_rows} GROUP BY target_id"
            )
        else:  # top_k, mode
            ranked = (
                "SELECT target_id, substr(key, 2) AS v,"
                ' ROW_NUMBER() OVER (PARTITION BY target_id ORDER BY n DESC, substr(key, 2) COLLATE "C") AS rank'
                f" {value_rows}"
            )
            if agg == "mode":
                final = f"SELECT target_id, {self.c.text('v')} AS value FROM ({ranked}) r WHERE rank = 1"
            else:
                final = (
                    f'SELECT target_id, jsonb_agg(v ORDER BY v COLLATE "C") AS value FROM ({ranked}) r'
                    f" WHERE rank <= {int(self.p.k)} GROUP BY target_id"
                )
        return f"WITH st AS MATERIALIZED ({state[0]}) {final}", list(state[1])

    def computed(self, selection: Selection) -> Frag:
        """The compiled aggregate of the full path: the state rebuilt in a subquery, then ``values``."""
        return self.values(self.rebuilt(selection))

    def stored(self, tag_id: int, selection: Selection) -> Frag:
        """State rows of the selection's targets as stored."""
        chunk_sql, chunk_params = self.c.ids_in("subject_id", selection)
        return (
            f"SELECT subject_id AS target_id, key, c, n, s FROM {STATE} WHERE tag_id = %s AND {chunk_sql}",
            [tag_id, *chunk_params],
        )

    def from_stored(self, tag_id: int, selection: Selection) -> Frag:
        """``SELECT subject_id, value`` for every target of the selection, from stored state (NULL: none)."""
        agg_sql, agg_params = self.values(self.stored(tag_id, selection))
        chunk_sql, chunk_params = self.c.ids_in("t.id", selection)
        # The values as one object looked up per target: joined to a CTE (estimated at one row for a
        # list of ids) the planner rescanned it once per target row — quadratic in the targets.
        sql = (
            f"WITH agg AS MATERIALIZED (SELECT jsonb_object_agg(a.target_id::text, a.value) AS m FROM ({agg_sql}) a)"
            f" SELECT t.id AS subject_id, agg.m -> t.id::text AS value FROM subjects_subject t CROSS JOIN agg"
            f" WHERE t.subject_type_id = %s AND {chunk_sql}"
        )
        return sql, [*agg_params, self.p.target_type_id, *chunk_params]


def _sql(prop: Propagation, now: dt.datetime) -> StateSql:
    from .compiler import PropagationCompiler

    return StateSql(PropagationCompiler(prop, vendor=connection.vendor, now=now))


def lock_tag(tag_id: int) -> None:
    """Serialize the engine's writes of one tag until the transaction ends (PostgreSQL).

    A plan reads a source's old value and applies ``new − old`` to its targets' state:
    two plans interleaving on the same tag would both subtract the same old value.
    Plans take their tags' locks in dependency order, so they cannot deadlock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x7477, int(tag_id)])


def rebuild(tag_id: int, prop: Propagation, selection: Selection, now: dt.datetime) -> None:
    """Replace the state of the selection's targets with one computed from all their inputs."""
    sql = _sql(prop, now)
    chunk_sql, chunk_params = sql.c.ids_in("subject_id", selection)
    rows_sql, rows_params = sql.rebuilt(selection)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {STATE} WHERE tag_id = %s AND {chunk_sql}", [tag_id, *chunk_params])
        cursor.execute(
            f"INSERT INTO {STATE} (tag_id, subject_id, key, c, n, s)"
            f" SELECT %s, target_id, key, c, n, s FROM ({rows_sql}) st WHERE c <> 0 ORDER BY target_id, key",
            [tag_id, *rows_params],
        )


def apply_delta(
    tag_id: int,
    prop: Propagation,
    changes: Sequence[tuple[int, object, object]],
    now: dt.datetime,
    *,
    skip: Iterable[int] = (),
) -> list[int]:
    """Add the changes' deltas to their targets' state (but ``skip``'s); the targets whose state moved."""
    if not changes:
        return []
    sql = _sql(prop, now)
    delta_sql, delta_params = sql.delta(changes)
    skipped = sorted({int(i) for i in skip})
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STATE} AS t (tag_id, subject_id, key, c, n, s)"
            f" SELECT %s, target_id, key, c, n, s FROM ({delta_sql}) d"
            " WHERE (c <> 0 OR n <> 0 OR s <> 0) AND NOT (target_id = ANY(%s::bigint[]))"
            " ORDER BY target_id, key"
            " ON CONFLICT (tag_id, subject_id, key) DO UPDATE"
            " SET c = t.c + EXCLUDED.c, n = t.n + EXCLUDED.n, s = t.s + EXCLUDED.s"
            " RETURNING t.subject_id, t.c < 0 OR (t.c = 0 AND (t.n <> 0 OR t.s <> 0)) AS broken, t.c = 0",
            [tag_id, *delta_params, skipped],
        )
        rows = cursor.fetchall()
        touched = sorted({int(r[0]) for r in rows})
        broken = sorted({int(r[0]) for r in rows if r[1]})
        if any(r[2] for r in rows):  # a value or a target lost its last source
            cursor.execute(
                f"DELETE FROM {STATE} WHERE tag_id = %s AND subject_id = ANY(%s::bigint[]) AND c = 0",
                [tag_id, touched],
            )
    if broken:  # the state had drifted from the inputs (a missed trigger): rebuild those targets
        rebuild(tag_id, prop, Selection.of_ids(broken), now)
    return touched


def values_select(tag_id: int, prop: Propagation, selection: Selection, now: dt.datetime) -> Frag:
    """The computed relation of the selection's targets from their stored state (for the writer)."""
    return _sql(prop, now).from_stored(tag_id, selection)


def state_built(tag_ids: Iterable[int]) -> set[int]:
    """The tags among ``tag_ids`` whose whole state a full recompute built for the active rule."""
    from django.db.models import F

    from tags.models import PropagationStateBuilt

    ids = list(tag_ids)
    if not ids:
        return set()
    return set(
        PropagationStateBuilt.objects.filter(tag_id__in=ids, rule_id=F("tag__rule_id")).values_list("tag_id", flat=True)
    )


def mark_built(tag, now: dt.datetime) -> None:
    from tags.models import PropagationStateBuilt

    PropagationStateBuilt.objects.update_or_create(tag_id=tag.pk, defaults={"rule_id": tag.rule_id, "built_at": now})
