"""Audit: the actor of token API writes and Celery tasks, masked PII diffs, the auditors' admin."""

from __future__ import annotations

import json

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import DomainEvent
from audit.services import MASK_CHANGED, acting_as, current_actor, domain_event_record, system_actor
from subjects import pii
from subjects.models import Subject
from subjects.services import subject_save
from tests.factories import UserFactory

PHONE = "13987654321"


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _grant(user, *perms):
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))


def _subject_entries(subject):
    return LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(Subject), object_id=subject.pk)


def test_token_api_write_logs_token_user_as_actor(world):
    user = UserFactory(username="integration_token")
    _grant(user, "subjects.add_subject", "subjects.change_subject", "subjects.view_subject", "subjects.all_scopes")
    response = _token_client(user).post(
        "/api/v1/subjects/",
        {
            "type": "member",
            "source": "crm",
            "external_id": "T1",
            "display_name": "Token Person",
            "brand": world.brand_a.pk,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    subject = Subject.objects.get(external_id="T1")
    entry = _subject_entries(subject).get()
    assert entry.actor == user
    assert "Token Person" not in json.dumps(entry.changes) and "Token Person" not in entry.object_repr
    assert entry.actor_email is None


def test_signal_logged_model_under_token_auth_gets_actor(world):
    """A model saved through auditlog's signals (not a service) inside a token request."""
    from identity.models import BlockedValue, IdentifierType

    user = UserFactory(username="hq_token", is_superuser=True)
    phone_type = IdentifierType.objects.create(code="phone", name="Phone", normalizer="phone", fields=["phone"])
    with acting_as(user):
        BlockedValue.objects.create(identifier_type=phone_type, value=PHONE)
    entry = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(BlockedValue)).latest("id")
    assert entry.actor == user
    assert PHONE not in json.dumps(entry.changes)


def test_pii_diff_is_masked_but_says_it_changed(world):
    world.member_type.attribute_schema = {}
    world.member_type.save()
    actor = UserFactory(username="editor", is_superuser=True)
    subject = subject_save(
        actor=actor,
        data={
            "type": "member",
            "source": "crm",
            "external_id": "D1",
            "display_name": "Old Name",
            "attributes": {"skin_type": "dry"},
            "brand": world.brand_a.pk,
        },
    )
    subject_save(
        actor=actor,
        data={"display_name": "New Name", "attributes": {"skin_type": "oily", "mobile": PHONE}},
        instance=Subject.objects.get(pk=subject.pk),
    )
    update = _subject_entries(subject).filter(action=LogEntry.Action.UPDATE).get()
    stored = json.dumps(update.changes)
    assert "Old Name" not in stored and "New Name" not in stored and PHONE not in stored
    assert update.changes["display_name"] == [pii.MASK, MASK_CHANGED]
    old, new = (json.loads(v) for v in update.changes["attributes"])
    assert old == {"skin_type": "dry"} and new == {"skin_type": "oily", "mobile": pii.MASK}
    assert update.actor == actor


def test_org_names_stay_readable_in_diffs(world):
    actor = UserFactory(username="editor2", is_superuser=True)
    subject_save(actor=actor, data={"display_name": "Brand A2"}, instance=world.brand_a)
    entry = _subject_entries(world.brand_a).get(action=LogEntry.Action.UPDATE)
    assert entry.changes["display_name"] == ["Brand A", "Brand A2"]


def test_celery_task_sets_actor_from_job_and_system(world, settings):
    from tags import tasks
    from tags.models import RecomputeJob, TagDefinition, TagGroup
    from tags.realtime import tasks as realtime_tasks

    requester = UserFactory(username="requester")
    group = TagGroup.objects.create(subject_type=world.member_type, code="g", name="G")
    tag = TagDefinition.objects.create(
        group=group, subject_type=world.member_type, code="t", name="T", value_type="bool"
    )
    job = RecomputeJob.objects.create(tag=tag, requested_by=requester)
    seen = []

    def fake_recompute_all(tag, job=None, **kwargs):
        seen.append(current_actor())
        domain_event_record(actor=None, action="tags.recomputed", row_count=1)
        return 1

    import tags.services.recompute as recompute

    original = recompute.recompute_all
    recompute.recompute_all = fake_recompute_all
    try:
        tasks.recompute_tag.apply(args=[job.pk])
    finally:
        recompute.recompute_all = original
    assert seen == [requester]
    assert DomainEvent.objects.get(action="tags.recomputed").actor == requester
    assert current_actor() is None

    import tags.realtime.expiry as expiry

    original_sweep = expiry.sweep
    expiry.sweep = lambda: {"actor": current_actor().username}
    try:
        result = realtime_tasks.expire_windows.apply().get()
    finally:
        expiry.sweep = original_sweep
    assert result == {"actor": "system:tags.expire_windows"}
    system = system_actor("tags.expire_windows")
    assert not system.is_active and not system.has_usable_password()


def test_acting_as_nests_and_resets(db):
    a, b = UserFactory(username="a"), UserFactory(username="b")
    with acting_as(a):
        with acting_as(b):
            assert current_actor() == b
        assert current_actor() == a
    assert current_actor() is None


# The auditors' admin -------------------------------------------------------------------------


@pytest.fixture
def auditor(db):
    user = UserFactory(username="auditor_x", is_staff=True)
    _grant(user, "auditlog.view_logentry", "audit.view_domainevent")
    return user


def _seed_log(world, n: int):
    actor = UserFactory(username=f"writer{n}", is_superuser=True)
    world.member_type.attribute_schema = {}
    world.member_type.save()
    for i in range(n):
        subject_save(
            actor=actor,
            data={
                "type": "member",
                "source": "crm",
                "external_id": f"A{n}-{i}",
                "display_name": f"Canary Person {i}",
                "attributes": {"phone": f"1390000{i:04d}"},
                "brand": world.brand_a.pk,
            },
        )
        domain_event_record(
            actor=actor, action="test.bulk", row_count=i + 1, summary={"ids": [i], "reason": f"Canary Person {i}"}
        )
    return actor


def test_auditor_logentry_admin_filters_masked_and_read_only(world, client, auditor):
    actor = _seed_log(world, 3)
    client.force_login(auditor)
    url = reverse("admin:auditlog_logentry_changelist")
    page = client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "Canary Person" not in body and "1390000" not in body
    subject = Subject.objects.get(external_id="A3-1")
    subject_type = ContentType.objects.get_for_model(Subject)
    for query, expected in (
        (f"?actor={actor.username}", 3),
        (f"?actor={actor.pk}", 3),
        (f"?subject={subject.pk}", 1),
        (f"?model={subject_type.pk}", LogEntry.objects.filter(content_type=subject_type).count()),
        (f"?cid={'0' * 8}-0000-0000-0000-{'0' * 12}", 0),
        ("?timestamp__gte=2000-01-01", LogEntry.objects.count()),
    ):
        response = client.get(url + query)
        assert response.status_code == 200, query
        assert response.context["cl"].result_count == expected, query
    entry = _subject_entries(subject).get()
    detail = client.get(reverse("admin:auditlog_logentry_change", args=[entry.pk])).content.decode()
    assert "Canary Person" not in detail and "13900000001" not in detail and pii.MASK in detail
    assert client.post(reverse("admin:auditlog_logentry_delete", args=[entry.pk])).status_code == 403


def test_auditor_domain_event_admin_filters_masked(world, client, auditor):
    actor = _seed_log(world, 3)
    client.force_login(auditor)
    url = reverse("admin:audit_domainevent_changelist")
    body = client.get(url).content.decode()
    assert "Canary Person" not in body
    event = DomainEvent.objects.filter(action="test.bulk").latest("id")
    for query, expected in (
        ("?action=test.bulk", 3),
        (f"?actor={actor.username}", DomainEvent.objects.filter(actor=actor).count()),
        (f"?correlation_id={event.correlation_id}", 1),
        ("?subject=2", 1),
    ):
        response = client.get(url + query)
        assert response.status_code == 200, query
        assert response.context["cl"].result_count == expected, query
    detail = client.get(reverse("admin:audit_domainevent_change", args=[event.pk])).content.decode()
    assert "Canary Person" not in detail


@pytest.mark.parametrize("name", ["auditlog_logentry", "audit_domainevent"])
def test_audit_list_pages_run_a_constant_number_of_queries(world, client, auditor, name):
    url = reverse(f"admin:{name}_changelist")
    client.force_login(auditor)
    _seed_log(world, 2)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    _seed_log(world, 12)
    with CaptureQueriesContext(connection) as many:
        assert client.get(url).status_code == 200
    assert len(many) == len(few)


def test_token_api_write_of_a_signal_logged_model_has_the_actor(db):
    """Blocked values are logged by auditlog's signals; the token user is known only after DRF auth."""
    from identity.models import BlockedValue, IdentifierType

    user = UserFactory(username="rules_token")
    _grant(user, "identity.add_blockedvalue", "identity.view_blockedvalue", "subjects.all_scopes")
    phone_type = IdentifierType.objects.create(code="phone", name="Phone", normalizer="phone", fields=["phone"])
    response = _token_client(user).post(
        "/api/v1/blocked-values/", {"identifier_type": phone_type.code, "value": PHONE}, format="json"
    )
    assert response.status_code == 201, response.content
    entry = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(BlockedValue)).latest("id")
    assert entry.actor == user and PHONE not in json.dumps(entry.changes)


def test_actor_middleware_resolves_the_user_lazily(db):
    """The user is read when a record is written, i.e. after DRF has authenticated the token."""
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from audit.actor import ActorMiddleware

    user = UserFactory(username="late_user")
    request = RequestFactory().get("/")
    request.user = AnonymousUser()

    def view(req):
        before = current_actor()
        req.user = user  # what DRF does once the token is authenticated
        return before, current_actor()

    assert ActorMiddleware(view)(request) == (None, user)
    assert current_actor() is None


def test_tag_group_saved_through_the_token_api_is_field_logged_with_the_token_user(world):
    from tags.models import TagGroup

    user = UserFactory(username="tags_token", is_superuser=True)
    response = _token_client(user).post(
        "/api/v1/tag-groups/", {"subject_type": "member", "code": "care", "name": "Care"}, format="json"
    )
    assert response.status_code == 201, response.content
    group = TagGroup.objects.get(code="care")
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(TagGroup), object_id=group.pk)
    assert entry.actor == user and entry.action == LogEntry.Action.CREATE
