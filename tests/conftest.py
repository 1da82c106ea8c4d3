import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests are skipped on SQLite, and the skip shows in the summary."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL); this run uses SQLite")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_throttle_counters():
    """API throttle counters live in the process's cache: each test starts with none, so a
    test never sees 429s earned by the ones before it (user ids repeat on SQLite)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def admin_user(db):
    return UserFactory(is_superuser=True, is_staff=True, username="admin")


@pytest.fixture
def api(admin_user):
    """An API client authenticated with a superuser's token."""
    client = APIClient()
    token = Token.objects.create(user=admin_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"


class World:
    """A small medical-aesthetics world: types, two brands, a region tree, clinics."""

    def __init__(self):
        from subjects.models import RelationshipType, Subject, SubjectType

        T = SubjectType.objects.create
        self.brand_type = T(code="brand", name="Brand", category="organization", scope_role="brand")
        self.region_type = T(code="region", name="Region", category="organization", scope_role="region")
        self.line_type = T(
            code="business_line", name="Business line", category="organization", scope_role="business_line"
        )
        self.clinic_type = T(code="clinic", name="Clinic", category="organization")
        self.doctor_type = T(code="doctor", name="Doctor", category="staff")
        self.member_type = T(
            code="member",
            name="Member",
            category="customer",
            attribute_schema={
                "type": "object",
                "properties": {
                    "birth_date": {"type": "string", "format": "date"},
                    "skin_type": {"enum": ["dry", "oily", "combination", "normal", "sensitive"]},
                    "spend": {"type": "number", "minimum": 0},
                },
                "additionalProperties": False,
            },
        )
        S = Subject.objects.create
        self.line = S(subject_type=self.line_type, source="hq", external_id="aesthetics", display_name="Aesthetics")
        self.brand_a = S(subject_type=self.brand_type, source="hq", external_id="A", display_name="Brand A")
        self.brand_b = S(subject_type=self.brand_type, source="hq", external_id="B", display_name="Brand B")
        self.china = S(subject_type=self.region_type, source="hq", external_id="CN", display_name="China")
        self.shanghai = S(
            subject_type=self.region_type, source="hq", external_id="SH", display_name="Shanghai", parent=self.china
        )
        self.beijing = S(
            subject_type=self.region_type, source="hq", external_id="BJ", display_name="Beijing", parent=self.china
        )
        self.clinic_a_sh = S(
            subject_type=self.clinic_type,
            source="hq",
            external_id="C1",
            display_name="A Shanghai",
            brand=self.brand_a,
            region=self.shanghai,
            business_line=self.line,
        )
        self.clinic_b_bj = S(
            subject_type=self.clinic_type,
            source="hq",
            external_id="C2",
            display_name="B Beijing",
            brand=self.brand_b,
            region=self.beijing,
            business_line=self.line,
        )
        R = RelationshipType.objects.create
        self.visited = R(
            code="visited", name="Visited", from_type=self.member_type, to_type=self.clinic_type, cardinality="n:m"
        )
        self.works_at = R(
            code="works_at", name="Works at", from_type=self.doctor_type, to_type=self.clinic_type, cardinality="n:1"
        )
        self.spouse = R(
            code="spouse", name="Spouse", from_type=self.member_type, to_type=self.member_type, cardinality="1:1"
        )
        self.manages = R(
            code="manages", name="Manages", from_type=self.doctor_type, to_type=self.clinic_type, cardinality="1:n"
        )


@pytest.fixture
def world(db):
    return World()
