"""The rule examples in docs/TAGS.md are valid rules and compute on the test database."""

import json
import re
from pathlib import Path

import pytest

from tags.services import definitions
from tags.services.compiled import parse_for
from tags.services.recompute import recompute_all
from tests.factories import SubjectFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "TAGS.md"


def examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
    documents = []
    for block in blocks:
        try:
            documents.append(json.loads(block))
        except json.JSONDecodeError:
            continue  # the grammar sketches (<condition>, …)
    return [d for d in documents if "cases" in d or "formula" in d]


def test_the_docs_hold_the_reference_examples():
    assert len(examples()) >= 5


@pytest.mark.parametrize("index", range(len(examples())))
def test_doc_example_parses_and_computes(world, index):
    document = examples()[index]
    member_group = definitions.tag_group_save(
        actor=None, data={"subject_type": world.member_type, "code": "g", "name": "G"}
    )
    clinic_group = definitions.tag_group_save(
        actor=None, data={"subject_type": world.clinic_type, "code": "g", "name": "G"}
    )
    definitions.tag_save(
        actor=None,
        data={"group": member_group, "code": "interests", "name": "I", "value_type": "multi_enum", "status": "active"},
        options=[("laser", "Laser"), ("filler", "Filler")],
    )
    definitions.tag_save(
        actor=None,
        data={"group": clinic_group, "code": "grade", "name": "G", "value_type": "enum", "status": "active"},
        options=[("A", "A"), ("B", "B")],
    )
    if "formula" in document:
        value_type, options = "number", None
    else:
        thens = {c["then"] for c in document["cases"]} | ({document.get("default")} - {None})
        value_type = "boolean" if thens <= {True, False} else "enum"
        options = None if value_type == "boolean" else [(t, t) for t in sorted(thens)]
    tag = definitions.tag_save(
        actor=None,
        data={"group": member_group, "code": "example", "name": "E", "value_type": value_type, "computation": "rule"},
        options=options,
    )
    parse_for(tag, document)
    saved = definitions.rule_save(actor=None, tag=tag, document=document)
    definitions.activate_rule(actor=None, tag=tag, version=saved.version, recompute=False)
    tag.refresh_from_db()
    SubjectFactory(subject_type=world.member_type, attributes={"birth_date": "1990-01-01", "spend": 20000})
    assert recompute_all(tag) >= 0
