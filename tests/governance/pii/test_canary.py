"""Canary: unique PII values seeded in every PII field must not appear in any API or admin response
to a user who holds every view permission and all scopes but not ``subjects.view_pii``.

Endpoints are discovered from the URL conf (so a new endpoint cannot escape): every API route
under /api/v1/ (each list, and the detail routes of each viewset for a few stored objects) and
every admin changelist, change page and history page.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from audit.services import domain_event_record
from subjects.models import Relationship, Subject
from subjects.services import subject_save
from tests.factories import UserFactory

CANARIES = {
    "name": "Canaryname Qiuxiang",
    "staff_name": "Canarystaff Wenjun",
    "phone": "13911112222",
    "email": "canary.person@example.cn",
    "address": "88 Canary Road Xuhui",
    "openid": "oCanaryOpenId8f3k2Jq",
    "unionid": "uCanaryUnionId4h7Zp",
    "nick": "CanaryNickXPII",
    "rel_note": "Canary Receptionist Liu",
    "raw_name": "Canaryraw Meiling",
    "raw_phone": "13933334444",
    "identifier": "13955556666",
    "evidence": "13977778888",
    "suggestion": "oCanarySuggestion9x",
    "diff_name": "Canarydiff Hongwei",
    "legacy_diff": "13900009999",
    "event_reason": "Canaryevent Xiaoming",
    "event_value": "13912121212",
}


@pytest.fixture
def seeded(world):
    from identity.models import (
        Identifier,
        IdentifierType,
        MatchSuggestion,
        MergeEvent,
        OneId,
        RecordAssignment,
        SourceRecord,
        SourceSystem,
    )

    c = CANARIES
    world.member_type.attribute_schema = {"type": "object", "properties": {"nick": {"type": "string", "x-pii": True}}}
    world.member_type.save()
    S = Subject.objects.create
    member = S(
        subject_type=world.member_type,
        source="crm",
        external_id="CAN-1",
        display_name=c["name"],
        brand=world.brand_a,
        region=world.shanghai,
        business_line=world.line,
        attributes={
            "phone": c["phone"],
            "email": c["email"],
            "home_address": c["address"],
            "nick": c["nick"],
            "wechat": {"openid": c["openid"], "unionid": c["unionid"]},
            "tier": "gold",
        },
    )
    other = S(subject_type=world.member_type, source="crm", external_id="CAN-2", display_name="x", brand=world.brand_a)
    doctor = S(
        subject_type=world.doctor_type,
        source="hr",
        external_id="DOC-1",
        display_name=c["staff_name"],
        brand=world.brand_a,
        region=world.shanghai,
    )
    Relationship.objects.create(
        relationship_type=world.visited,
        from_subject=member,
        to_subject=world.clinic_a_sh,
        source="crm",
        external_id="CAN-R1",
        attributes={"receptionist_name": c["rel_note"]},
    )
    Relationship.objects.create(
        relationship_type=world.works_at,
        from_subject=doctor,
        to_subject=world.clinic_a_sh,
        source="hr",
        external_id="CAN-R2",
    )
    system = SourceSystem.objects.create(code="crm", name="CRM", brand=world.brand_a, subject_type=world.member_type)
    phone = IdentifierType.objects.create(code="phone", name="Phone", normalizer="phone", fields=["phone"])
    OneId.objects.create(subject=member)
    OneId.objects.create(subject=other)
    record = SourceRecord.objects.create(
        source=system,
        external_id="REC-1",
        raw={"name": c["raw_name"], "phone": c["raw_phone"]},
        content_hash=hashlib.md5(b"x").hexdigest(),
        brand=world.brand_a,
    )
    RecordAssignment.objects.create(record=record, oneid=member)
    Identifier.objects.create(record=record, identifier_type=phone, value=c["identifier"], key=1, status="link")
    MergeEvent.objects.create(
        kind="merge",
        oneid=member,
        others=[other.pk],
        rule="phone",
        evidence=[{"rule": "phone", "value": c["evidence"], "records": [record.pk]}],
        records=[record.pk],
    )
    MatchSuggestion.objects.create(oneid_a=member, oneid_b=other, score=0.9, evidence={"openid": c["suggestion"]})
    hq = UserFactory(username="hq_writer", is_superuser=True)
    subject_save(actor=hq, data={"display_name": c["diff_name"]}, instance=Subject.objects.get(pk=other.pk))
    legacy = LogEntry.objects.filter(object_id=other.pk).latest("id")
    LogEntry.objects.filter(pk=legacy.pk).update(  # an entry written before masking existed
        changes={"attributes": ["{}", json.dumps({"phone": c["legacy_diff"]})]}
    )
    domain_event_record(
        actor=hq,
        action="test.canary",
        row_count=1,
        summary={"ids": [member.pk], "reason": c["event_reason"], "values": [c["event_value"]]},
    )
    return member


@pytest.fixture
def viewer(db):
    """Every view permission and all scopes; no view_pii."""
    user = UserFactory(username="sees_all_but_pii", is_staff=True)
    perms = Permission.objects.filter(codename__startswith="view_").exclude(codename="view_pii")
    user.user_permissions.add(*perms, Permission.objects.get(codename="all_scopes"))
    return user


def _patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _api_urls() -> list[str]:
    urls = []
    for route, entry in _patterns():
        if not route.startswith("api/v1/") or "format" in route or "<drf_format_suffix" in route:
            continue
        callback = entry.callback
        cls = getattr(callback, "cls", None)
        if "(?P<" in route or "<" in route:
            kwargs = entry.pattern.regex.groupindex
            if set(kwargs) != {"pk"} or cls is None or getattr(cls, "queryset", None) is None:
                continue
            model = cls.queryset.model
            for pk in model.objects.order_by("-pk").values_list("pk", flat=True)[:3]:
                urls.append(reverse(entry.name, kwargs={"pk": pk}) if entry.name else None)
        elif entry.name:
            try:
                urls.append(reverse(entry.name))
            except Exception:
                continue
    return sorted({u for u in urls if u})


def _admin_urls() -> list[str]:
    urls = []
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        for pk in model.objects.order_by("-pk").values_list("pk", flat=True)[:3]:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[pk]))
            urls.append(reverse("admin:{}_{}_history".format(*info), args=[pk]))
    return urls


def _leaks(client, urls) -> list[tuple[str, int, str]]:
    found = []
    for url in urls:
        response = client.get(url)
        body = response.content.decode(errors="replace")
        for key, value in CANARIES.items():
            if value in body:
                found.append((url, response.status_code, key))
    return found


def test_no_canary_in_any_api_response(seeded, viewer):
    client = Client()
    client.force_login(viewer)
    urls = _api_urls()
    assert any("/subjects/" in u for u in urls) and len(urls) > 10
    leaks = _leaks(client, urls)
    assert not leaks, "PII leaked:\n" + "\n".join(f"{url} ({status}): {key}" for url, status, key in leaks)


def test_no_canary_in_any_admin_page(seeded, viewer):
    client = Client()
    client.force_login(viewer)
    urls = _admin_urls()
    leaks = _leaks(client, urls)
    assert not leaks, "PII leaked:\n" + "\n".join(f"{url} ({status}): {key}" for url, status, key in leaks)


def test_the_canaries_are_there_for_a_pii_holder_who_unmasks(seeded, viewer):
    """The test would pass vacuously if the seeded values never reached a page."""
    viewer.user_permissions.add(Permission.objects.get(codename="view_pii"))
    client = Client()
    client.force_login(viewer)
    body = client.get(f"/api/v1/subjects/{seeded.pk}/?unmask=1").content.decode()
    assert CANARIES["name"] in body and CANARIES["openid"] in body
