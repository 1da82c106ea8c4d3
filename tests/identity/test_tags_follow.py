"""Tags and events follow OneID merges and splits (tags.identity_follow): events, manual values and
rule tags move with the records that brought them; every change is in the value history with the
resolution's correlation id and audited; batch resolution behaves as incremental."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

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
    assert SourceRecord.objects.exclude(oneid_id=survivor).count() == 0
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
    records = sorted(SourceRecord.objects.filter(oneid_id=li).values_list("id", flat=True))
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
