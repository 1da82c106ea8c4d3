import pytest

from identity.defaults import install_defaults
from identity.models import SourceSystem
from subjects.models import SubjectType

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "phone": {"type": "string"},
        "email": {"type": "string"},
        "gender": {"enum": ["female", "male", "unknown"]},
        "city": {"type": "string"},
    },
    "additionalProperties": False,
}


class Sources:
    def __init__(self, world):
        self.world = world
        self.person = SubjectType.objects.create(
            code="person", name="Person", category="customer", attribute_schema=PERSON_SCHEMA
        )
        S = SourceSystem.objects.create
        self.crm_a = S(
            code="crm_a", name="CRM A", kind="crm", brand=world.brand_a, trust_rank=90, subject_type=self.person
        )
        self.crm_b = S(
            code="crm_b", name="CRM B", kind="crm", brand=world.brand_b, trust_rank=80, subject_type=self.person
        )
        self.wecom = S(code="wecom", name="WeCom", kind="wecom", trust_rank=60, subject_type=self.person)
        self.oa = S(
            code="oa_a",
            name="OA A",
            kind="wechat_oa",
            brand=world.brand_a,
            app_id="wxA",
            open_platform_id="open1",
            trust_rank=40,
            subject_type=self.person,
        )
        self.mp = S(
            code="mp_b",
            name="MP B",
            kind="wechat_mp",
            brand=world.brand_b,
            app_id="wxB",
            open_platform_id="open1",
            trust_rank=40,
            subject_type=self.person,
        )
        self.shop = S(code="shop", name="Shop", kind="ecommerce", trust_rank=30, subject_type=self.person)
        self.doctor_crm = S(code="hr", name="HR", kind="other", trust_rank=50, subject_type=world.doctor_type)


@pytest.fixture
def rules(db):
    """The shipped identifier types, composite keys and blocked values (tests run without migrations)."""
    install_defaults()


@pytest.fixture
def sources(world, rules):
    return Sources(world)
