"""The real-time engine in process (no broker: Celery eager): events, edits and relationship
changes refresh exactly the affected tags and everything downstream; windows expire by the sweep;
tasks are idempotent; incremental always equals full recompute (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subjects.models import Relationship
from subjects.services import relationship_bulk_upsert
from subjects.services.objects import relationship_delete
from tags.models import RefreshRequest, TagDefinition, TagValue, TagValueChange
from tags.realtime import index as tag_index
from tags.realtime.expiry import sweep
from tags.realtime.planner import Plan
from tags.realtime.tasks import refresh
from tags.rules.compiler import Selection
from tags.services.definitions import rule_save
from tags.services.store import write_values
from tests.tags.test_propagation import PropWorld, values

BATCH = "/api/v1/events/batch/"
VISITED = [{"relationship": "visited"}]
HIGH_VALUE = {
    "cases": [
        {
            "when": {">=": [{"event_agg": {"type": "purchase", "fn": "sum", "property": "amount", "days": 90}}, 200]},
            "then": True,
        }
    ],
    "default": False,
}


class Chain(PropWorld):
    """member high_value (rule over purchases) → clinic share of high value → region share (two hops);
    member skin (manual) → clinic skin mix."""

    def __init__(self, world):
        super().__init__(world)
        self.high = self.tag("member", "high_value", "boolean", computation="rule")
        rule_save(actor=None, tag=self.high, document=HIGH_VALUE, activate=True)
        self.high.refresh_from_db()
        self.clinic_hv = self.propagated(
            "clinic",
            "hv_share",
            "number",
            {"from": {"tag": "high_value"}, "path": [{"relationship": "visited"}], "aggregate": "share", "value": True},
        )
        self.region_hv = self.propagated(
            "region",
            "hv_share",
            "number",
            {
                "from": {"tag": "high_value"},
                "path": [{"relationship": "visited"}, {"relationship": "in_region"}],
                "aggregate": "share",
                "value": True,
            },
        )
        self.mix = self.propagated(
            "clinic",
            "skin_mix",
            "text",
            {"from": {"tag": "skin"}, "path": [{"relationship": "visited"}], "aggregate": "share"},
        )

    def computed(self) -> list[TagDefinition]:
        return [self.high, self.clinic_hv, self.region_hv, self.mix]


@pytest.fixture
def chain(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        built = Chain(world)
    tag_index.forget()
    return built


def purchase(member, n, amount, days_ago=1) -> dict:
    moment = timezone.now() - dt.timedelta(days=days_ago)
    return {
        "source": "pos",
        "event_id": f"p{n}",
        "type": "purchase",
        "occurred_at": moment.isoformat(),
        "properties": {"amount": amount},
        "subject": member.id,
    }


def expected(tag: TagDefinition) -> dict:
    """What a full recompute would store now, computed by the same SQL without writing."""
    from django.db import connection

    from tags.models import Computation
    from tags.propagation.active import active_propagation
    from tags.propagation.recompute import compiled_select as propagated_select
    from tags.services.compiled import active_rule
    from tags.services.recompute import compiled_select as rule_select

    tag = TagDefinition.objects.select_related("rule").get(pk=tag.pk)
    now = timezone.now()
    if tag.computation == Computation.PROPAGATED:
        sql, params = propagated_select(active_propagation(tag), Selection.everything(), now)
    else:
        sql, params = rule_select(tag, active_rule(tag), Selection.everything(), now)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT subject_id, value FROM ({sql}) c WHERE value IS NOT NULL", params)
        rows = cursor.fetchall()
    import orjson

    return {s: (orjson.loads(v) if isinstance(v, str | bytes) else v) for s, v in rows}  # raw jsonb arrives as text


def test_an_event_refreshes_the_member_its_clinics_and_their_region(api, chain, django_capture_on_commit_callbacks):
    m = chain.members
    assert values(chain.clinic_hv) == {chain.c1.id: 0, chain.c2.id: 0}
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(BATCH, {"items": [purchase(m[2], 1, 150), purchase(m[2], 2, 100)]}, format="json")
    assert response.status_code == 200, response.json()
    assert values(chain.high)[m[2].id] is True
    assert values(chain.clinic_hv) == {chain.c1.id: pytest.approx(1 / 3, abs=1e-6), chain.c2.id: 0.5}
    assert values(chain.region_hv)[chain.w.shanghai.id] == pytest.approx(1 / 3, abs=1e-6)
    assert values(chain.region_hv)[chain.w.beijing.id] == 0.5
    for tag in chain.computed():
        assert values(tag) == expected(tag), tag.code
    # the propagated rows carry their source and a history row each
    assert TagValue.objects.get(tag=chain.clinic_hv, subject=chain.c1).source == "propagated"
    assert TagValueChange.objects.filter(tag=chain.region_hv, subject=chain.w.beijing, new_value=0.5).count() == 1


def test_one_task_per_batch_not_per_event(api, chain, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from tags.realtime import enqueue

    monkeypatch.setattr(enqueue, "_send", lambda payload, correlation_id=None, *a, **k: sent.append(correlation_id))
    with django_capture_on_commit_callbacks(execute=True):
        api.post(BATCH, {"items": [purchase(m, i, 300) for i, m in enumerate(chain.members)]}, format="json")
    assert len(sent) == 1
    (request,) = RefreshRequest.objects.all()  # stored with the events, for the message to run
    assert request.payload["recompute"] == {str(chain.high.pk): sorted(m.id for m in chain.members)}
    assert str(request.correlation_id) == sent[0]


@pytest.mark.django_db(transaction=True)  # real commits: the engine's own writes enqueue nothing
def test_waiting_requests_run_as_one_plan(chain, django_capture_on_commit_callbacks, monkeypatch):
    """A refresh takes every waiting request: a worker behind a burst catches up in one run."""
    from audit.models import DomainEvent
    from tags.events import ingest_events
    from tags.realtime import enqueue

    monkeypatch.setattr(enqueue, "_send", lambda *a, **k: None)  # the messages are "still queued"
    m = chain.members
    for i in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            ingest_events(actor=None, items=[purchase(m[i], i, 300)])
    assert RefreshRequest.objects.count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        result = refresh.apply().get()
    assert result["requests"] == 3 and RefreshRequest.objects.count() == 0
    assert all(values(chain.high)[m[i].id] is True for i in range(3))
    for tag in chain.computed():
        assert values(tag) == expected(tag), tag.code
    coalesced = DomainEvent.objects.get(action="tags.refresh_coalesced")
    assert len(coalesced.summary["correlations"]) == 3
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh.apply().get()["requests"] == 0  # the other messages find nothing left


def test_a_manual_edit_flows_downstream(chain, django_capture_on_commit_callbacks):
    m = chain.members
    with django_capture_on_commit_callbacks(execute=True):
        write_values(chain.skin, [(m[3].id, "dry")], source="manual", actor=None)
    assert values(chain.mix)[chain.c2.id] == {"dry": 1.0}
    assert values(chain.mix)[chain.c1.id] == expected(chain.mix)[chain.c1.id]


def test_relationship_changes_through_the_services_refresh_both_ends(chain, django_capture_on_commit_callbacks):
    m = chain.members
    item = {"type": "visited", "source": "crm", "external_id": "v-new", "from": m[3].id, "to": chain.c1.id}
    with django_capture_on_commit_callbacks(execute=True):
        relationship_bulk_upsert(actor=None, items=[item])
    assert values(chain.mix)[chain.c1.id] == expected(chain.mix)[chain.c1.id]
    assert "normal" in values(chain.mix)[chain.c1.id]
    with django_capture_on_commit_callbacks(execute=True):
        for rel in Relationship.objects.filter(to_subject=chain.c2):
            relationship_delete(actor=None, relationship=rel)
    assert chain.c2.id not in values(chain.mix)
    assert chain.c2.id not in values(chain.clinic_hv)


# Real commits: an update takes the guarded path, whose session staging table must really be
# committed (captured on-commit callbacks in a rolled-back test would mark it created).
@pytest.mark.django_db(transaction=True)
def test_an_upsert_that_moves_a_visit_refreshes_the_clinic_it_left_and_the_one_it_reached(
    chain, django_capture_on_commit_callbacks
):
    """The moved relationship's old ends come from the write's domain event (previous_ends):
    clinic 1 and its region are right after the write, not after the nightly reconcile."""
    from tags.events import ingest_events

    m, c1, c2 = chain.members, chain.c1, chain.c2
    with django_capture_on_commit_callbacks(execute=True):
        visitors = chain.propagated(
            "clinic", "visitors", "number", {"from": {"tag": "skin"}, "path": VISITED, "aggregate": "count"}
        )
        ingest_events(actor=None, items=[purchase(m[0], 1, 300)])
    tag_index.forget()
    assert values(visitors) == {c1.id: 3, c2.id: 2}
    assert values(chain.clinic_hv) == {c1.id: pytest.approx(1 / 3, abs=1e-6), c2.id: 0}
    visit = Relationship.objects.get(from_subject=m[0], to_subject=c1)
    item = {"type": "visited", "source": visit.source, "external_id": visit.external_id, "from": m[0].id}

    with django_capture_on_commit_callbacks(execute=True):
        result = relationship_bulk_upsert(actor=None, items=[{**item, "to": c2.id}])

    assert result.counts["updated"] == 1 and Relationship.objects.get(pk=visit.pk).to_subject_id == c2.id
    assert values(visitors) == {c1.id: 2, c2.id: 3}
    assert values(chain.clinic_hv) == {c1.id: 0, c2.id: pytest.approx(1 / 3, abs=1e-6)}
    assert values(chain.mix)[c1.id] == {"dry": 0.5, "oily": 0.5}
    assert values(chain.region_hv)[chain.w.shanghai.id] == 0
    for tag in [*chain.computed(), visitors]:
        assert values(tag) == expected(tag), tag.code


def test_a_task_run_twice_changes_nothing_the_second_time(chain, django_capture_on_commit_callbacks):
    from tags.events import ingest_events

    m = chain.members
    with django_capture_on_commit_callbacks(execute=False):
        ingest_events(actor=None, items=[purchase(m[0], 1, 500)])
    payload = Plan(pending={chain.high.pk: {m[0].id}}).as_payload()
    with django_capture_on_commit_callbacks(execute=True):
        first = refresh.apply(args=[payload]).get()
    history = TagValueChange.objects.count()
    snapshot = {t.code + str(t.pk): values(t) for t in chain.computed()}
    with django_capture_on_commit_callbacks(execute=True):
        second = refresh.apply(args=[payload]).get()
    assert first["rows_changed"] >= 3 and second["rows_changed"] == 0
    assert TagValueChange.objects.count() == history
    assert {t.code + str(t.pk): values(t) for t in chain.computed()} == snapshot


def test_windows_expire_by_the_sweep_without_a_new_event(chain, django_capture_on_commit_callbacks):
    from tags.events import ingest_events

    m = chain.members
    with django_capture_on_commit_callbacks(execute=True):
        ingest_events(actor=None, items=[purchase(m[1], 1, 900, days_ago=88)])
    assert values(chain.high)[m[1].id] is True and values(chain.clinic_hv)[chain.c1.id] > 0
    now = timezone.now()
    TagDefinition.objects.update(last_computed_at=now)
    with django_capture_on_commit_callbacks(execute=True):
        nothing = sweep(now + dt.timedelta(hours=1))
    assert nothing["rows_changed"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        result = sweep(now + dt.timedelta(days=3))
    assert result["subjects"] >= 1 and result["rows_changed"] >= 3
    assert values(chain.high)[m[1].id] is False
    assert values(chain.clinic_hv)[chain.c1.id] == 0


@pytest.fixture
def pw(world):
    return PropWorld(world)


def test_propagation_window_expires(pw, django_capture_on_commit_callbacks):
    m = pw.members
    recent = pw.propagated(
        "clinic",
        "recent_visitors",
        "number",
        {"from": {"tag": "skin"}, "path": [{"relationship": "visited", "within_days": 30}], "aggregate": "count"},
    )
    Relationship.objects.filter(from_subject=m[0], to_subject=pw.c1).update(
        valid_from=timezone.now() - dt.timedelta(days=29)
    )
    from tags.propagation.recompute import recompute_all

    recompute_all(recent)
    assert values(recent)[pw.c1.id] == 3
    now = timezone.now()
    TagDefinition.objects.filter(pk=recent.pk).update(last_computed_at=now)
    tag_index.forget()
    with django_capture_on_commit_callbacks(execute=True):
        result = sweep(now + dt.timedelta(days=2))
    assert values(recent)[pw.c1.id] == 2 and result["rows_changed"] == 1
    assert values(recent)[pw.c2.id] == 2


# ---- incremental = full, whatever happens (hypothesis) ---------------------------------------

OPS = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 3), st.integers(1, 300)),
    st.tuples(st.just("edit"), st.integers(0, 3), st.sampled_from(["dry", "oily", "normal", None])),
    st.tuples(st.just("visit"), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.just("leave"), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.just("move"), st.integers(0, 3), st.integers(0, 1)),  # one key, upserted to other ends
)


# Transactional: real commits, so after-commit work (and the subjects services' staging tables,
# emptied ON COMMIT) behaves as in production.
@pytest.mark.django_db(transaction=True)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=6))
def test_incremental_equals_full_after_any_sequence(chain, django_capture_on_commit_callbacks, ops):
    from tags.events import ingest_events

    clinics = [chain.c1, chain.c2]
    for n, (kind, who, arg) in enumerate(ops):
        member = chain.members[who]
        with django_capture_on_commit_callbacks(execute=True):
            if kind == "event":
                stamp = timezone.now().timestamp()
                ingest_events(actor=None, items=[purchase(member, f"{stamp}-{n}", arg)])
            elif kind == "edit":
                write_values(chain.skin, [(member.id, arg)], source="manual", actor=None)
            elif kind == "visit":
                item = {
                    "type": "visited",
                    "source": "h",
                    "external_id": f"{member.id}-{arg}",
                    "from": member.id,
                    "to": clinics[arg].id,
                }
                relationship_bulk_upsert(actor=None, items=[item])
            elif kind == "move":
                item = {"type": "visited", "source": "h", "external_id": "moving", "from": member.id}
                relationship_bulk_upsert(actor=None, items=[{**item, "to": clinics[arg].id}])
            else:
                for rel in Relationship.objects.filter(from_subject=member, to_subject=clinics[arg]):
                    relationship_delete(actor=None, relationship=rel)
    for tag in chain.computed():
        assert values(tag) == expected(tag), (tag.code, ops)
