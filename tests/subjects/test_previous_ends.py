"""A relationship upsert that moves relationships to other ends lists their ends as stored before
the write in its domain event (``summary.previous_ends``), read in at most one statement per
batch and none for a batch copied in as all new."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import DomainEvent
from subjects.models import Relationship
from subjects.services import relationship_bulk_upsert, relationship_save, relationship_type_save
from tests.factories import SubjectFactory

STORED_ENDS = "x.from_subject_id, x.to_subject_id, x.subject_id FROM"  # scope_checks.stored_relationship_ends


def visit(n, member, clinic, **extra):
    return {"type": "visited", "source": "crm", "external_id": f"V{n}", "from": member.id, "to": clinic.id, **extra}


def last_summary():
    return DomainEvent.objects.filter(object_type="subjects.relationship").latest("id").summary


def stored_ends_reads(captured):
    return [q["sql"] for q in captured.captured_queries if STORED_ENDS in q["sql"]]


@pytest.fixture
def members(world):
    return [SubjectFactory(subject_type=world.member_type, display_name=f"m{i}") for i in range(3)]


@pytest.fixture
def visits(world, members):
    a = world.clinic_a_sh
    relationship_bulk_upsert(actor=None, items=[visit(i, m, a) for i, m in enumerate(members)])
    return {r.external_id: r for r in Relationship.objects.all()}


def test_a_move_lists_exactly_the_moved_relationships_old_ends(world, members, visits):
    a, b = world.clinic_a_sh, world.clinic_b_bj
    items = [
        visit(0, members[0], b),  # moved: to clinic B
        visit(1, members[1], a),  # unchanged
        visit(2, members[2], a, weight=3.0),  # updated, same ends
        visit(3, members[0], a),  # new
        visit(4, members[1], b) | {"type": "visited", "external_id": "V4"},  # new
    ]
    result = relationship_bulk_upsert(actor=None, items=items)

    assert [r.status for r in result.results] == ["updated", "unchanged", "updated", "created", "created"]
    summary = last_summary()
    assert summary["previous_ends"] == [[world.visited.id, members[0].id, a.id, None]]
    assert Relationship.objects.get(pk=visits["V0"].pk).to_subject_id == b.id
    assert sorted(summary["ids"]) == sorted(r.id for r in result.results if r.status != "unchanged")


def test_a_move_of_the_from_end_lists_it_too(world, members, visits):
    relationship_bulk_upsert(actor=None, items=[visit(1, members[2], world.clinic_a_sh)])

    assert last_summary()["previous_ends"] == [[world.visited.id, members[1].id, world.clinic_a_sh.id, None]]


def test_weight_attribute_or_period_changes_list_none(world, members, visits):
    a = world.clinic_a_sh
    items = [
        visit(0, members[0], a, weight=2.5),
        visit(1, members[1], a, attributes={"note": "x"}),
        visit(2, members[2], a, valid_from="2026-01-01"),
    ]
    result = relationship_bulk_upsert(actor=None, items=items)

    assert result.counts == {"created": 0, "updated": 3, "unchanged": 0}
    assert "previous_ends" not in last_summary()


def test_an_all_new_batch_lists_none(world, members):
    relationship_bulk_upsert(actor=None, items=[visit(i, m, world.clinic_b_bj) for i, m in enumerate(members)])

    summary = last_summary()
    assert summary["created"] == 3 and "previous_ends" not in summary


@pytest.mark.postgres  # the all-new COPY path is PostgreSQL's
def test_an_all_new_batch_reads_no_stored_ends(world, members, visits):
    items = [visit(10 + i, m, world.clinic_b_bj) for i, m in enumerate(members)]
    with CaptureQueriesContext(connection) as captured:
        result = relationship_bulk_upsert(actor=None, items=items)

    assert result.counts["created"] == 3
    assert stored_ends_reads(captured) == []


def test_a_batch_with_stored_keys_reads_the_stored_ends_once(world, members, visits):
    items = [visit(i, m, world.clinic_b_bj) for i, m in enumerate(members)] + [visit(9, members[0], world.clinic_b_bj)]
    with CaptureQueriesContext(connection) as captured:
        relationship_bulk_upsert(actor=None, items=items)

    assert len(stored_ends_reads(captured)) == 1
    a = world.clinic_a_sh.id
    assert last_summary()["previous_ends"] == [[world.visited.id, m.id, a, None] for m in members]


def test_a_taggable_relationship_lists_its_own_subject(world, members):
    rtype = relationship_type_save(
        actor=None,
        data={
            "code": "served_by",
            "name": "Served by",
            "from_type": world.member_type,
            "to_type": world.clinic_type,
            "taggable": True,
        },
    )
    item = {"type": "served_by", "source": "crm", "external_id": "S1", "from": members[0].id}
    relationship_bulk_upsert(actor=None, items=[{**item, "to": world.clinic_a_sh.id}])
    own = Relationship.objects.get(external_id="S1").subject_id

    relationship_bulk_upsert(actor=None, items=[{**item, "to": world.clinic_b_bj.id}])

    assert own is not None
    assert last_summary()["previous_ends"] == [[rtype.id, members[0].id, world.clinic_a_sh.id, own]]
    assert Relationship.objects.get(external_id="S1").subject_id == own


def test_a_single_save_that_moves_a_relationship_lists_its_old_ends(world, members, visits):
    relationship = visits["V1"]
    relationship_save(actor=None, data={"to": world.clinic_b_bj.id}, instance=relationship)

    event = DomainEvent.objects.filter(action="relationships.saved").latest("id")
    assert event.summary["previous_ends"] == [[world.visited.id, members[1].id, world.clinic_a_sh.id, None]]
    relationship_save(actor=None, data={"weight": 4.0}, instance=Relationship.objects.get(pk=relationship.pk))
    assert "previous_ends" not in DomainEvent.objects.filter(action="relationships.saved").latest("id").summary


def test_the_api_patch_that_moves_a_relationship_lists_its_old_ends(api, world, members, visits):
    relationship = visits["V2"]
    response = api.patch(f"/api/v1/relationships/{relationship.pk}/", {"to": world.clinic_b_bj.id}, format="json")

    assert response.status_code == 200, response.json()
    assert last_summary()["previous_ends"] == [[world.visited.id, members[2].id, world.clinic_a_sh.id, None]]
