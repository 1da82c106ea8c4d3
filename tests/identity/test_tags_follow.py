"""Tags and events follow OneID merges and splits (tags.identity_follow): events, manual values and
rule tags move with the records that brought them; every change is in the value history with the
resolution's correlation id and audited; batch resolution behaves as incremental."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import DomainEvent
from identity.models import MergeEvent, OneId, SourceRecord
from identity.resolution.batch import resolve_all
from identity.services import oneid_merge
from tags.events import ingest_events
from tags.models import Event, MergedValue, TagValue, TagValueChange
from tags.realtime import index as tag_index
from tags.services.definitions import rule_save
from tags.services.store import write_values
from tests.factories.tags import TagDefinitionFactory, TagGroupFactory

from .helpers import oneid_of, push

pytestmark = pytest.mark.django_db

SPEND_90 = {"formula": {"event_agg": {"type": "purchase", "fn": "sum", "property": "amount", "days": 90}}}
LI = {"name": "Li Lei", "phone": "13900001111"}
HAN = {"name": "Han Mei", "email": "han@mail.cn"}
BRIDGE = {"name": "Li Lei", "phone": "13900001111", "email": "han@mail.cn"}  # links both


@pytest.fixture(autouse=True)
def _forget_staging_tables():
    """Executing captured on-commit callbacks tells ``subjects.services.staging`` that its temporary
    tables were committed, but the test's transaction rolls their creation back: forget them."""
    yield
    from subjects.services import staging

    staging._stage_states.clear()


class Tags:
    def __init__(self, person_type):
        group = TagGroupFactory(subject_type=person_type, code="profile")
        self.skin = TagDefinitionFactory(group=group, code="skin", value_type="enum", options=["dry", "oily"])
        self.note = TagDefinitionFactory(group=group, code="note", value_type="text")
        self.level = TagDefinitionFactory(group=group, code="level", value_type="enum", options=["gold", "silver"])
        self.spend = TagDefinitionFactory(group=group, code="spend90", value_type="number", computation="rule")
        rule_save(actor=None, tag=self.spend, document=SPEND_90, activate=True)
        self.spend.refresh_from_db()
        tag_index.forget()


@pytest.fixture
def tags(sources, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return Tags(sources.person)


def values(tag) -> dict[int, object]:
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def buy(n: int, amount: float, *, subject: int | None = None, identifier: dict | None = None, source="pos") -> dict:
    item = {
        "source": source,
        "event_id": f"e{n}",
        "type": "purchase",
        "occurred_at": (timezone.now() - dt.timedelta(days=1)).isoformat(),
        "properties": {"amount": amount},
    }
    return item | ({"subject": subject} if subject is not None else {"identifier": identifier})


def ingest(capture, *items):
    with capture(execute=True):
        return ingest_events(actor=None, items=list(items))


@pytest.fixture
def two_people(tags, django_capture_on_commit_callbacks):
    """Li (crm_a) and Han (crm_b): purchases, manual skin (both: a conflict), Han's note, Li's level."""
    push(("crm_a", "L1", LI), ("crm_b", "H1", HAN))
    li, han = oneid_of("crm_a", "L1"), oneid_of("crm_b", "H1")
    ingest(django_capture_on_commit_callbacks, buy(1, 100, subject=li), buy(2, 50, subject=li), buy(3, 30, subject=han))
    with django_capture_on_commit_callbacks(execute=True):
        write_values(tags.skin, [(li, "dry"), (han, "oily")], source="manual", actor=None)
        write_values(tags.note, [(han, "prefers mornings")], source="imported", actor=None)
        write_values(tags.level, [(li, "gold")], source="manual", actor=None)
    assert values(tags.spend) == {li: 150, han: 30}
    return li, han


def test_merge_moves_events_and_manual_values_and_refreshes_the_rule_tag(
    two_people, tags, admin_user, django_capture_on_commit_callbacks
):
    li, han = two_people
    with django_capture_on_commit_callbacks(execute=True):
        survivor = oneid_merge(actor=admin_user, oneids=[li, han], reason="same person")
    gone = han if survivor == li else li
    assert OneId.objects.get(subject_id=gone).status == "retired"
    assert set(Event.objects.values_list("subject_id", flat=True)) == {survivor}
    assert values(tags.spend) == {survivor: 180}  # both people's purchases, right after the merge
    assert values(tags.skin) == {survivor: "dry" if survivor == li else "oily"}  # the survivor's is kept
    assert values(tags.note) == {survivor: "prefers mornings"}
    assert values(tags.level) == {survivor: "gold"}
    assert TagValue.objects.get(tag=tags.note, subject_id=survivor).source == "imported"
    event = MergeEvent.objects.get(kind="manual_merge")
    history = TagValueChange.objects.filter(correlation_id=event.correlation_id)
    moved = {(c.tag_id, c.subject_id, c.old_value, c.new_value) for c in history}
    loser_skin = "oily" if survivor == li else "dry"
    assert (tags.skin.pk, gone, loser_skin, None) in moved
    assert (tags.spend.pk, gone, 30 if gone == han else 150, None) in moved  # the retired subject's rule value
    followed = DomainEvent.objects.get(action="tags.merge_followed", correlation_id=event.correlation_id)
    assert followed.summary["events_moved"] == (1 if gone == han else 2)
    assert followed.summary["absorbed"] == [gone] and followed.summary["survivor"] == survivor
    assert followed.actor == admin_user
    per_tag = DomainEvent.objects.filter(action="tags.values_followed", correlation_id=event.correlation_id)
    assert {e.summary["tag_id"] for e in per_tag} >= {tags.skin.pk, tags.spend.pk}
    # provenance for a split: every explicit value of the merged person, the set-aside one included
    rows = {(r.tag_id, r.origin_id, r.held, r.value) for r in MergedValue.objects.filter(subject_id=survivor)}
    assert (tags.skin.pk, gone, False, loser_skin) in rows
    assert (tags.skin.pk, survivor, True, "dry" if survivor == li else "oily") in rows
    assert (tags.level.pk, li, True, "gold") in rows and (tags.note.pk, han, True, "prefers mornings") in rows


def test_a_rule_driven_merge_follows_too(two_people, tags, django_capture_on_commit_callbacks):
    li, han = two_people
    with django_capture_on_commit_callbacks(execute=True):
        push(("wecom", "W1", BRIDGE))
    survivor = oneid_of("wecom", "W1")
    assert survivor in (li, han) and oneid_of("crm_a", "L1") == oneid_of("crm_b", "H1") == survivor
    assert values(tags.spend) == {survivor: 180}
    assert set(values(tags.note)) == set(values(tags.level)) == {survivor}


def test_batch_merge_behaves_as_incremental(two_people, tags, django_capture_on_commit_callbacks):
    li, _ = two_people
    push(("wecom", "W1", BRIDGE), resolve=False)
    with django_capture_on_commit_callbacks(execute=True):
        result = resolve_all()
    assert result.merges == 1
    survivor = oneid_of("wecom", "W1")
    assert SourceRecord.objects.exclude(assignment__oneid=survivor).count() == 0
    assert set(Event.objects.values_list("subject_id", flat=True)) == {survivor}
    assert values(tags.spend) == {survivor: 180}
    assert values(tags.skin) == {survivor: "dry" if survivor == li else "oily"}
    assert set(values(tags.note)) == {survivor}
    assert DomainEvent.objects.filter(action="tags.merge_followed", correlation_id=result.correlation_id).exists()


def test_a_merge_that_fails_after_following_leaves_everything(
    two_people, tags, admin_user, django_capture_on_commit_callbacks
):
    """The receivers write inside the resolution's transaction: they roll back with it."""
    from identity import signals

    def fail(**kwargs):
        raise RuntimeError("after the tags followed")

    before = (values(tags.spend), values(tags.skin), sorted(Event.objects.values_list("id", "subject_id")))
    signals.oneid_merged.connect(fail, dispatch_uid="test.fail_after_follow")
    try:
        with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True) as callbacks:
            oneid_merge(actor=admin_user, oneids=list(two_people))
    finally:
        signals.oneid_merged.disconnect(dispatch_uid="test.fail_after_follow")
    assert not callbacks  # no refresh was left to run
    assert (values(tags.spend), values(tags.skin), sorted(Event.objects.values_list("id", "subject_id"))) == before
    assert not MergedValue.objects.exists()


def test_an_event_by_identifier_stores_the_record_it_was_attributed_through(
    tags, sources, django_capture_on_commit_callbacks
):
    """Provenance: the lowest record of the OneID holding the identifier; none for an event by subject id."""
    push(("crm_a", "L1", LI), ("wecom", "W1", LI | {"email": "li@mail.cn"}), ("crm_b", "H1", HAN))
    li = oneid_of("crm_a", "L1")
    assert oneid_of("wecom", "W1") == li
    records = sorted(SourceRecord.objects.filter(assignment__oneid=li).values_list("id", flat=True))
    w1 = SourceRecord.objects.get(external_id="W1").id
    ingest(
        django_capture_on_commit_callbacks,
        buy(1, 10, identifier={"type": "phone", "value": "139 0000 1111"}),  # both records hold it
        buy(2, 20, identifier={"type": "email", "value": "li@mail.cn"}),  # only W1
        buy(3, 30, subject=li),
    )
    stored = dict(Event.objects.values_list("event_id", "source_record_id"))
    assert stored == {"e1": records[0], "e2": w1, "e3": None}
    assert set(Event.objects.values_list("subject_id", flat=True)) == {li}


# ---- split -----------------------------------------------------------------------------------------


def record(source: str, external_id: str) -> int:
    return SourceRecord.objects.get(source__code=source, external_id=external_id).id


def snapshot(tags, *anchors: tuple[str, str]) -> dict:
    """Per person (named by one of their records): their events and explicit and rule tag values."""
    found = {}
    for anchor in anchors:
        subject = oneid_of(*anchor)
        found[anchor] = {
            "events": sorted(Event.objects.filter(subject_id=subject).values_list("event_id", flat=True)),
            **{t.code: values(t).get(subject) for t in (tags.skin, tags.note, tags.level, tags.spend)},
        }
    return found


@pytest.fixture
def attributed(tags, django_capture_on_commit_callbacks):
    """Li and Han with events by identifier (provenance: a record), by subject id from a source system
    only one of them has records of (crm_b), and from a system neither has (pos)."""
    push(("crm_a", "L1", LI), ("crm_b", "H1", HAN))
    li, han = oneid_of("crm_a", "L1"), oneid_of("crm_b", "H1")
    ingest(
        django_capture_on_commit_callbacks,
        buy(1, 100, identifier={"type": "phone", "value": "13900001111"}),
        buy(2, 50, identifier={"type": "phone", "value": "13900001111"}),
        buy(3, 30, identifier={"type": "email", "value": "han@mail.cn"}),
        buy(4, 7, subject=han, source="crm_b"),
        buy(5, 1, subject=li, source="pos"),
    )
    with django_capture_on_commit_callbacks(execute=True):
        write_values(tags.skin, [(li, "dry"), (han, "oily")], source="manual", actor=None)
        write_values(tags.note, [(han, "prefers mornings")], source="imported", actor=None)
        write_values(tags.level, [(li, "gold")], source="manual", actor=None)
    return li, han


@pytest.mark.parametrize("leaving", [("crm_b", "H1"), ("crm_a", "L1")])
def test_split_gives_each_side_back_its_events_and_values(
    attributed, tags, admin_user, django_capture_on_commit_callbacks, leaving
):
    """Merge then split (either side leaving, so either keeps the subject) restores each person."""
    from identity.services import oneid_split

    people = [("crm_a", "L1"), ("crm_b", "H1")]
    before = snapshot(tags, *people)
    assert before[("crm_a", "L1")] == {
        "events": ["e1", "e2", "e5"],
        "skin": "dry",
        "note": None,
        "level": "gold",
        "spend90": 151,
    }
    with django_capture_on_commit_callbacks(execute=True):
        survivor = oneid_merge(actor=admin_user, oneids=list(attributed))
    assert snapshot(tags, *people)[leaving]["spend90"] == 188
    with django_capture_on_commit_callbacks(execute=True):
        kept, new = oneid_split(actor=admin_user, oneid=survivor, records=[record(*leaving)], reason="two people")
    assert survivor in (kept, new)  # either side may keep the subject (one record each)
    assert snapshot(tags, *people) == before
    event = MergeEvent.objects.get(kind="manual_split")
    followed = DomainEvent.objects.get(action="tags.split_followed", correlation_id=event.correlation_id)
    assert followed.actor == admin_user and followed.summary["source"] == survivor
    assert TagValueChange.objects.filter(correlation_id=event.correlation_id, tag=tags.skin).exists()
    # what is left on each side: held rows of the values it got back, none set aside
    assert not MergedValue.objects.filter(held=False).exists()


def test_a_value_set_on_the_merged_person_stays_with_the_keeper(
    attributed, tags, admin_user, django_capture_on_commit_callbacks
):
    from identity.services import oneid_split

    with django_capture_on_commit_callbacks(execute=True):
        survivor = oneid_merge(actor=admin_user, oneids=list(attributed))
        write_values(tags.note, [(survivor, "call after 6")], source="manual", actor=None)  # Han's, changed
    with django_capture_on_commit_callbacks(execute=True):
        oneid_split(actor=admin_user, oneid=survivor, records=[record("crm_b", "H1")])
    assert values(tags.note) == {survivor: "call after 6"}  # the OneID keeping the subject
    assert values(tags.skin) == {oneid_of("crm_a", "L1"): "dry", oneid_of("crm_b", "H1"): "oily"}


def test_batch_split_behaves_as_incremental(attributed, tags, django_capture_on_commit_callbacks):
    """A rule-driven merge and split in batch runs (``resolve_all``) restore each person too."""
    people = [("crm_a", "L1"), ("crm_b", "H1")]
    before = snapshot(tags, *people)
    push(("wecom", "W1", BRIDGE), resolve=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert resolve_all().merges == 1
    assert len({oneid_of(*p) for p in people}) == 1
    push(("wecom", "W1", {"name": "Zhao Wu"}), resolve=False)  # the bridge is gone: two people again
    with django_capture_on_commit_callbacks(execute=True):
        result = resolve_all()
    assert result.splits == 1
    after = snapshot(tags, *people)
    assert after == before
    assert DomainEvent.objects.filter(action="tags.split_followed", correlation_id=result.correlation_id).exists()


def test_events_of_a_split_without_provenance(tags, admin_user, django_capture_on_commit_callbacks):
    """No record: the only part holding records of the event's source system gets it; else the keeper."""
    from identity.services import oneid_split

    push(("crm_a", "A1", LI), ("wecom", "W1", LI), ("crm_b", "B1", LI))  # one person, three records
    one = oneid_of("crm_a", "A1")
    items = [buy(1, 1, subject=one, source="crm_b"), buy(2, 2, subject=one, source="crm_a"), buy(3, 3, subject=one)]
    ingest(django_capture_on_commit_callbacks, *items)
    with django_capture_on_commit_callbacks(execute=True):
        kept, new = oneid_split(actor=admin_user, oneid=one, records=[record("crm_b", "B1")])
    assert dict(Event.objects.values_list("event_id", "subject_id")) == {"e1": new, "e2": kept, "e3": kept}
    assert values(tags.spend) == {kept: 5, new: 1}


PEOPLE = [("crm_a", "P0"), ("crm_b", "P1"), ("wecom", "P2")]
person_st = st.fixed_dictionaries(
    {
        "skin": st.sampled_from([None, "dry", "oily"]),
        "note": st.sampled_from([None, "a", "b"]),
        "level": st.sampled_from([None, "gold", "silver"]),
        # (amount, attribution): by identifier (a record), or by subject id from the person's own system
        "events": st.lists(st.tuples(st.integers(1, 500), st.booleans()), max_size=3),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(person_st, min_size=3, max_size=3), first_pair=st.sampled_from([(0, 1), (1, 2), (0, 2)]))
def test_merge_then_split_restores_every_person(
    tags, admin_user, django_capture_on_commit_callbacks, people, first_pair
):
    """Property: three people merged (in any order) and split back each get exactly their events,
    manual values and rule tags back, whichever OneID keeps the subject at each step."""
    from django.db import transaction

    from subjects.services import staging

    try:
        with transaction.atomic():
            _round_trip(tags, admin_user, django_capture_on_commit_callbacks, people, first_pair)
            transaction.set_rollback(True)
    finally:
        staging._stage_states.clear()


def _round_trip(tags, admin_user, capture, people, first_pair) -> None:
    from identity.services import oneid_split

    with capture(execute=True):  # the new OneIDs get their rule values (0 without purchases)
        push(*[(s, e, {"email": f"{e.lower()}@mail.cn"}) for s, e in PEOPLE])
    ids = [oneid_of(*p) for p in PEOPLE]
    items, n = [], 0
    for (source, ext), subject, person in zip(PEOPLE, ids, people, strict=True):
        for amount, by_identifier in person["events"]:
            n += 1
            by = {"identifier": {"type": "email", "value": f"{ext.lower()}@mail.cn"}} if by_identifier else {}
            items.append(
                buy(n, amount, subject=None if by else subject, source=source, identifier=by.get("identifier"))
            )
    if items:
        ingest(capture, *items)
    with capture(execute=True):
        for tag in (tags.skin, tags.note, tags.level):
            rows = [(s, p[tag.code]) for s, p in zip(ids, people, strict=True) if p[tag.code] is not None]
            if rows:
                write_values(tag, rows, source="manual", actor=None)
    before = snapshot(tags, *PEOPLE)
    a, b = first_pair
    with capture(execute=True):
        first = oneid_merge(actor=admin_user, oneids=[ids[a], ids[b]])
        last = ({0, 1, 2} - {a, b}).pop()
        merged = oneid_merge(actor=admin_user, oneids=[first, ids[last]])
    assert len({oneid_of(*p) for p in PEOPLE}) == 1
    assert values(tags.spend).get(merged) == sum(x for p in people for x, _ in p["events"])
    for person in PEOPLE[:2]:
        with capture(execute=True):
            oneid_split(actor=admin_user, oneid=oneid_of(*person), records=[record(*person)])
    assert snapshot(tags, *PEOPLE) == before


def test_a_record_moving_to_another_oneid_takes_its_events(tags, django_capture_on_commit_callbacks):
    """A changed record leaves one OneID for another (a merge that absorbs nobody and a split):
    the events attributed through it follow it; manual values stay with their OneIDs."""
    with django_capture_on_commit_callbacks(execute=True):
        push(("crm_a", "A1", {"email": "x@mail.cn"}), ("wecom", "A2", {"email": "x@mail.cn", "external_userid": "wm2"}))
        push(("crm_b", "B1", {"email": "y@mail.cn"}))
    o, t = oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")
    assert oneid_of("wecom", "A2") == o != t
    ingest(
        django_capture_on_commit_callbacks,
        buy(1, 10, identifier={"type": "email", "value": "x@mail.cn"}),  # A1 (the lowest record)
        buy(2, 20, identifier={"type": "wecom_external_userid", "value": "wm2"}),  # A2
        buy(3, 40, subject=t),
    )
    with django_capture_on_commit_callbacks(execute=True):
        write_values(tags.skin, [(o, "dry"), (t, "oily")], source="manual", actor=None)
    with django_capture_on_commit_callbacks(execute=True):
        push(("wecom", "A2", {"email": "y@mail.cn", "external_userid": "wm2"}))
    assert oneid_of("wecom", "A2") == t and oneid_of("crm_a", "A1") == o
    assert dict(Event.objects.values_list("event_id", "subject_id")) == {"e1": o, "e2": t, "e3": t}
    assert values(tags.spend) == {o: 10, t: 60}
    assert values(tags.skin) == {o: "dry", t: "oily"}


def test_clinic_roll_ups_follow_a_merge_and_a_split(
    attributed, tags, world, admin_user, django_capture_on_commit_callbacks
):
    """Downstream: a clinic's sum of its visitors' spend is right after the merge and after the split
    (visits are attributed to records by the relationship convention and follow them)."""
    from identity.services import oneid_split
    from subjects.models import RelationshipType
    from subjects.services import relationship_bulk_upsert
    from tags.propagation.definitions import propagation_save

    li, han = attributed
    RelationshipType.objects.create(
        code="visits", name="Visits", from_type=tags.spend.subject_type, to_type=world.clinic_type
    )
    group = TagGroupFactory(subject_type=world.clinic_type, code="clinic_kpis")
    with django_capture_on_commit_callbacks(execute=True):
        total = TagDefinitionFactory(group=group, code="visitor_spend", value_type="number", computation="propagated")
        body = {"from": {"tag": "spend90"}, "path": [{"relationship": "visits"}], "aggregate": "sum"}
        propagation_save(actor=None, tag=total, document={"propagate": body}, activate=True)
    tag_index.forget()
    a, b = world.clinic_a_sh.id, world.clinic_b_bj.id
    with django_capture_on_commit_callbacks(execute=True):
        relationship_bulk_upsert(
            actor=None,
            items=[
                {"type": "visits", "source": "crm_a", "external_id": "L1-V1", "from": li, "to": a},
                {"type": "visits", "source": "crm_b", "external_id": "H1-V1", "from": han, "to": b},
            ],
        )
    assert values(total) == {a: 151, b: 37}
    with django_capture_on_commit_callbacks(execute=True):
        survivor = oneid_merge(actor=admin_user, oneids=[li, han])
    assert values(total) == {a: 188, b: 188}  # one person visiting both
    with django_capture_on_commit_callbacks(execute=True):
        oneid_split(actor=admin_user, oneid=survivor, records=[record("crm_b", "H1")])
    assert values(total) == {a: 151, b: 37}
