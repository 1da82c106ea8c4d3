"""Hypothesis strategies: small worlds of subjects/events/relationships and random valid rules.

The worlds deliberately break their schemas (wrong JSON types, impossible dates,
missing keys) because stored data can: the SQL and the evaluator must agree on it too.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
OPTIONS = ["a", "b", "c"]

MEMBER_SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "number"},
        "s": {"type": "string"},
        "d": {"type": "string", "format": "date"},
        "b": {"type": "boolean"},
        "l": {"type": "array", "items": {"enum": OPTIONS}},
        "addr": {"type": "object", "properties": {"city": {"enum": ["sh", "bj"]}}},
    },
}
CLINIC_SCHEMA = {"type": "object", "properties": {"n": {"type": "number"}, "s": {"type": "string"}}}

small_int = st.integers(-20, 60)
number = st.one_of(small_int, small_int.map(lambda i: i / 2))
date_text = st.one_of(
    st.dates(dt.date(1950, 1, 1), dt.date(2027, 12, 31)).map(lambda d: d.isoformat()),
    st.sampled_from(["2020-02-30", "2021-13-01", "abc", "1990-5-1", "0000-01-01", "2000-02-29", "2026-06-15"]),
)
weird = st.sampled_from([None, "5", True, [1], {"x": 1}])


def maybe(strategy, p_other=weird):
    """Usually a value of the declared type, sometimes missing (None → key absent) or wrongly typed."""
    return st.one_of(strategy, strategy, strategy, p_other)


member_attributes = st.fixed_dictionaries(
    {},
    optional={
        "n": maybe(number),
        "s": maybe(st.sampled_from(["x", "y", "z", "ab", ""])),
        "d": maybe(date_text),
        "b": maybe(st.booleans()),
        "l": maybe(st.lists(st.sampled_from(OPTIONS), max_size=3, unique=True)),
        "addr": st.one_of(st.fixed_dictionaries({"city": st.sampled_from(["sh", "bj", 3])}), weird),
    },
)
clinic_attributes = st.fixed_dictionaries({}, optional={"n": maybe(number), "s": maybe(st.sampled_from(["x", "y"]))})

moment = st.builds(
    lambda days, seconds: NOW - dt.timedelta(days=days, seconds=seconds),
    st.integers(-3, 200),
    st.sampled_from([0, 0, 1, 3600, 43200]),
)
event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["purchase", "purchase", "visit"]),
        "occurred_at": moment,
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "amount": maybe(st.integers(0, 500)),
                "channel": maybe(st.sampled_from(["online", "store", "app"])),
            },
        ),
    }
)
validity = st.one_of(st.none(), moment)


@st.composite
def worlds(draw):
    members = draw(st.lists(member_attributes, min_size=1, max_size=5))
    clinics = draw(st.lists(clinic_attributes, min_size=1, max_size=3))
    per_member = draw(st.lists(st.lists(event, max_size=5), min_size=len(members), max_size=len(members)))
    events = [(i, e) for i, evs in enumerate(per_member) for e in evs]
    rels = draw(
        st.lists(
            st.tuples(st.integers(0, len(members) - 1), st.integers(0, len(clinics) - 1), validity, validity),
            max_size=10,
        )
    )
    member_tags = draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "t_enum": st.sampled_from(OPTIONS),
                    "t_multi": st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=3, unique=True).map(sorted),
                    "t_num": number.map(lambda x: int(x) if float(x).is_integer() else x),
                },
            ),
            min_size=len(members),
            max_size=len(members),
        )
    )
    clinic_tags = draw(st.lists(st.sampled_from([None, *OPTIONS]), min_size=len(clinics), max_size=len(clinics)))
    return {
        "members": members,
        "clinics": clinics,
        "events": events,
        "relationships": rels,
        "member_tags": member_tags,
        "clinic_tags": clinic_tags,
    }


# ---- rules ---------------------------------------------------------------------------------

NUM_VARS = [{"var": "attributes.n"}, {"var": "tags.t_num"}]


def event_agg(draw, numeric: bool = True):
    fn = draw(
        st.sampled_from(["count", "count", "sum", "min", "max", "avg", "count_distinct", "first", "last", "mode"])
    )
    spec: dict = {"type": draw(st.sampled_from(["purchase", "visit"])), "fn": fn}
    if fn != "count":
        if fn in ("first", "last", "mode", "count_distinct") and not numeric:
            spec["property"] = "channel"
        else:
            spec["property"] = "amount"
            if fn in ("first", "last", "mode", "count_distinct"):
                spec["as"] = "number"
    if draw(st.booleans()):
        spec["days"] = draw(st.sampled_from([1, 30, 90, 180]))
    if draw(st.booleans()):
        spec["where"] = draw(
            st.sampled_from(
                [
                    {"==": [{"var": "properties.channel"}, "online"]},
                    {">=": [{"var": "properties.amount"}, 100]},
                    {"!": {"==": [{"var": "properties.amount"}, None]}},
                    {"in": [{"var": "properties.channel"}, ["store", "app"]]},
                ]
            )
        )
    return {"event_agg": spec}


def clinic_cond(draw):
    return draw(
        st.sampled_from(
            [
                {">": [{"var": "attributes.n"}, 3]},
                {"==": [{"var": "attributes.s"}, "x"]},
                {"==": [{"var": "tags.c_grade"}, "a"]},
                {"in": [{"var": "tags.c_grade"}, ["a", "b"]]},
                {"==": [{"var": "tags.c_grade"}, None]},
            ]
        )
    )


def related(draw, quantifier):
    spec = {"relationship": "pvisits", "direction": "out", "quantifier": quantifier}
    if draw(st.booleans()):
        spec["where"] = clinic_cond(draw)
    return {"related": spec}


@st.composite
def num_expr(draw, depth=0):
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        leaf = draw(st.integers(0, 6))
        if leaf == 0:
            return draw(number)
        if leaf == 1:
            return draw(st.sampled_from(NUM_VARS))
        if leaf == 2:
            return {"years_since": {"var": "attributes.d"}}
        if leaf == 3:
            return {"days_since": {"var": "attributes.d"}}
        if leaf == 4:
            return related(draw, "count")
        return event_agg(draw)
    op = draw(st.sampled_from(["+", "-", "*", "/", "min", "max"]))
    if op in ("-", "/"):
        return {op: [draw(num_expr(depth + 1)), draw(num_expr(depth + 1))]}
    return {op: draw(st.lists(num_expr(depth + 1), min_size=1, max_size=3))}


@st.composite
def condition(draw, depth=0):
    kind = draw(st.integers(0, 11 if depth < 2 else 8))
    if kind == 0:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return {op: [draw(num_expr(1)), draw(num_expr(1))]}
    if kind == 1:
        op = draw(st.sampled_from(["<", "<="]))
        return {op: [draw(number), draw(num_expr(1)), draw(number)]}
    if kind == 2:
        op = draw(st.sampled_from(["==", "!=", "<", ">="]))
        var = draw(st.sampled_from(["attributes.s", "attributes.d", "tags.t_enum", "attributes.addr.city"]))
        literal = draw(st.sampled_from(["x", "ab", "2000-01-01", "a", "sh"]))
        return {op: [{"var": var}, literal]}
    if kind == 3:
        var = draw(st.sampled_from(["attributes.n", "attributes.s", "attributes.d", "tags.t_enum", "tags.t_multi"]))
        return {draw(st.sampled_from(["==", "!="])): [{"var": var}, None]}
    if kind == 4:
        return (
            {"in": [{"var": "attributes.s"}, ["x", "y"]]}
            if draw(st.booleans())
            else {"in": ["a", {"var": "tags.t_multi"}]}
        )
    if kind == 5:
        return draw(st.sampled_from([{"var": "attributes.b"}, {"==": [{"var": "attributes.b"}, False]}]))
    if kind == 6:
        return {"in": [draw(st.sampled_from(OPTIONS)), {"var": "attributes.l"}]}
    if kind == 7:
        return related(draw, draw(st.sampled_from(["any", "all", "none"])))
    if kind == 8:
        agg = event_agg(draw, numeric=False)
        spec = agg["event_agg"]
        if spec.get("property") == "channel" and spec["fn"] != "count_distinct":
            return {"==": [agg, draw(st.sampled_from(["online", "store"]))]}
        return {">=": [agg, draw(st.integers(0, 3))]}
    op = draw(st.sampled_from(["and", "or", "!"]))
    if op == "!":
        return {"!": draw(condition(depth + 1))}
    return {op: draw(st.lists(condition(depth + 1), min_size=1, max_size=3))}


@st.composite
def enum_rules(draw):
    cases = draw(
        st.lists(st.fixed_dictionaries({"when": condition(), "then": st.sampled_from(OPTIONS)}), min_size=1, max_size=3)
    )
    return {"cases": cases, "default": draw(st.sampled_from([None, "c"]))}


@st.composite
def formula_rules(draw):
    return {"formula": draw(num_expr())}


rules = st.one_of(enum_rules(), formula_rules())
