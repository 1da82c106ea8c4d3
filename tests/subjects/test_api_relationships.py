import threading

import pytest
from django.db import connection

from subjects.models import Relationship, RelationshipType, Subject
from subjects.services import relationship_bulk_upsert, relationship_type_save, subject_bulk_upsert
from tests.factories import RelationshipFactory, SubjectFactory

BULK = "/api/v1/relationships/bulk/"


def rel(type_, n, from_, to, **extra):
    return {"type": type_, "source": "crm", "external_id": f"{type_}-{n}", "from": from_, "to": to, **extra}


@pytest.fixture
def people(world):
    members = [SubjectFactory(subject_type=world.member_type, source="crm", external_id=f"M{n}") for n in range(3)]
    doctors = [SubjectFactory(subject_type=world.doctor_type, source="his", external_id=f"D{n}") for n in range(2)]
    return members, doctors


def test_bulk_relationships_by_id_and_by_key(api, world, people):
    members, _ = people
    items = [
        rel("visited", 1, members[0].id, world.clinic_a_sh.id, weight=2.5, valid_from="2026-01-05"),
        rel("visited", 2, {"source": "crm", "external_id": "M1"}, {"source": "hq", "external_id": "C2"}),
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 2
    first = Relationship.objects.get(external_id="visited-1")
    assert (first.from_subject, first.to_subject, first.weight) == (members[0], world.clinic_a_sh, 2.5)
    assert first.valid_from.isoformat().startswith("2026-01-05")
    assert Relationship.objects.get(external_id="visited-2").to_subject == world.clinic_b_bj
    again = api.post(BULK, {"items": items}, format="json").json()
    assert again["unchanged"] == 2


def test_wrong_end_types_and_unknown_ends_are_named(api, world, people):
    members, doctors = people
    items = [
        rel("visited", 1, doctors[0].id, world.clinic_a_sh.id),
        rel("visited", 2, members[0].id, {"source": "hq", "external_id": "NOPE"}),
        rel("visited", 3, members[0].id, 999999),
        rel("visited", 4, members[0].id, world.clinic_a_sh.id, valid_from="2026-02-01", valid_to="2026-01-01"),
        rel("visited", 5, members[0].id, world.clinic_a_sh.id, weight="heavy"),
        rel("visited", 6, members[0].id, world.clinic_a_sh.id, valid_from="yesterday"),
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    details = {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}
    assert details == {
        (3, "valid_to", "invalid_period"),
        (4, "weight", "invalid"),
        (5, "valid_from", "invalid_date"),
    }
    response = api.post(BULK, {"items": items[:3]}, format="json")
    details = {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}
    assert details == {(0, "from", "wrong_type"), (1, "to", "not_found"), (2, "to", "not_found")}
    assert not Relationship.objects.exists()


def test_cardinality_inside_the_batch_and_against_storage(api, world, people):
    _, doctors = people
    ok = api.post(BULK, {"items": [rel("works_at", 1, doctors[0].id, world.clinic_a_sh.id)]}, format="json")
    assert ok.status_code == 200
    clash = api.post(
        BULK,
        {
            "items": [
                rel("works_at", 2, doctors[0].id, world.clinic_b_bj.id),
                rel("works_at", 3, doctors[1].id, world.clinic_a_sh.id),
                rel("works_at", 4, doctors[1].id, world.clinic_b_bj.id),
            ]
        },
        format="json",
    )
    assert clash.status_code == 400
    details = {(d["index"], d["field"], d["code"]) for d in clash.json()["error"]["details"]}
    assert details == {(0, "from", "cardinality"), (2, "from", "cardinality")}
    assert Relationship.objects.count() == 1


def test_ending_a_relationship_frees_its_slot_in_the_same_batch(api, world, people):
    _, doctors = people
    api.post(BULK, {"items": [rel("works_at", 1, doctors[0].id, world.clinic_a_sh.id)]}, format="json")
    move = [
        rel("works_at", 1, doctors[0].id, world.clinic_a_sh.id, valid_to="2026-06-30"),
        rel("works_at", 2, doctors[0].id, world.clinic_b_bj.id, valid_from="2026-07-01"),
    ]
    response = api.post(BULK, {"items": move}, format="json")
    assert response.status_code == 200, response.json()
    assert [r["status"] for r in response.json()["results"]] == ["updated", "created"]
    current = api.get("/api/v1/relationships/", {"from_subject": doctors[0].id, "valid_at": "2026-08-01T00:00:00Z"})
    assert [r["external_id"] for r in current.json()["results"]] == ["works_at-2"]


def test_one_to_one_limits_both_ends(api, world, people):
    members, _ = people
    assert api.post(BULK, [rel("spouse", 1, members[0].id, members[1].id)], format="json").status_code == 200
    response = api.post(BULK, [rel("spouse", 2, members[2].id, members[1].id)], format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "to"


def test_a_taggable_relationship_gets_its_own_subject(api, world, people):
    members, doctors = people
    rtype = relationship_type_save(
        actor=None,
        data={
            "code": "served_by",
            "name": "Served by",
            "from_type": world.member_type,
            "to_type": world.doctor_type,
            "taggable": True,
        },
    )
    assert rtype.subject_type.code == "rel_served_by" and rtype.subject_type.category == "relationship"
    members[0].brand = world.brand_a
    members[0].save()
    response = api.post(BULK, [rel("served_by", 1, members[0].id, doctors[0].id)], format="json")
    assert response.status_code == 200, response.json()
    relationship = Relationship.objects.get(external_id="served_by-1")
    assert relationship.subject.subject_type == rtype.subject_type
    assert relationship.subject.brand == world.brand_a
    assert api.post(BULK, [rel("served_by", 1, members[0].id, doctors[0].id)], format="json").json()["unchanged"] == 1
    assert Subject.objects.filter(subject_type=rtype.subject_type).count() == 1


def test_a_subjects_relationships_in_both_directions_paginated(api, world, people):
    members, _ = people
    for n in range(5):
        RelationshipFactory(relationship_type=world.visited, from_subject=members[n % 3], to_subject=world.clinic_a_sh)
    RelationshipFactory(relationship_type=world.spouse, from_subject=members[1], to_subject=members[0])
    RelationshipFactory(relationship_type=world.spouse, from_subject=members[0], to_subject=members[2])
    url = f"/api/v1/subjects/{members[0].id}/relationships/"
    both = api.get(url).json()["results"]
    assert len(both) == 4
    assert len(api.get(url, {"direction": "incoming"}).json()["results"]) == 1
    assert len(api.get(url, {"direction": "outgoing", "type": "visited"}).json()["results"]) == 2
    clinic = api.get(f"/api/v1/subjects/{world.clinic_a_sh.id}/relationships/", {"page_size": 3}).json()
    assert len(clinic["results"]) == 3 and clinic["next"]
    assert len(api.get(clinic["next"]).json()["results"]) == 2


def test_single_relationship_crud_and_key_immutability(api, world, people):
    members, _ = people
    created = api.post("/api/v1/relationships/", rel("visited", 1, members[0].id, world.clinic_a_sh.id), format="json")
    assert created.status_code == 201, created.json()
    url = f"/api/v1/relationships/{created.json()['id']}/"
    assert api.patch(url, {"weight": 3}, format="json").json()["weight"] == 3.0
    assert api.patch(url, {"type": "spouse"}, format="json").status_code == 400
    assert api.delete(url).status_code == 204
    assert not Relationship.objects.exists()


def test_changing_cardinality_is_refused_when_stored_relationships_violate_it(api, world, people):
    members, _ = people
    for _ in range(2):
        RelationshipFactory(relationship_type=world.visited, from_subject=members[0], to_subject=world.clinic_a_sh)
    response = api.patch(f"/api/v1/relationship-types/{world.visited.id}/", {"cardinality": "n:1"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "cardinality"
    assert RelationshipType.objects.get(pk=world.visited.pk).cardinality == "n:m"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_batches_store_each_row_once(world):
    members = subject_bulk_upsert(
        actor=None, items=[{"type": "member", "source": "crm", "external_id": f"M{n}"} for n in range(50)]
    ).results
    items = [rel("visited", n, members[n].id, world.clinic_a_sh.id) for n in range(50)]
    outcomes, barrier = [], threading.Barrier(4)

    def post():
        barrier.wait()
        try:
            outcomes.append(relationship_bulk_upsert(actor=None, items=items).counts)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Relationship.objects.count() == 50
    assert sum(o["created"] for o in outcomes) == 50
    assert sorted(o["unchanged"] for o in outcomes) == [0, 50, 50, 50]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_racing_for_one_slot_leave_one_winner(world):
    from common.errors import ServiceError

    doctors = subject_bulk_upsert(actor=None, items=[{"type": "doctor", "source": "his", "external_id": "D"}]).results
    errors, barrier = [], threading.Barrier(2)

    def post(n, clinic):
        barrier.wait()
        try:
            relationship_bulk_upsert(actor=None, items=[rel("works_at", n, doctors[0].id, clinic)])
        except ServiceError as exc:  # ConflictError at commit, or the pre-check saw the winner
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=post, args=(n, c.id)) for n, c in ((1, world.clinic_a_sh), (2, world.clinic_b_bj))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Relationship.objects.filter(relationship_type=world.works_at).count() == 1
    assert len(errors) == 1


def test_tightening_cardinality_fills_the_slots_and_is_audited(api, world, people):
    from audit.models import DomainEvent

    members, _ = people
    RelationshipFactory(relationship_type=world.visited, from_subject=members[0], to_subject=world.clinic_a_sh)
    RelationshipFactory(relationship_type=world.visited, from_subject=members[1], to_subject=world.clinic_a_sh)
    response = api.patch(f"/api/v1/relationship-types/{world.visited.id}/", {"cardinality": "n:1"}, format="json")
    assert response.status_code == 200, response.json()
    assert set(Relationship.objects.values_list("from_slot", flat=True)) == {members[0].id, members[1].id}
    event = DomainEvent.objects.get(action="relationships.cardinality_reslotted")
    assert (event.row_count, event.summary["to"]) == (2, "n:1")
    second = api.post(BULK, [rel("visited", 9, members[0].id, world.clinic_b_bj.id)], format="json")
    assert second.status_code == 400
    assert second.json()["error"]["details"][0]["code"] == "cardinality"
