"""Rule validation: every problem is reported with a field pointing into the document."""

import pytest

from common.errors import ServiceError
from tags.services.compiled import parse_for

from .engine import Engine


@pytest.fixture
def engine(db):
    return Engine()


def problems(tag, document):
    with pytest.raises(ServiceError) as err:
        parse_for(tag, document)
    return [(e.field, e.code) for e in err.value.errors]


def messages(tag, document):
    with pytest.raises(ServiceError) as err:
        parse_for(tag, document)
    return [e.message for e in err.value.errors]


def test_unknown_attribute_points_into_the_tree(engine):
    doc = {
        "cases": [
            {"when": {"==": [{"var": "attributes.s"}, "x"]}, "then": "a"},
            {"when": {"and": [{"<": [{"years_since": {"var": "attributes.birthdate"}}, 30]}]}, "then": "b"},
        ]
    }
    assert problems(engine.target_enum, doc) == [
        ("rule.cases[1].when.and[0].<[0].years_since[0].var", "unknown_attribute")
    ]
    assert messages(engine.target_enum, doc) == ['Unknown attribute "birthdate" of subject type "pmember".']


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"cases": [{"when": {"==": [{"var": "tags.nope"}, "a"]}, "then": "a"}]},
            [("rule.cases[0].when.==[0].var", "unknown_tag")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "attributes.s"}]}, "then": "a"}]},
            [("rule.cases[0].when.==", "wrong_arity")],
        ),
        (
            {"cases": [{"when": {">": [{"var": "attributes.n"}, 1, 2]}, "then": "a"}]},
            [("rule.cases[0].when.>", "wrong_arity")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "attributes.n"}, 1]}, "then": "zzz"}]},
            [("rule.cases[0].then", "not_an_option")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "attributes.n"}, 1]}, "then": 3}]},
            [("rule.cases[0].then", "wrong_type")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "attributes.n"}, 1]}, "then": "a"}], "default": "q"},
            [("rule.default", "not_an_option")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "attributes.n"}, "x"]}, "then": "a"}]},
            [("rule.cases[0].when.==", "wrong_type")],
        ),
        ({"cases": [{"when": {"var": "attributes.n"}, "then": "a"}]}, [("rule.cases[0].when", "wrong_type")]),
        ({"cases": [{"when": {"xor": [1, 2]}, "then": "a"}]}, [("rule.cases[0].when.xor", "unknown_operator")]),
        (
            {
                "cases": [
                    {
                        "when": {">": [{"event_agg": {"type": "purchase", "fn": "median", "property": "amount"}}, 1]},
                        "then": "a",
                    }
                ]
            },
            [("rule.cases[0].when.>[0].event_agg.fn", "unknown_fn")],
        ),
        (
            {"cases": [{"when": {"related": {"relationship": "nope"}}, "then": "a"}]},
            [("rule.cases[0].when.related.relationship", "unknown_relationship")],
        ),
        (
            {"cases": [{"when": {"related": {"relationship": "pvisits", "direction": "in"}}, "then": "a"}]},
            [("rule.cases[0].when.related.direction", "wrong_end_type")],
        ),
        (
            {
                "cases": [
                    {
                        "when": {
                            "related": {"relationship": "pvisits", "where": {"==": [{"var": "tags.t_enum"}, "a"]}}
                        },
                        "then": "a",
                    }
                ]
            },
            [("rule.cases[0].when.related.where.==[0].var", "unknown_tag")],
        ),
        (
            {"cases": [{"when": {"==": [{"var": "tags.target_enum"}, "a"]}, "then": "a"}]},
            [("rule.cases[0].when.==[0].var", "cycle")],
        ),
        ({"formula": {"+": [{"var": "attributes.s"}, 1]}}, [("rule.formula.+[0]", "wrong_type")]),
    ],
)
def test_bad_rules_are_refused_at_the_right_place(engine, document, expected):
    tag = engine.target_num if "formula" in document else engine.target_enum
    assert problems(tag, document) == expected


def test_several_problems_are_reported_at_once(engine):
    doc = {
        "cases": [
            {"when": {"==": [{"var": "attributes.zz"}, 1]}, "then": "a"},
            {"when": {"==": [{"var": "attributes.n"}, 1]}, "then": "nope"},
        ],
        "default": 5,
    }
    assert [f for f, _ in problems(engine.target_enum, doc)] == [
        "rule.cases[0].when.==[0].var",
        "rule.cases[1].then",
        "rule.default",
    ]


def test_formula_only_for_number_tags_and_structure_errors(engine):
    assert problems(engine.target_enum, {"formula": 1}) == [("rule.formula", "invalid")]
    assert problems(engine.target_enum, {"cases": []}) == [("rule.cases", "invalid")]
    assert problems(engine.target_enum, "x") == [("rule", "invalid")]
    assert problems(engine.target_enum, {"cases": [{"when": True}]}) == [("rule.cases[0]", "invalid")]


def test_attribute_keys_are_identifiers_before_they_reach_sql(engine):
    doc = {"cases": [{"when": {"==": [{"var": "attributes.n'); DROP TABLE x; --"}, 1]}, "then": "a"}]}
    assert problems(engine.target_enum, doc) == [("rule.cases[0].when.==[0].var", "invalid")]
    doc = {
        "cases": [
            {"when": {">": [{"event_agg": {"type": "purchase", "fn": "sum", "property": "a-b"}}, 1]}, "then": "a"}
        ]
    }
    assert problems(engine.target_enum, doc) == [("rule.cases[0].when.>[0].event_agg.property", "invalid")]


def test_valid_rules_of_every_operator_parse(engine):
    doc = {
        "cases": [
            {"when": {"<=": [18, {"years_since": {"var": "attributes.d"}}, 30]}, "then": "a"},
            {"when": {"in": ["a", {"var": "tags.t_multi"}]}, "then": "b"},
            {"when": {"==": [{"var": "attributes.addr.city"}, "sh"]}, "then": "b"},
            {
                "when": {
                    "or": [
                        {"!": {"==": [{"var": "tags.t_enum"}, None]}},
                        {"var": "attributes.b"},
                        {
                            ">=": [
                                {
                                    "event_agg": {
                                        "type": "purchase",
                                        "fn": "count",
                                        "days": 90,
                                        "where": {"==": [{"var": "properties.channel"}, "online"]},
                                    }
                                },
                                3,
                            ]
                        },
                        {
                            "related": {
                                "relationship": "pvisits",
                                "quantifier": "all",
                                "where": {"==": [{"var": "tags.c_grade"}, "a"]},
                            }
                        },
                        {"==": [{"event_agg": {"type": "purchase", "fn": "mode", "property": "channel"}}, "store"]},
                    ]
                },
                "then": "c",
            },
        ],
        "default": None,
    }
    rule = parse_for(engine.target_enum, doc)
    assert rule.tag_ids == {engine.t_multi.pk, engine.t_enum.pk, engine.c_grade.pk}


def test_event_property_with_a_trailing_newline_never_reaches_sql(engine):
    """Event property keys have no schema: the key pattern, matched to the end, is their only guard."""
    agg = {"event_agg": {"type": "purchase", "fn": "sum", "property": "amount\n"}}
    doc = {"cases": [{"when": {">": [agg, 1]}, "then": "a"}]}
    assert problems(engine.target_enum, doc) == [("rule.cases[0].when.>[0].event_agg.property", "invalid")]
