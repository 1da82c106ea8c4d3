"""Re-applying changed rules to stored records: identifiers re-derived, the partition recomputed."""

import pytest
from django.core.management import call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import DomainEvent
from identity.models import (
    BlockedValue,
    CompositeKey,
    Identifier,
    IdentifierType,
    MergeEvent,
    ReapplyRun,
    SourceRecord,
)
from identity.services.config import config_delete, config_save
from identity.services.reapply import identity_rules_reapply

from .helpers import oneid_of, partition, push
from .test_properties import FIELDS, SOURCES

pytestmark = pytest.mark.django_db


def _statuses(source: str, external_id: str) -> dict[str, str]:
    record = SourceRecord.objects.get(source__code=source, external_id=external_id)
    return {
        (t or "composite"): status
        for t, status in Identifier.objects.filter(record=record).values_list("identifier_type__code", "status")
    }


def test_a_value_blocked_after_the_merge_splits_the_records_it_linked(sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    assert len(partition()) == 1
    BlockedValue.objects.create(value="fang@qq.com", reason="shared mailbox of a store")
    result = identity_rules_reapply()
    assert (result.records, result.changed, result.problems) == (2, 2, 0)
    assert _statuses("crm_a", "A1")["email"] == "blocked"
    assert partition() == {frozenset({("crm_a", "A1")}), frozenset({("crm_b", "B1")})}
    assert result.resolution.splits == 1 and MergeEvent.objects.filter(kind="split").count() == 1
    event = DomainEvent.objects.get(action="identity.identifiers_reextracted")
    assert event.correlation_id == result.correlation_id and event.row_count == 2
    assert event.summary["ids"] == sorted(SourceRecord.objects.values_list("id", flat=True))
    assert DomainEvent.objects.filter(action="identity.batch_resolved", correlation_id=result.correlation_id).exists()


def test_a_re_run_writes_nothing(sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    identifiers = sorted(Identifier.objects.values_list("id", flat=True))
    events = DomainEvent.objects.count()
    result = identity_rules_reapply()
    assert (result.records, result.changed, result.added, result.removed) == (2, 0, 0, 0)
    assert result.resolution.moved == 0
    assert sorted(Identifier.objects.values_list("id", flat=True)) == identifiers  # not even rewritten
    assert DomainEvent.objects.count() == events


def test_a_field_added_to_a_type_starts_linking(sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("shop", "S1", {"contact_mail": "Fang@QQ.com "}))
    assert len(partition()) == 2
    email = IdentifierType.objects.get(code="email")
    email.fields = ["email", "contact_mail"]
    email.save()
    result = identity_rules_reapply()
    assert result.changed == 1 and result.resolution.merges == 1
    assert oneid_of("crm_a", "A1") == oneid_of("shop", "S1")
    merge = MergeEvent.objects.get(kind="merge")
    assert merge.evidence[0]["rule"] == "identifier:email"


def test_a_lowered_limit_splits_the_group_over_it(sources):
    push(*[(source, f"{source}-1", {"name": "李明", "phone": "13900002222"}) for source in ("crm_a", "crm_b", "shop")])
    assert len(partition()) == 1
    CompositeKey.objects.filter(code="name_phone").update(max_shared_records=2)
    result = identity_rules_reapply()
    assert result.changed == 0  # the identifiers are the same; the limit bites at resolution
    assert len(partition()) == 3


def test_values_the_new_rules_reject_are_reported_with_record_and_field(sources):
    push(("crm_a", "A1", {"name": "王芳", "member_id": "M-1"}), ("crm_a", "A2", {"name": "王娜", "member_id": "M2"}))
    member = IdentifierType.objects.get(code="crm_member_id")
    member.normalizer = "phone"  # stricter: a member id is no phone number
    member.save()
    result = identity_rules_reapply()
    record_ids = sorted(SourceRecord.objects.values_list("id", flat=True))
    assert result.problems == 2
    assert [(p["record"], p["field"]) for p in result.problem_samples] == [
        (record_ids[0], "raw.member_id"),
        (record_ids[1], "raw.member_id"),
    ]
    assert all(p["message"].startswith("crm_member_id ") for p in result.problem_samples)
    assert not Identifier.objects.filter(identifier_type=member).exists()
    assert SourceRecord.objects.count() == 2  # the records themselves are kept
    event = DomainEvent.objects.get(action="identity.identifiers_reextracted")
    assert event.summary["problems"] == 2 and event.summary["problem_samples"] == result.problem_samples


def test_the_command_reports_what_it_did(sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    BlockedValue.objects.create(value="fang@qq.com")
    out = []

    class Out:
        def write(self, text):
            out.append(text)

        def flush(self):
            pass

    call_command("reapply_identity_rules", "--chunk", "1", stdout=Out())
    text = "".join(out)
    assert "2 records read, 2 with new identifiers" in text and "1 splits" in text
    assert ReapplyRun.objects.get().status == "done"
    assert len(partition()) == 2


@pytest.mark.django_db(transaction=True)
def test_saving_a_rule_re_applies_the_rules_once_committed(sources, django_user_model):
    """Through the config service (the admin's and the API's path), in process (eager Celery)."""
    operator = django_user_model.objects.create_user("rules-operator")
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    blocked = config_save(actor=operator, model=BlockedValue, data={"value": "fang@qq.com", "reason": "shared"})
    assert len(partition()) == 2
    event = DomainEvent.objects.get(action="identity.identifiers_reextracted")
    assert event.actor_id == operator.id
    run = ReapplyRun.objects.get()
    assert (run.status, run.requested_by, run.changed, run.correlation_id) == (
        "done",
        operator,
        2,
        event.correlation_id,
    )
    config_delete(actor=operator, instance=blocked)
    assert len(partition()) == 1  # unblocked: the value links again
    assert DomainEvent.objects.filter(action="identity.identifiers_reextracted").count() == 2


@pytest.mark.django_db(transaction=True)
def test_saving_a_rule_unchanged_or_a_new_source_enqueues_nothing(sources, django_user_model):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}))
    email = IdentifierType.objects.get(code="email")
    config_save(actor=None, model=IdentifierType, data={}, instance=email)
    config_save(
        actor=None, model=type(sources.shop), data={"trust_rank": sources.shop.trust_rank}, instance=sources.shop
    )
    assert not DomainEvent.objects.filter(action="identity.identifiers_reextracted").exists()
    assert not ReapplyRun.objects.exists()


def _identifiers() -> set[tuple]:
    """Every stored identifier as (source, external id, type or composite, scope, value, status)."""
    return set(
        Identifier.objects.values_list(
            "record__source__code",
            "record__external_id",
            "identifier_type_id",
            "composite_key_id",
            "scope",
            "value",
            "status",
        )
    )


RAW = st.fixed_dictionaries(
    {}, optional={k: st.sampled_from(v) for k, v in {**FIELDS, "mail": ["a@qq.com", "B@QQ.com "]}.items()}
)
RECORDS = st.lists(
    st.tuples(st.sampled_from(SOURCES), st.integers(0, 5), RAW), min_size=1, max_size=12, unique_by=lambda r: r[:2]
).map(lambda rows: [(s, f"E{i}", raw) for s, i, raw in rows])
CHANGES = st.sampled_from(["block_phone", "block_email", "unblock_phone", "email_field", "limit_two"])


def _apply(change: str) -> None:
    if change == "block_phone":
        BlockedValue.objects.create(value="13900000001")
    elif change == "block_email":
        BlockedValue.objects.create(value="a@qq.com")
    elif change == "unblock_phone":
        BlockedValue.objects.filter(value="13800138000").delete()
    elif change == "email_field":
        IdentifierType.objects.filter(code="email").update(fields=["email", "mail"])
    elif change == "limit_two":
        CompositeKey.objects.filter(code="name_phone").update(max_shared_records=2)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS, change=CHANGES)
def test_re_applying_a_change_equals_ingesting_under_the_new_rules(sources, records, change):
    """Ingest, change the rules, re-apply  ==  change the rules, ingest (identifiers and partition)."""
    with transaction.atomic():
        push(*records)
        _apply(change)
        identity_rules_reapply()
        after = (_identifiers(), partition())
        transaction.set_rollback(True)
    with transaction.atomic():
        _apply(change)
        push(*records)
        assert (_identifiers(), partition()) == after
        transaction.set_rollback(True)


def test_a_run_requested_before_a_finished_later_run_started_is_skipped(sources):
    from identity.models import ReapplyRun
    from identity.services.reapply import reapply_request, run_reapply

    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    BlockedValue.objects.create(value="fang@qq.com")
    first, second = reapply_request(), reapply_request()  # two rule edits, one after the other
    assert run_reapply(first.pk).status == "done"
    second = run_reapply(second.pk)
    assert (second.status, second.covered_by_id) == ("skipped", first.pk)
    first.refresh_from_db()
    assert (first.records, first.changed, first.resolution["splits"]) == (2, 2, 1)
    third = run_reapply(reapply_request(refresh_golden=True).pk)  # asked for after the first started
    assert third.status == "done" and third.changed == 0
    assert ReapplyRun.objects.filter(status="done").count() == 2
    assert run_reapply(first.pk).status == "done"  # a redelivered task does nothing more


def test_a_failed_run_writes_nothing_and_says_why(sources, monkeypatch):
    from identity.services import reapply

    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("crm_b", "B1", {"email": "fang@qq.com"}))
    BlockedValue.objects.create(value="fang@qq.com")
    before = _identifiers()

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(reapply, "resolve_all", broken)  # after the identifiers were rewritten
    run = reapply.reapply_request()
    with pytest.raises(RuntimeError):
        reapply.run_reapply(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.error == "RuntimeError: database went away"
    assert _identifiers() == before and len(partition()) == 1


def test_the_admin_says_the_records_will_be_re_checked(sources, admin_client):
    response = admin_client.post(
        "/admin/identity/blockedvalue/add/", {"value": "fang@qq.com", "pattern": "", "reason": "shared"}, follow=True
    )
    assert response.status_code == 200
    assert "re-checked against the changed rules" in response.content.decode()
    assert admin_client.get("/admin/identity/reapplyrun/").status_code == 200


def _api(*codenames, all_scopes=True):
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    user = UserFactory()
    wanted = [*codenames, "all_scopes"] if all_scopes else list(codenames)
    user.user_permissions.set(Permission.objects.filter(codename__in=wanted))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_the_api_lists_runs_to_users_who_see_every_brand(sources):
    from identity.services.reapply import reapply_request, run_reapply

    push(("crm_a", "A1", {"name": "王芳", "member_id": "M-1"}))
    IdentifierType.objects.filter(code="crm_member_id").update(normalizer="phone")
    run = run_reapply(reapply_request().pk)
    hq = _api("view_reapplyrun")
    listed = hq.get("/api/v1/reapply-runs/").json()["results"]
    assert [(r["id"], r["status"], r["problems"]) for r in listed] == [(run.pk, "done", 1)]
    detail = hq.get(f"/api/v1/reapply-runs/{run.pk}/").json()
    assert detail["problem_samples"] == [
        {
            "record": SourceRecord.objects.get().pk,
            "field": "raw.member_id",
            "message": run.problem_samples[0]["message"],
        }
    ]
    assert "M-1" not in str(detail)  # the rejected value itself is never shown
    scoped = _api("view_reapplyrun", all_scopes=False)
    assert scoped.get("/api/v1/reapply-runs/").json()["results"] == []
    assert scoped.get(f"/api/v1/reapply-runs/{run.pk}/").status_code == 404
    assert _api().get("/api/v1/reapply-runs/").status_code == 403
