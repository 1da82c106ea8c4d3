"""Event ingestion API: single and batch, idempotent replays, per-item errors, nothing half-stored."""

from __future__ import annotations

import pytest

from audit.models import DomainEvent
from tags.models import Event
from tests.factories import SubjectFactory

URL, BATCH = "/api/v1/events/", "/api/v1/events/batch/"


def event(who, n, **extra) -> dict:
    return {
        "source": "pos",
        "event_id": f"e{n}",
        "type": "purchase",
        "occurred_at": "2026-11-30T10:00:00Z",
        "properties": {"amount": 100 + n},
        "subject": who.id if who is not None else None,
        **extra,
    }


@pytest.fixture
def member(world):
    return SubjectFactory(subject_type=world.member_type)


def test_single_event_is_stored_and_a_replay_returns_the_original(api, member):
    first = api.post(URL, event(member, 1), format="json")
    assert first.status_code == 201, first.json()
    body = first.json()
    assert body["status"] == "created" and body["subject"] == member.id
    stored = Event.objects.get(pk=body["id"])
    assert (stored.type, stored.properties, stored.source, stored.event_id) == (
        "purchase",
        {"amount": 101},
        "pos",
        "e1",
    )
    assert stored.occurred_at.isoformat() == "2026-11-30T10:00:00+00:00"
    again = api.post(URL, event(member, 1, properties={"amount": 5}), format="json")
    assert again.status_code == 200
    assert again.json() == {"id": body["id"], "subject": member.id, "status": "replayed"}
    assert Event.objects.count() == 1 and Event.objects.get().properties == {"amount": 101}
    assert DomainEvent.objects.filter(action="tags.events_ingested").count() == 1


def test_batch_mixes_new_and_replayed(api, member):
    api.post(URL, event(member, 1), format="json")
    response = api.post(BATCH, {"items": [event(member, 1), event(member, 2), event(member, 3)]}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["created"], body["replayed"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["replayed", "created", "created"]
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert Event.objects.count() == 3


def test_bad_items_are_named_and_nothing_is_stored(api, member):
    items = [
        event(member, 1),
        event(None, 2, subject=999_999),
        event(member, 3, type="Not A Slug"),
        event(member, 4, occurred_at="yesterday"),
        event(member, 1),
        event(member, 6, properties=[1]),
        {**event(member, 7), "colour": "red"},
        event(member, 8, subject=True),
        {k: v for k, v in event(member, 9).items() if k != "event_id"},
    ]
    response = api.post(BATCH, {"items": items}, format="json")
    assert response.status_code == 400
    details = {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}
    assert details >= {
        (1, "subject", "unknown"),
        (2, "type", "invalid"),
        (3, "occurred_at", "invalid"),
        (4, "event_id", "duplicate"),
        (5, "properties", "wrong_type"),
        (6, "colour", "invalid"),
        (7, "subject", "wrong_type"),
        (8, "event_id", "invalid"),
    }
    assert 0 not in {d[0] for d in details}
    assert not Event.objects.exists()


def test_batch_limit_and_shape(api, member):
    too_many = [event(member, i) for i in range(1001)]
    response = api.post(BATCH, {"items": too_many}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many"
    assert api.post(BATCH, {"items": "nope"}, format="json").status_code == 400
    assert api.post(URL, [1, 2], format="json").status_code == 400
    assert not Event.objects.exists()


def test_needs_permission(anon_api, member):
    assert anon_api.post(URL, event(member, 1), format="json").status_code in (401, 403)
    assert not Event.objects.exists()


def test_identifier_attribution_through_oneid(api, world):
    from identity.defaults import install_defaults
    from identity.models import SourceSystem
    from tests.identity.helpers import oneid_of, push

    install_defaults()
    SourceSystem.objects.create(code="crm", name="CRM", kind="crm", trust_rank=90, subject_type=world.member_type)
    push(("crm", "c1", {"name": "Li Lei", "phone": "+86 139 0000 1111"}))
    oneid = oneid_of("crm", "c1")
    ok = api.post(
        URL, event(None, 1, subject=None, identifier={"type": "phone", "value": "13900001111"}), format="json"
    )
    assert ok.status_code == 201, ok.json()
    assert ok.json()["subject"] == oneid
    unknown = api.post(
        BATCH,
        {"items": [event(None, 2, subject=None, identifier={"type": "phone", "value": "13900002222"})]},
        format="json",
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["details"][0]["index"] == 0
    assert unknown.json()["error"]["details"][0]["field"].startswith("identifier")
    assert Event.objects.count() == 1


def test_identifiers_are_resolved_set_based(api, world):
    """A batch attributed by identifier costs the same queries for 1 identifier as for 3; the answers
    equal one lookup per identifier (oneid_lookup)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from identity.defaults import install_defaults
    from identity.models import SourceSystem
    from identity.selectors import oneid_lookup, oneid_lookup_many
    from tests.identity.helpers import oneid_of, push

    install_defaults()
    SourceSystem.objects.create(code="crm", name="CRM", kind="crm", trust_rank=90, subject_type=world.member_type)
    phones = ["13900001111", "13900003333", "13900004444"]
    for n, phone in enumerate(phones):
        push(("crm", f"c{n}", {"name": f"P{n}", "phone": phone}))
    by_phone = [{"type": "phone", "value": p} for p in phones]
    counts = []
    for size in (1, 3):
        items = [event(None, size * 10 + i, subject=None, identifier=by_phone[i]) for i in range(size)]
        with CaptureQueriesContext(connection) as queries:
            response = api.post(BATCH, {"items": items}, format="json")
        assert response.status_code == 200, response.json()
        assert [r["subject"] for r in response.json()["results"]] == [oneid_of("crm", f"c{i}") for i in range(size)]
        counts.append(len(queries))
    assert counts[0] == counts[1]
    keys = [("phone", "13900001111", None), ("phone", "no digits", None), ("fax", "1", None)]
    many = oneid_lookup_many(keys)
    assert [o["id"] for o in many[keys[0]]] == [o["id"] for o in oneid_lookup(type_code="phone", value="13900001111")]
    assert many[keys[1]].errors[0].field == "value" and many[keys[2]].code == "not_found"
    bad = api.post(
        BATCH, {"items": [event(None, 99, subject=None, identifier={"type": "fax", "value": "1"})]}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == "identifier.type"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_posts_store_one_event(world):
    import threading

    from django.db import connection

    from tags.events import ingest_events

    member = SubjectFactory(subject_type=world.member_type)
    barrier, results = threading.Barrier(4), []

    def post():
        barrier.wait()
        try:
            results.append(ingest_events(actor=None, items=[event(member, 1)])[0].status)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created", "replayed", "replayed", "replayed"]
    assert Event.objects.count() == 1


def test_explain_endpoint(api, member):
    from tags.services.store import write_values
    from tests.factories.tags import TagDefinitionFactory, TagGroupFactory

    tag = TagDefinitionFactory(
        group=TagGroupFactory(subject_type=member.subject_type), code="vip", value_type="boolean"
    )
    write_values(tag, [(member.id, True)], source="manual", actor=None)
    response = api.get(f"/api/v1/tag-explain/?tag={tag.pk}&subject={member.id}")
    assert response.status_code == 200, response.content
    assert response.json()["value"] is True and response.json()["why"]["kind"] == "assigned"
    assert api.get(f"/api/v1/tag-explain/?tag=x&subject={member.id}").status_code == 400
    assert api.get(f"/api/v1/tag-explain/?tag=999999&subject={member.id}").status_code == 404
