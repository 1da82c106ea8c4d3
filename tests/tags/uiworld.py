"""Fixtures shared by the tags API, admin and import tests: tags on the conftest ``world``."""

from __future__ import annotations

import pytest

from tags.services import definitions
from tests.factories import SubjectFactory

AGE_RULE = {
    "cases": [
        {"when": {"<": [{"years_since": {"var": "attributes.birth_date"}}, 30]}, "then": "under_30"},
        {"when": {">=": [{"years_since": {"var": "attributes.birth_date"}}, 30]}, "then": "over_30"},
    ]
}


class Tags:
    """Member tags of every value type (assigned), a rule tag, and a clinic and a doctor ``grade``."""

    age_rule = AGE_RULE

    def __init__(self, world) -> None:
        save_group = definitions.tag_group_save
        self.world = world
        self.demographics = save_group(
            actor=None, data={"subject_type": world.member_type, "code": "demographics", "name": "Demographics"}
        )
        self.consumption = save_group(
            actor=None,
            data={"subject_type": world.member_type, "code": "consumption", "name": "Consumption", "position": 1},
        )
        self.clinic_ops = save_group(
            actor=None, data={"subject_type": world.clinic_type, "code": "operations", "name": "Operations"}
        )
        self.doctor_perf = save_group(
            actor=None, data={"subject_type": world.doctor_type, "code": "performance", "name": "Performance"}
        )
        self.skin = self.tag("skin", "enum", options=[("dry", "Dry"), ("oily", "Oily"), ("normal", "Normal")])
        self.interests = self.tag(
            "interests", "multi_enum", options=[("laser", "Laser"), ("filler", "Filler"), ("peel", "Peel")]
        )
        self.score = self.tag("score", "number", group=self.consumption)
        self.vip = self.tag("vip", "boolean", group=self.consumption)
        self.note = self.tag("note", "text")
        self.since = self.tag("since", "date")
        self.age_band = self.tag(
            "age_band", "enum", options=[("under_30", "Under 30"), ("over_30", "30 and over")], computation="rule"
        )
        grades = [("A", "Grade A"), ("B", "Grade B"), ("C", "Grade C")]
        self.clinic_grade = self.tag("grade", "enum", options=grades, group=self.clinic_ops)
        self.doctor_grade = self.tag("grade", "enum", options=grades, group=self.doctor_perf)

    def tag(self, code, value_type, *, options=None, computation="assigned", group=None):
        return definitions.tag_save(
            actor=None,
            data={
                "group": group or self.demographics,
                "code": code,
                "name": code.replace("_", " ").title(),
                "value_type": value_type,
                "computation": computation,
                "status": "active" if computation == "assigned" else "draft",
            },
            options=options,
        )

    def member(self, **attributes):
        return SubjectFactory(subject_type=self.world.member_type, attributes=attributes)

    def activate_age_rule(self, *, recompute: bool = False):
        saved = definitions.rule_save(actor=None, tag=self.age_band, document=AGE_RULE)
        definitions.activate_rule(actor=None, tag=self.age_band, version=saved.version, recompute=recompute)
        self.age_band.refresh_from_db()
        return saved


@pytest.fixture
def tags(world):
    return Tags(world)
