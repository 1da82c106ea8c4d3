"""Shared set-up for the engine tests: a small typed world with assigned tags to read."""

from __future__ import annotations

import itertools

from django.utils import timezone

from subjects.models import Relationship, RelationshipType, Subject, SubjectType
from tags.models import Event, TagDefinition, TagValue, TagValueChange
from tags.rules.evaluator import World
from tags.services import definitions
from tags.services.compiled import active_rule

from .rulegen import CLINIC_SCHEMA, MEMBER_SCHEMA, OPTIONS

_serial = itertools.count()


class Engine:
    def __init__(self) -> None:
        T = SubjectType.objects.create
        self.member_type = T(code="pmember", name="P member", category="customer", attribute_schema=MEMBER_SCHEMA)
        self.clinic_type = T(code="pclinic", name="P clinic", category="organization", attribute_schema=CLINIC_SCHEMA)
        self.visits = RelationshipType.objects.create(
            code="pvisits", name="Visits", from_type=self.member_type, to_type=self.clinic_type
        )
        self.member_group = definitions.tag_group_save(
            actor=None, data={"subject_type": self.member_type, "code": "g", "name": "G"}
        )
        self.clinic_group = definitions.tag_group_save(
            actor=None, data={"subject_type": self.clinic_type, "code": "g", "name": "G"}
        )
        choices = [(o, o.upper()) for o in OPTIONS]
        self.t_enum = self.tag("t_enum", "enum", options=choices)
        self.t_multi = self.tag("t_multi", "multi_enum", options=choices)
        self.t_num = self.tag("t_num", "number")
        self.c_grade = self.tag("c_grade", "enum", options=choices, group=self.clinic_group)
        self.target_enum = self.tag("target_enum", "enum", options=choices, computation="rule")
        self.target_num = self.tag("target_num", "number", computation="rule")

    def tag(self, code, value_type, *, options=None, computation="assigned", group=None) -> TagDefinition:
        return definitions.tag_save(
            actor=None,
            data={
                "group": group or self.member_group,
                "code": code,
                "name": code,
                "value_type": value_type,
                "computation": computation,
                "status": "active" if computation == "assigned" else "draft",
            },
            options=options,
        )

    def target_for(self, document: dict) -> TagDefinition:
        return self.target_num if "formula" in document else self.target_enum

    def activate(self, tag: TagDefinition, document: dict) -> None:
        saved = definitions.rule_save(actor=None, tag=tag, document=document)
        definitions.activate_rule(actor=None, tag=tag, version=saved.version, recompute=False)
        tag.refresh_from_db()

    def load(self, data: dict, now) -> tuple[list[int], list[int]]:
        """Store a generated world (bulk, bypassing schema validation on purpose)."""
        n = next(_serial)
        members = Subject.objects.bulk_create(
            Subject(subject_type=self.member_type, source="h", external_id=f"m{n}-{i}", attributes=_absent(a))
            for i, a in enumerate(data["members"])
        )
        clinics = Subject.objects.bulk_create(
            Subject(subject_type=self.clinic_type, source="h", external_id=f"c{n}-{i}", attributes=_absent(a))
            for i, a in enumerate(data["clinics"])
        )
        values = []
        for member, tags in zip(members, data["member_tags"], strict=True):
            for code, value in tags.items():
                values.append(
                    TagValue(tag=getattr(self, code), subject=member, value=value, source="manual", updated_at=now)
                )
        for clinic, grade in zip(clinics, data["clinic_tags"], strict=True):
            if grade is not None:
                values.append(TagValue(tag=self.c_grade, subject=clinic, value=grade, source="manual", updated_at=now))
        TagValue.objects.bulk_create(values)
        Event.objects.bulk_create(
            Event(subject=members[i], source="h", event_id=f"e{n}-{k}", **e) for k, (i, e) in enumerate(data["events"])
        )
        Relationship.objects.bulk_create(
            Relationship(
                relationship_type=self.visits,
                from_subject=members[m],
                to_subject=clinics[c],
                valid_from=min(a, b) if a and b else a,
                valid_to=max(a, b) if a and b else b,
                source="h",
                external_id=f"r{n}-{k}",
            )
            for k, (m, c, a, b) in enumerate(data["relationships"])
        )
        return [m.id for m in members], [c.id for c in clinics]

    def world(self, now) -> World:
        world = World(now=now)
        for sid, type_id, attributes in Subject.objects.values_list("id", "subject_type_id", "attributes"):
            world.attributes[sid] = attributes
            world.subject_types[sid] = type_id
        for tag_id, sid, value in TagValue.objects.values_list("tag_id", "subject_id", "value"):
            world.tag_values[(tag_id, sid)] = value
        for e in Event.objects.values("id", "subject_id", "type", "occurred_at", "properties"):
            world.events.setdefault(e["subject_id"], []).append(e)
        world.relationships = [
            {"type_id": t, "from": f, "to": to, "valid_from": vf, "valid_to": vt}
            for t, f, to, vf, vt in Relationship.objects.values_list(
                "relationship_type_id", "from_subject_id", "to_subject_id", "valid_from", "valid_to"
            )
        ]
        return world

    @staticmethod
    def stored(tag: TagDefinition) -> dict[int, object]:
        return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))

    @staticmethod
    def replayed(tag: TagDefinition) -> dict[int, object]:
        state: dict[int, object] = {}
        for sid, old, new in (
            TagValueChange.objects.filter(tag=tag).order_by("id").values_list("subject_id", "old_value", "new_value")
        ):
            assert state.get(sid) == old, (sid, state.get(sid), old)
            if new is None:
                state.pop(sid, None)
            else:
                state[sid] = new
        return state

    @staticmethod
    def rule_of(tag: TagDefinition):
        return active_rule(tag)


def _absent(attributes: dict) -> dict:
    """Generated None means "key absent"."""
    return {k: v for k, v in attributes.items() if v is not None}


def now_default():
    return timezone.now()
