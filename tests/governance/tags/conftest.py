"""Tag-access fixtures: groups of every kind of ownership and policy, and a canary value per tag and subject.

On top of the governance ``gov`` world (brand A / Shanghai "in", brand B / Beijing "out"):

- ``open``: group-wide, every policy "scope" — seen, used and edited by anyone with the model permission;
- ``brand_a`` / ``brand_b``: owned by a brand — only users whose scopes cover that brand;
- ``secret``: view "granted" — nobody but HQ and holders of an object grant (two tags, so a grant on one
  definition can be told from a grant on the group);
- ``readonly``: edit "granted"; ``nouse``: use "granted".

Every tag is a text tag holding ``CANARY-<tag>-<subject external id>`` on each member, written by the
one writer (so the history has it too): a canary must never appear in a response to a user who
cannot see its tag or its subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Group, Permission
from guardian.shortcuts import assign_perm

from tags.models import AccessPolicy, TagDefinition, TagGroup, ValueSource
from tags.services import definitions, store
from tests.governance.conftest import make_user

TAG_CODES = ("open_note", "a_note", "b_note", "secret_note", "secret_two", "ro_note", "nouse_note")
EDITOR_PERMS = (
    "add_tagdefinition",
    "change_tagdefinition",
    "add_tagrule",
    "view_tagrule",
    "change_taggroup",
    "add_taggroup",
)


def canary(tag_code: str, subject) -> str:
    return f"CANARY-{tag_code}-{subject.external_id}"


@dataclass
class TagWorld:
    gov: object
    groups: dict[str, TagGroup] = field(default_factory=dict)
    tags: dict[str, TagDefinition] = field(default_factory=dict)
    derived: TagDefinition | None = None

    @property
    def members(self):
        return [self.gov.member_in, self.gov.member_out, self.gov.member_a_bj]

    def canaries(self, tag_codes, members=None) -> set[str]:
        return {canary(code, m) for code in tag_codes for m in (members or self.members)}


def _group(world, code: str, **fields) -> TagGroup:
    data = {"subject_type": world.member_type, "code": code, "name": code.title(), **fields}
    return definitions.tag_group_save(actor=None, data=data)


def _text_tag(group: TagGroup, code: str) -> TagDefinition:
    data = {"group": group, "code": code, "name": code, "value_type": "text", "status": "active"}
    return definitions.tag_save(actor=None, data=data)


@pytest.fixture
def tw(gov) -> TagWorld:
    w = gov.world
    t = TagWorld(gov=gov)
    t.groups = {
        "open": _group(w, "open"),
        "brand_a": _group(w, "brand_a", brand=w.brand_a),
        "brand_b": _group(w, "brand_b", brand=w.brand_b),
        "secret": _group(w, "secret", view_policy=AccessPolicy.GRANTED),
        "readonly": _group(w, "readonly", edit_policy=AccessPolicy.GRANTED),
        "nouse": _group(w, "nouse", use_policy=AccessPolicy.GRANTED),
    }
    homes = {
        "open_note": "open", "a_note": "brand_a", "b_note": "brand_b", "secret_note": "secret",
        "secret_two": "secret", "ro_note": "readonly", "nouse_note": "nouse",
    }  # fmt: skip
    t.tags = {code: _text_tag(t.groups[home], code) for code, home in homes.items()}
    for code, tag in t.tags.items():
        store.write_values(tag, [(m.pk, canary(code, m)) for m in t.members], source=ValueSource.IMPORTED, actor=None)
    t.derived = definitions.tag_save(
        actor=None,
        data={
            "group": t.groups["open"],
            "code": "derived",
            "name": "Derived",
            "value_type": "enum",
            "computation": "rule",
        },
        options=[("yes", "Yes"), ("no", "No")],
    )
    _users(gov, t)
    return t


def _users(gov, t: TagWorld) -> None:
    w = gov.world
    editor = make_user("brand_operator", "editor_a", brand=w.brand_a)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=EDITOR_PERMS))
    gov.users["editor"] = editor
    readers = Group.objects.create(name="Secret readers")
    granted = make_user("brand_operator", "granted_a", brand=w.brand_a)
    granted.groups.add(readers)
    assign_perm("tags.view_taggroup", readers, t.groups["secret"])
    gov.users["granted"] = granted
    one_tag = make_user("brand_operator", "one_tag_a", brand=w.brand_a)
    assign_perm("tags.view_tagdefinition", one_tag, t.tags["secret_note"])
    gov.users["one_tag"] = one_tag


def rule_reading(code: str) -> dict:
    return {"cases": [{"when": {"==": [{"var": f"tags.{code}"}, "x"]}, "then": "yes"}], "default": "no"}
