"""Fixtures for identity governance: a person known to brands A and B, and scoped users.

Users get permissions directly (model permissions + ``ScopeGrant`` rows); once ``subjects.roles``
lands the same users can be built from roles.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from identity.models import SourceRecord
from subjects.models import ScopeGrant
from tests.factories import UserFactory
from tests.identity.conftest import Sources, rules  # noqa: F401  (fixture re-export)
from tests.identity.helpers import push

READ = ["view_oneid", "view_sourcerecord", "view_mergeevent", "view_matchsuggestion", "view_sourcesystem"]
OPERATE = [*READ, "change_oneid", "change_matchsuggestion", "add_sourcerecord", "change_sourcerecord"]
CANARY_A = {"name": "Canary Anna", "phone": "13911110001", "email": "anna.canary@a.example", "gender": "female"}
# Linked by name + phone; the brand-B record's own values (e-mail, city) must never reach brand A.
CANARY_B = {"name": "Canary Anna", "phone": "13911110001", "email": "bella.canary@b.example", "city": "Bcitycanary"}


def make_user(*codenames: str, brands=(), username=None, staff=True, **flags):
    """A user with model permissions ``codenames`` (any app) and one brand grant per brand."""
    user = UserFactory(username=username, is_staff=staff, **flags) if username else UserFactory(is_staff=staff, **flags)
    names = [c.split(".")[-1] for c in codenames]
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    for brand in brands:
        ScopeGrant.objects.create(user=user, brand=brand)
    return user


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


CANARY_W = {"external_userid": "wmCanaryWecom1", "email": "anna.canary@a.example"}  # group level (WeCom)
# Personal values (a city is not PII: it is only among brand B's values that brand A must not see).
CANARIES = (
    "Canary",
    "13911110001",
    "anna.canary",
    "bella.canary",
    "wmCanaryWecom1",
    "ExtCanaryA1",
    "ExtCanaryB1",
    "ExtCanaryW1",
)
B_ONLY = ("bella.canary", "Bcitycanary", "ExtCanaryB1", "wmCanaryWecom1", "ExtCanaryW1")


class Person:
    """One person known to brand A's CRM, brand B's CRM (name + phone) and the group's WeCom (e-mail)."""

    def __init__(self, sources: Sources):
        # A first without its e-mail, the WeCom record apart, B joins A; then A's e-mail bridges A and
        # WeCom: a merge event naming all three records (brand A may not see it).
        push(("crm_a", "ExtCanaryA1", {k: v for k, v in CANARY_A.items() if k != "email"}))
        push(("wecom", "ExtCanaryW1", CANARY_W))
        push(("crm_b", "ExtCanaryB1", CANARY_B))
        push(("crm_a", "ExtCanaryA1", CANARY_A))
        self.record_a = SourceRecord.objects.get(source__code="crm_a")
        self.record_b = SourceRecord.objects.get(source__code="crm_b")
        self.record_w = SourceRecord.objects.get(source__code="wecom")
        assert self.record_a.assigned_oneid_id == self.record_b.assigned_oneid_id == self.record_w.assigned_oneid_id
        self.oneid = self.record_a.assigned_oneid_id


@pytest.fixture
def sources(world, rules):  # noqa: F811
    return Sources(world)


@pytest.fixture
def person(sources):
    return Person(sources)


@pytest.fixture
def operator_a(world):
    """A brand-A operator without PII permission."""
    return make_user(*OPERATE, brands=[world.brand_a], username="op_a")


@pytest.fixture
def operator_a_pii(world):
    return make_user(*OPERATE, "view_pii", brands=[world.brand_a], username="op_a_pii")


@pytest.fixture
def operator_b_pii(world):
    return make_user(*OPERATE, "view_pii", brands=[world.brand_b], username="op_b_pii")


@pytest.fixture
def hq_pii(world):
    return make_user(*OPERATE, "view_pii", "all_scopes", username="hq_pii")


def no_canary(content: bytes | str, canaries=CANARIES) -> list[str]:
    """The canaries found in ``content`` (empty: none leaked)."""
    text = content.decode() if isinstance(content, bytes) else content
    return [c for c in canaries if c in text]
