"""Governance fixtures: the roles as real users, scope grants, and a world with subjects inside
and outside every restricted user's scope.

``gov`` builds on the shared ``world`` (brands A and B, China ▸ Shanghai / Beijing, one clinic in
each) and adds members and relationships so that each role has rows it must see and rows it must
not: brand A / Shanghai is "in", brand B / Beijing is "out". Other helpers' governance tests
(tests/governance/<yours>/) can use these fixtures too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from subjects.models import Relationship, ScopeGrant, Subject
from subjects.roles import ensure_roles, role_group
from tests.factories import UserFactory

ROLE_CODES = ("hq_admin", "hq_analyst", "brand_operator", "regional_manager", "integration", "auditor")


@dataclass
class Gov:
    world: object
    users: dict = field(default_factory=dict)
    member_in: Subject | None = None
    member_out: Subject | None = None
    member_a_bj: Subject | None = None
    rel_in: Relationship | None = None
    rel_out: Relationship | None = None
    rel_cross: Relationship | None = None

    def client(self, role: str | None) -> APIClient:
        """An API client with the role's token (``None``: anonymous; "nobody": no permissions)."""
        client = APIClient()
        if role is None:
            return client
        token, _ = Token.objects.get_or_create(user=self.users[role])
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    def admin_client(self, role: str):
        from django.test import Client

        client = Client()
        client.force_login(self.users[role])
        return client

    def visible_ids(self, role: str) -> set[int]:
        """What ``role`` must see of the world's subjects, written out by hand (not computed)."""
        w = self.world
        everything = set(Subject.objects.values_list("pk", flat=True))
        brand_a = {w.brand_a.pk, w.clinic_a_sh.pk, self.member_in.pk, self.member_a_bj.pk}
        shanghai = {w.shanghai.pk, w.clinic_a_sh.pk, self.member_in.pk}
        return {
            "hq_admin": everything,
            "hq_analyst": everything,
            "brand_operator": brand_a,
            "integration": brand_a,
            "regional_manager": shanghai,
            "auditor": set(),
            "nobody": set(),
        }[role]


def make_user(role: str | None, username: str, **grants) -> object:
    """A staff user in ``role``'s group with one scope grant of ``grants`` (if any)."""
    user = UserFactory(username=username, is_staff=True)
    if role is not None:
        user.groups.add(role_group(role))
    if grants:
        ScopeGrant.objects.create(user=user, **grants)
    return user


@pytest.fixture
def gov(world) -> Gov:
    ensure_roles()
    w = world
    S = Subject.objects.create
    g = Gov(world=w)
    g.member_in = S(
        subject_type=w.member_type,
        source="crm",
        external_id="M-IN",
        display_name="Member in",
        brand=w.brand_a,
        region=w.shanghai,
        business_line=w.line,
    )
    g.member_out = S(
        subject_type=w.member_type,
        source="crm",
        external_id="M-OUT",
        display_name="Member out",
        brand=w.brand_b,
        region=w.beijing,
        business_line=w.line,
    )
    g.member_a_bj = S(
        subject_type=w.member_type,
        source="crm",
        external_id="M-A-BJ",
        display_name="Member A Beijing",
        brand=w.brand_a,
        region=w.beijing,
        business_line=w.line,
    )
    R = Relationship.objects.create
    g.rel_in = R(
        relationship_type=w.visited,
        from_subject=g.member_in,
        to_subject=w.clinic_a_sh,
        source="crm",
        external_id="V-IN",
    )
    g.rel_out = R(
        relationship_type=w.visited,
        from_subject=g.member_out,
        to_subject=w.clinic_b_bj,
        source="crm",
        external_id="V-OUT",
    )
    g.rel_cross = R(
        relationship_type=w.visited, from_subject=g.member_in, to_subject=w.clinic_b_bj, source="crm", external_id="V-X"
    )
    g.users = {
        "hq_admin": make_user("hq_admin", "hq_admin"),
        "hq_analyst": make_user("hq_analyst", "hq_analyst"),
        "brand_operator": make_user("brand_operator", "operator_a", brand=w.brand_a),
        "regional_manager": make_user("regional_manager", "manager_sh", region=w.shanghai),
        "integration": make_user("integration", "integration_a", brand=w.brand_a),
        "auditor": make_user("auditor", "auditor"),
        "nobody": make_user(None, "nobody"),
    }
    return g
