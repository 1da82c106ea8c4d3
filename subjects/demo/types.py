"""The subject types and relationship types of the three reference scenarios.

Saved through the services and only when they differ from what is stored, so a
second ``loaddemo`` leaves them (and their ``updated_at``) untouched.
"""

from __future__ import annotations

from subjects.models import RelationshipType, SubjectType
from subjects.services import relationship_type_save, subject_type_save

from .schemas import DATE, GENDER, MONEY, PHONE, TEXT, enum, integer, obj, tags_of

SKIN_TYPES = ("dry", "oily", "combination", "normal", "sensitive")
SPECIALTIES = ("injectables", "laser", "skin_care", "surgery", "hair_removal", "anti_aging")
PROJECT_CATEGORIES = ("injectables", "laser", "skin_care", "surgery", "body")
HEALTH_CONCERNS = ("weight_loss", "diabetes", "sports", "pregnancy", "gut_health", "sleep")
PERSON = {"name": TEXT, "phone": PHONE, "birth_date": DATE, "gender": GENDER}

SUBJECT_TYPES: list[dict] = [
    {"code": "business_line", "name": "Business line", "category": "organization", "scope_role": "business_line"},
    {"code": "brand", "name": "Brand", "category": "organization", "scope_role": "brand"},
    {
        "code": "region",
        "name": "Region",
        "category": "organization",
        "scope_role": "region",
        "attribute_schema": obj({"level": enum("country", "province", "city")}, {"admin_code": TEXT}),
    },
    {
        "code": "clinic",
        "name": "Clinic",
        "category": "organization",
        "description": "A medical-aesthetics clinic (store) of one brand in one region.",
        "attribute_schema": obj({"address": TEXT, "opened_on": DATE, "treatment_rooms": integer(1, 50)}),
    },
    {
        "code": "doctor",
        "name": "Doctor",
        "category": "staff",
        "attribute_schema": obj(
            {"name": TEXT, "specialties": tags_of(*SPECIALTIES), "title": enum("resident", "attending", "chief")},
            {"licensed_since": DATE},
        ),
    },
    {
        "code": "consultant",
        "name": "Consultant",
        "category": "staff",
        "attribute_schema": obj({"name": TEXT, "hired_on": DATE}, {"wecom_userid": TEXT}),
    },
    {
        "code": "project",
        "name": "Treatment project",
        "category": "content",
        "attribute_schema": obj(
            {"category": enum(*PROJECT_CATEGORIES), "recovery_days": integer(0, 180), "price": MONEY},
            {"suitable_skin_types": tags_of(*SKIN_TYPES)},
        ),
    },
    {
        "code": "member",
        "name": "Member",
        "category": "customer",
        "description": "A medical-aesthetics member as one brand's CRM knows them.",
        "attribute_schema": obj(
            {**PERSON, "skin_type": enum(*SKIN_TYPES), "registered_on": DATE, "level": enum("silver", "gold", "vip")},
            {"wecom_external_userid": TEXT},
        ),
    },
    {
        "code": "nutritionist",
        "name": "Nutritionist",
        "category": "staff",
        "attribute_schema": obj(
            {"name": TEXT, "specialties": tags_of(*HEALTH_CONCERNS), "certified": {"type": "boolean"}}
        ),
    },
    {
        "code": "content",
        "name": "Content",
        "category": "content",
        "attribute_schema": obj(
            {"title": TEXT, "kind": enum("article", "video", "recipe"), "topics": tags_of(*HEALTH_CONCERNS)}
        ),
    },
    {
        "code": "product",
        "name": "Product",
        "category": "content",
        "attribute_schema": obj(
            {"sku": TEXT, "price": MONEY, "category": enum("protein", "vitamins", "meal", "snack")}
        ),
    },
    {
        "code": "nutrition_user",
        "name": "Nutrition user",
        "category": "customer",
        "attribute_schema": obj(
            {**PERSON, "health_concerns": tags_of(*HEALTH_CONCERNS), "activity": enum("low", "moderate", "high")}
        ),
    },
    {
        "code": "store",
        "name": "Store",
        "category": "organization",
        "attribute_schema": obj({"address": TEXT, "opened_on": DATE, "format": enum("mall", "street", "outlet")}),
    },
    {
        "code": "shopping_guide",
        "name": "Shopping guide",
        "category": "staff",
        "attribute_schema": obj({"name": TEXT, "hired_on": DATE}),
    },
    {
        "code": "retail_customer",
        "name": "Retail customer",
        "category": "customer",
        "attribute_schema": obj({**PERSON, "tier": enum("regular", "silver", "gold")}),
    },
]

_DATED = {"channel": enum("walk_in", "referral", "online", "wecom")}
RELATIONSHIP_TYPES: list[dict] = [
    {"code": "in_region", "name": "Clinic in region", "from": "clinic", "to": "region", "cardinality": "n:1"},
    {"code": "of_brand", "name": "Clinic of brand", "from": "clinic", "to": "brand", "cardinality": "n:1"},
    {"code": "doctor_works_at", "name": "Doctor works at", "from": "doctor", "to": "clinic", "cardinality": "n:1"},
    {
        "code": "consultant_works_at",
        "name": "Consultant works at",
        "from": "consultant",
        "to": "clinic",
        "cardinality": "n:1",
    },
    {"code": "member_of", "name": "Member of brand", "from": "member", "to": "brand", "cardinality": "n:m"},
    {
        "code": "visited",
        "name": "Visited clinic",
        "from": "member",
        "to": "clinic",
        "cardinality": "n:m",
        "attribute_schema": obj({"first_visit": {"type": "boolean"}}, _DATED),
    },
    {
        "code": "purchased",
        "name": "Purchased project",
        "from": "member",
        "to": "project",
        "cardinality": "n:m",
        "attribute_schema": obj({"amount": MONEY, "order_id": TEXT}),
    },
    {
        "code": "treated_by",
        "name": "Treated by doctor",
        "from": "member",
        "to": "doctor",
        "cardinality": "n:m",
        "attribute_schema": obj({"project": TEXT}),
    },
    {
        "code": "served_by",
        "name": "Served by consultant",
        "from": "member",
        "to": "consultant",
        "cardinality": "n:m",
        "taggable": True,
        "attribute_schema": obj({}, _DATED),
    },
    {"code": "follows", "name": "Follows nutritionist", "from": "nutrition_user", "to": "nutritionist"},
    {
        "code": "consulted",
        "name": "Consulted nutritionist",
        "from": "nutrition_user",
        "to": "nutritionist",
        "attribute_schema": obj({"topic": enum(*HEALTH_CONCERNS)}),
    },
    {
        "code": "product_purchased",
        "name": "Purchased product",
        "from": "nutrition_user",
        "to": "product",
        "attribute_schema": obj({"amount": MONEY, "order_id": TEXT}),
    },
    {"code": "authored_by", "name": "Authored by", "from": "content", "to": "nutritionist", "cardinality": "n:1"},
    {"code": "store_in_region", "name": "Store in region", "from": "store", "to": "region", "cardinality": "n:1"},
    {"code": "store_of_brand", "name": "Store of brand", "from": "store", "to": "brand", "cardinality": "n:1"},
    {"code": "guide_works_at", "name": "Guide works at", "from": "shopping_guide", "to": "store", "cardinality": "n:1"},
    {"code": "shopped_at", "name": "Shopped at store", "from": "retail_customer", "to": "store"},
    {
        "code": "guided_by",
        "name": "Served by shopping guide",
        "from": "retail_customer",
        "to": "shopping_guide",
        "taggable": True,
    },
]


def ensure_types(*, actor=None) -> int:
    """Create or update the demo types; the number of types written."""
    written = 0
    types = {t.code: t for t in SubjectType.objects.all()}
    for spec in SUBJECT_TYPES:
        data = {"description": "", "attribute_schema": {}, "scope_role": "", **spec}
        current = types.get(spec["code"])
        if current is None or _differs(current, data):
            types[spec["code"]] = subject_type_save(actor=actor, data=data, instance=current)
            written += 1
    rtypes = {t.code: t for t in RelationshipType.objects.all()}
    for spec in RELATIONSHIP_TYPES:
        data = _relationship_data(spec, types)
        current = rtypes.get(spec["code"])
        if current is None or _differs(current, data):
            relationship_type_save(actor=actor, data=data, instance=current)
            written += 1
    return written


def _relationship_data(spec: dict, types: dict[str, SubjectType]) -> dict:
    return {
        "code": spec["code"],
        "name": spec["name"],
        "description": spec.get("description", ""),
        "from_type": types[spec["from"]],
        "to_type": types[spec["to"]],
        "cardinality": spec.get("cardinality", "n:m"),
        "taggable": spec.get("taggable", False),
        "attribute_schema": spec.get("attribute_schema", {}),
    }


def _differs(instance, data: dict) -> bool:
    return any(getattr(instance, name) != value for name, value in data.items())
