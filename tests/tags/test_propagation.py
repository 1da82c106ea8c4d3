"""Propagated tags: roll-up, push-down and multi-hop compiled to SQL, validated on save.

Fixtures here (``pw``: a small propagation world) are reused by the real-time tests.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from common.errors import ServiceError
from subjects.models import Relationship, RelationshipType
from tags.models import DependencyKind, TagDependency, TagRule, TagValue, TagValueChange
from tags.propagation.definitions import activate_propagation, preview_propagation, propagation_save
from tags.propagation.recompute import recompute_all, recompute_ids
from tags.services.definitions import archive
from tags.services.store import write_values
from tests.factories import SubjectFactory
from tests.factories.tags import TagDefinitionFactory, TagGroupFactory

SKIN = ["dry", "oily", "normal"]


class PropWorld:
    """4 members, 2 clinics in 2 regions; visits; a doctor with specialties; skin / spend tags."""

    def __init__(self, world):
        self.w = world
        self.members = [SubjectFactory(subject_type=world.member_type, display_name=f"m{i}") for i in range(4)]
        self.c1, self.c2 = world.clinic_a_sh, world.clinic_b_bj
        self.doctor = SubjectFactory(subject_type=world.doctor_type)
        self.in_region = RelationshipType.objects.create(
            code="in_region", name="In region", from_type=world.clinic_type, to_type=world.region_type
        )
        self.treated_by = RelationshipType.objects.create(
            code="treated_by", name="Treated by", from_type=world.member_type, to_type=world.doctor_type
        )
        self.groups = {
            t.code: TagGroupFactory(subject_type=t, code=f"g_{t.code}")
            for t in (world.member_type, world.clinic_type, world.region_type, world.doctor_type)
        }
        self.skin = self.tag("member", "skin", "enum", options=SKIN)
        self.spend = self.tag("member", "spend", "number")
        self.specialties = self.tag("doctor", "specialties", "multi_enum", options=["laser", "surgery"])
        self.promo = self.tag("clinic", "promotion", "enum", options=["discount", "gift"])
        m = self.members
        self.rel(world.visited, m[0], self.c1)
        self.rel(world.visited, m[1], self.c1)
        self.rel(world.visited, m[2], self.c1)
        self.rel(world.visited, m[2], self.c2)
        self.rel(world.visited, m[3], self.c2)
        self.rel(self.in_region, self.c1, world.shanghai)
        self.rel(self.in_region, self.c2, world.beijing)
        self.rel(self.treated_by, m[0], self.doctor)
        write_values(
            self.skin,
            [(m[0].id, "dry"), (m[1].id, "oily"), (m[2].id, "dry"), (m[3].id, "normal")],
            source="manual",
            actor=None,
        )
        write_values(self.spend, [(m[0].id, 100), (m[1].id, 50.5), (m[2].id, 10)], source="manual", actor=None)
        write_values(self.specialties, [(self.doctor.id, ["laser"])], source="manual", actor=None)
        write_values(self.promo, [(self.c1.id, "discount"), (self.c2.id, "gift")], source="manual", actor=None)

    def tag(self, type_code: str, code: str, value_type: str, *, options=None, computation="assigned"):
        return TagDefinitionFactory(
            group=self.groups[type_code],
            code=code,
            value_type=value_type,
            computation=computation,
            status="draft" if computation != "assigned" else "active",
            options=options,
        )

    def rel(self, rtype, a, b, **kw):
        return Relationship.objects.create(
            relationship_type=rtype,
            from_subject=a,
            to_subject=b,
            source="t",
            external_id=f"{rtype.code}:{a.id}:{b.id}:{kw.get('valid_from')}",
            **kw,
        )

    def propagated(self, type_code: str, code: str, value_type: str, body: dict, *, options=None):
        tag = self.tag(type_code, code, value_type, options=options, computation="propagated")
        propagation_save(actor=None, tag=tag, document={"propagate": body}, activate=True)
        tag.refresh_from_db()
        return tag


@pytest.fixture
def pw(world, django_capture_on_commit_callbacks):
    return PropWorld(world)


def values(tag) -> dict:
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def full(tag) -> dict:
    recompute_all(tag)
    return values(tag)


# ---- roll-up ----------------------------------------------------------------------------------


def test_share_per_value_rolls_members_up_to_clinics(pw):
    mix = pw.propagated(
        "clinic",
        "skin_mix",
        "text",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share"},
    )
    got = full(mix)
    assert got[pw.c1.id] == {"dry": pytest.approx(2 / 3, abs=1e-6), "oily": pytest.approx(1 / 3, abs=1e-6)}
    assert got[pw.c2.id] == {"dry": 0.5, "normal": 0.5}
    row = TagValue.objects.get(tag=mix, subject=pw.c1)
    assert row.source == "propagated" and row.rule_version == 1


def test_share_of_one_value_count_sum_avg_min_max(pw):
    share = pw.propagated(
        "clinic",
        "dry_share",
        "number",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share", "value": "dry"},
    )
    count = pw.propagated(
        "clinic",
        "members",
        "number",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "count"},
    )
    total = pw.propagated(
        "clinic",
        "spend_sum",
        "number",
        {"from": {"tag": "spend"}, "path": [{"relationship": "visited"}], "aggregate": "sum"},
    )
    avg = pw.propagated(
        "clinic",
        "spend_avg",
        "number",
        {"from": {"tag": "spend"}, "path": [{"relationship": "visited"}], "aggregate": "avg"},
    )
    low = pw.propagated(
        "clinic",
        "spend_min",
        "number",
        {"from": {"tag": "spend"}, "path": [{"relationship": "visited"}], "aggregate": "min"},
    )
    assert full(share) == {pw.c1.id: pytest.approx(0.666667), pw.c2.id: 0.5}
    assert full(count) == {pw.c1.id: 3, pw.c2.id: 2}
    assert full(total) == {pw.c1.id: 160.5, pw.c2.id: 10}
    assert full(avg) == {pw.c1.id: 53.5, pw.c2.id: 10}
    assert full(low) == {pw.c1.id: 10, pw.c2.id: 10}


def test_top_k_and_mode(pw):
    top = pw.propagated(
        "clinic",
        "top_skin",
        "multi_enum",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "top_k", "k": 1},
        options=SKIN,
    )
    mode = pw.propagated(
        "clinic",
        "main_skin",
        "enum",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "mode"},
        options=SKIN,
    )
    assert full(top) == {pw.c1.id: ["dry"], pw.c2.id: ["dry"]}  # c2: dry and normal tie; the smaller value wins
    assert full(mode) == {pw.c1.id: "dry", pw.c2.id: "dry"}


def test_two_hops_to_regions_counts_each_member_once(pw):
    m = pw.members
    pw.rel(
        pw.w.visited, m[3], pw.c1, valid_from=timezone.now() - dt.timedelta(days=3)
    )  # m3 now in both regions' clinics
    dry = pw.propagated(
        "region",
        "dry_share",
        "number",
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}, {"relationship": "in_region"}],
            "aggregate": "share",
            "value": "dry",
        },
    )
    # Shanghai (c1): m0 dry, m1 oily, m2 dry, m3 normal → 0.5; Beijing (c2): m2 dry, m3 normal → 0.5
    assert full(dry) == {pw.w.shanghai.id: 0.5, pw.w.beijing.id: 0.5}
    count = pw.propagated(
        "region",
        "people",
        "number",
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}, {"relationship": "in_region"}],
            "aggregate": "count",
        },
    )
    assert full(count) == {pw.w.shanghai.id: 4, pw.w.beijing.id: 2}


def test_weighted_share_uses_relationship_weights(pw):
    Relationship.objects.filter(relationship_type=pw.w.visited, from_subject=pw.members[0]).update(weight=3)
    mix = pw.propagated(
        "clinic",
        "w_dry",
        "number",
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}],
            "aggregate": "share",
            "value": "dry",
            "weighted": True,
        },
    )
    assert full(mix)[pw.c1.id] == pytest.approx(4 / 5, abs=1e-6)  # (3 + 1) / (3 + 1 + 1)


# ---- push-down and copy -----------------------------------------------------------------------


def test_push_down_copies_the_most_recent_clinics_value(pw):
    m = pw.members
    pref = pw.propagated(
        "member",
        "promo_pref",
        "enum",
        {"from": {"tag": "promotion"}, "path": [{"relationship": "visited", "direction": "in"}], "aggregate": "copy"},
        options=["discount", "gift"],
    )
    got = full(pref)
    assert got[m[0].id] == "discount" and got[m[3].id] == "gift"
    assert got[m[2].id] == "gift"  # visited both: the later relationship (c2) wins
    Relationship.objects.filter(from_subject=m[2], to_subject=pw.c1).update(
        valid_from=timezone.now() - dt.timedelta(hours=1)
    )
    Relationship.objects.filter(from_subject=m[2], to_subject=pw.c2).update(
        valid_from=timezone.now() - dt.timedelta(days=9)
    )
    assert recompute_ids(pref, [m[2].id]).changed_ids == [m[2].id]
    assert values(pref)[m[2].id] == "discount"


def test_copy_all_gathers_values_and_any_detects_a_specialty(pw):
    m = pw.members
    both = pw.propagated(
        "member",
        "promos",
        "multi_enum",
        {"from": {"tag": "promotion"}, "path": [{"relationship": "visited"}], "aggregate": "copy", "policy": "all"},
        options=["discount", "gift"],
    )
    assert full(both)[m[2].id] == ["discount", "gift"]
    laser = pw.propagated(
        "member",
        "seen_laser",
        "boolean",
        {
            "from": {"tag": "specialties"},
            "path": [{"relationship": "treated_by"}],
            "aggregate": "any",
            "value": "laser",
        },
    )
    assert full(laser) == {m[0].id: True}


def test_attribute_source_and_valid_now_and_window(pw):
    m = pw.members
    pw.w.member_type.attribute_schema["properties"]["spend"] = {"type": "number"}
    for member, spend in zip(m, [1, 2, 3, 4], strict=True):
        member.attributes = {"spend": spend}
        member.save()
    ended = Relationship.objects.get(from_subject=m[3], to_subject=pw.c2)
    ended.valid_to = timezone.now() - dt.timedelta(days=1)
    ended.save()
    old = Relationship.objects.get(from_subject=m[0], to_subject=pw.c1)
    old.valid_from = timezone.now() - dt.timedelta(days=400)
    old.save()
    total = pw.propagated(
        "clinic",
        "attr_sum",
        "number",
        {"from": {"attribute": "spend"}, "path": [{"relationship": "visited", "within_days": 180}], "aggregate": "sum"},
    )
    assert full(total) == {pw.c1.id: 5, pw.c2.id: 3}  # c1: m1 + m2 (m0's visit is too old); c2: m2 (m3's ended)


# ---- writes go through the one guarded writer ----------------------------------------------


def test_no_change_writes_nothing_and_lost_inputs_remove_values(pw):
    mix = pw.propagated(
        "clinic",
        "skin_mix",
        "text",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share"},
    )
    recompute_all(mix)
    history = TagValueChange.objects.filter(tag=mix).count()
    assert recompute_all(mix) == 0
    assert TagValueChange.objects.filter(tag=mix).count() == history
    Relationship.objects.filter(to_subject=pw.c2).delete()
    assert recompute_ids(mix, [pw.c2.id]).removed == [pw.c2.id]
    assert pw.c2.id not in values(mix)
    assert TagValueChange.objects.filter(tag=mix, subject=pw.c2).last().new_value is None


def test_incremental_equals_full(pw):
    count = pw.propagated(
        "region",
        "people",
        "number",
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}, {"relationship": "in_region"}],
            "aggregate": "count",
        },
    )
    ids = [pw.w.shanghai.id, pw.w.beijing.id, pw.w.china.id]
    recompute_ids(count, ids[:1])
    recompute_ids(count, ids[1:])
    incremental = values(count)
    TagValue.objects.filter(tag=count).delete()
    assert full(count) == incremental


def test_preview_counts_without_writing(pw):
    tag = pw.tag("clinic", "members_p", "number", computation="propagated")
    doc = {"propagate": {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "count"}}
    preview = preview_propagation(tag, doc)
    assert preview["counts"] == {"3": 1, "2": 1} and preview["changes"] == 2 and preview["total"] == 2
    assert not TagValue.objects.filter(tag=tag).exists()
    from tags.services.preview import preview_rule

    assert preview_rule(tag, doc) == preview  # tags-core's preview dispatches propagated tags


# ---- validation -------------------------------------------------------------------------------


def errors_of(tag, body) -> list[tuple[str, str]]:
    with pytest.raises(ServiceError) as info:
        propagation_save(actor=None, tag=tag, document={"propagate": body})
    return [(e.field, e.code) for e in info.value.errors]


def test_bad_documents_name_the_problem(pw):
    tag = pw.tag("clinic", "bad", "number", computation="propagated")
    assert ("propagate.path[1]", "path_mismatch") in errors_of(
        tag,
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}, {"relationship": "visited", "direction": "out"}],
            "aggregate": "count",
        },
    )
    # member → clinic → (back to) member ends at the wrong type
    assert ("propagate.path", "path_mismatch") in errors_of(
        tag,
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited"}, {"relationship": "visited"}],
            "aggregate": "count",
        },
    )
    assert ("propagate.path", "path_mismatch") in errors_of(
        tag, {"from": {"tag": "skin"}, "path": [{"relationship": "treated_by"}], "aggregate": "count"}
    )
    assert ("propagate.aggregate", "wrong_type") in errors_of(
        tag, {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "sum"}
    )
    assert ("propagate.from.tag", "unknown") in errors_of(
        tag, {"from": {"tag": "nope"}, "path": [{"relationship": "visited"}], "aggregate": "count"}
    )
    assert ("propagate.path[0].relationship", "unknown") in errors_of(
        tag, {"from": {"tag": "skin"}, "path": [{"relationship": "nope"}], "aggregate": "count"}
    )
    text = pw.tag("clinic", "bad_text", "number", computation="propagated")
    assert ("propagate.aggregate", "wrong_type") in errors_of(
        text, {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share"}
    )
    assert not TagRule.objects.filter(tag__in=[tag, text]).exists()


def test_dependencies_cycles_and_archive(pw):
    spouse_skin = pw.propagated(
        "member",
        "spouse_skin",
        "enum",
        {"from": {"tag": "skin"}, "path": [{"relationship": "spouse", "direction": "out"}], "aggregate": "copy"},
        options=SKIN,
    )
    assert TagDependency.objects.get(tag=spouse_skin).depends_on == pw.skin
    assert TagDependency.objects.get(tag=spouse_skin).kind == DependencyKind.PROPAGATION
    back = pw.propagated(
        "member",
        "back",
        "enum",
        {"from": {"tag": "spouse_skin"}, "path": [{"relationship": "spouse", "direction": "out"}], "aggregate": "copy"},
        options=SKIN,
    )
    # A new version of spouse_skin that reads "back" would close spouse_skin → back → spouse_skin.
    with pytest.raises(ServiceError) as info:
        propagation_save(
            actor=None,
            tag=spouse_skin,
            document={
                "propagate": {
                    "from": {"tag": "back"},
                    "path": [{"relationship": "spouse", "direction": "out"}],
                    "aggregate": "copy",
                }
            },
        )
    assert info.value.code == "cycle" and "spouse_skin → back → spouse_skin" in info.value.message
    with pytest.raises(ServiceError) as info:
        archive(actor=None, tag=pw.skin)
    assert "spouse_skin" in info.value.message
    assert back.version == 1


def test_activation_replaces_dependencies(pw):
    tag = pw.propagated(
        "clinic", "x", "number", {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "count"}
    )
    propagation_save(
        actor=None,
        tag=tag,
        document={"propagate": {"from": {"tag": "spend"}, "path": [{"relationship": "visited"}], "aggregate": "sum"}},
    )
    activate_propagation(actor=None, tag=tag, version=2, recompute=False)
    assert list(TagDependency.objects.filter(tag=tag).values_list("depends_on__code", flat=True)) == ["spend"]


def test_relationship_subjects_roll_up_to_the_guide(pw, django_capture_on_commit_callbacks):
    """A member–consultant relationship's own "service satisfaction" rolls up to the consultant."""
    from subjects.models import Subject
    from subjects.services import relationship_bulk_upsert
    from subjects.services.objects import relationship_type_save

    w = pw.w
    consultant_type = type(w.member_type).objects.create(code="consultant", name="Consultant", category="staff")
    served = relationship_type_save(
        actor=None,
        data={
            "code": "served_by",
            "name": "Served by",
            "from_type": w.member_type,
            "to_type": consultant_type,
            "taggable": True,
        },
    )
    guide = SubjectFactory(subject_type=consultant_type)
    m = pw.members
    relationship_bulk_upsert(
        actor=None,
        items=[
            {"type": "served_by", "source": "t", "external_id": f"s{i}", "from": m[i].id, "to": guide.id}
            for i in range(3)
        ],
    )
    own = list(
        Relationship.objects.filter(relationship_type=served).order_by("id").values_list("subject_id", flat=True)
    )
    assert len(own) == 3 and all(own)
    rel_type = Subject.objects.get(pk=own[0]).subject_type
    group = TagGroupFactory(subject_type=rel_type, code="service")
    satisfaction = TagDefinitionFactory(group=group, code="satisfaction", value_type="number")
    write_values(satisfaction, [(own[0], 5), (own[1], 3), (own[2], 4)], source="imported", actor=None)
    pw.groups["consultant"] = TagGroupFactory(subject_type=consultant_type, code="g_consultant")
    avg = pw.propagated(
        "consultant",
        "satisfaction",
        "number",
        {
            "from": {"tag": "satisfaction"},
            "path": [{"relationship": "served_by", "direction": "subject_to"}],
            "aggregate": "avg",
        },
    )
    assert full(avg) == {guide.id: 4}
    bad = pw.tag("member", "sat", "number", computation="propagated")
    assert ("propagate.path[0].direction", "invalid") in errors_of(
        bad,
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "visited", "direction": "subject_to"}],
            "aggregate": "count",
        },
    )


def test_explain_names_the_path_and_the_inputs(pw):
    from tags.propagation.explain import explain

    mix = pw.propagated(
        "clinic",
        "skin_mix",
        "text",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share"},
    )
    recompute_all(mix)
    why = explain(mix, pw.c2.id)
    assert why["source"] == "propagated" and why["value"] == {"dry": 0.5, "normal": 0.5}
    assert why["why"]["kind"] == "propagation" and "visited" in why["why"]["summary"]
    assert why["why"]["inputs_total"] == 2
    assert {(i["subject_id"], i["value"]) for i in why["why"]["inputs"]} == {
        (pw.members[2].id, "dry"),
        (pw.members[3].id, "normal"),
    }
    assert why["why"]["recomputed_now"] == why["value"]
    assert why["last_change"]["new_value"] == why["value"]
    manual = explain(pw.skin, pw.members[0].id)
    assert manual["why"]["kind"] == "assigned" and manual["value"] == "dry"
