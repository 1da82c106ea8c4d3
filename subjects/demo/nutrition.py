"""Reference scenario 2: a nutrition platform with nutritionists, content, products and users."""

from __future__ import annotations

import random

from subjects.models import Subject

from . import people
from .aesthetics import Batch
from .scopes import LEAF_REGIONS, hq
from .sizes import CONTENTS, NUTRITIONISTS, PRODUCTS
from .types import HEALTH_CONCERNS

LINE, BRAND, SOURCE, APP = "nutrition", "nutrifit", "nutrifit", "nutrifit_app"
SCOPE = {"business_line": hq("business_line", LINE), "brand": hq("brand", BRAND)}
KINDS = ("article", "video", "recipe")
PRODUCT_CATEGORIES = ("protein", "vitamins", "meal", "snack")


def fixed_subjects(rng: random.Random) -> list[dict]:
    items = []
    for i in range(NUTRITIONISTS):
        name = people.name(rng)
        attributes = {
            "name": name,
            "specialties": people.sample(rng, HEALTH_CONCERNS, 2),
            "certified": rng.random() < 0.8,
        }
        items.append(_item("nutritionist", f"N{i + 1:02d}", name, attributes))
    for i in range(CONTENTS):
        topics = people.sample(rng, HEALTH_CONCERNS, 2)
        kind = KINDS[i % 3]
        title = f"{topics[0].replace('_', ' ').capitalize()} {kind} #{i + 1}"
        items.append(_item("content", f"A{i + 1:03d}", title, {"title": title, "kind": kind, "topics": topics}))
    for i in range(PRODUCTS):
        category = PRODUCT_CATEGORIES[i % 4]
        sku = f"NF-{category[:3].upper()}-{i + 1:02d}"
        attributes = {"sku": sku, "price": rng.randrange(49, 599), "category": category}
        items.append(_item("product", f"P{i + 1:02d}", f"NutriFit {category} {i + 1}", attributes))
    return items


def _item(type_code: str, ext: str, name: str, attributes: dict) -> dict:
    return {
        "type": type_code,
        "source": SOURCE,
        "external_id": ext,
        "display_name": name,
        "attributes": attributes,
    } | SCOPE


def fixed_relationships() -> list[dict]:
    return [
        {
            "type": "authored_by",
            "source": SOURCE,
            "external_id": f"A{i + 1:03d}",
            "from": {"source": SOURCE, "external_id": f"A{i + 1:03d}"},
            "to": {"source": SOURCE, "external_id": f"N{i % NUTRITIONISTS + 1:02d}"},
        }
        for i in range(CONTENTS)
    ]


class World:
    def __init__(self):
        def ids(code: str) -> list[int]:
            return list(
                Subject.objects.filter(subject_type__code=code, source=SOURCE)
                .order_by("external_id")
                .values_list("id", flat=True)
            )

        self.nutritionists, self.products = ids("nutritionist"), ids("product")
        self.line_id = Subject.objects.get(subject_type__code="business_line", source="hq", external_id=LINE).id
        self.brand_id = Subject.objects.get(subject_type__code="brand", source="hq", external_id=BRAND).id
        regions = dict(
            Subject.objects.filter(subject_type__code="region", source="hq").values_list("external_id", "id")
        )
        self.region_ids = [regions[r[0]] for r in LEAF_REGIONS]


def user_group(rng: random.Random, group: int, count: int, world: World, out: Batch) -> None:
    for k in range(count):
        i = group * 10 + k
        ext = f"U{i + 1:07d}"
        concerns = people.sample(rng, HEALTH_CONCERNS, 3)
        attributes = {
            "name": people.name(rng),
            "phone": people.phone(rng),
            "birth_date": people.birth_date(rng),
            "gender": people.gender(rng, 0.6),
            "health_concerns": concerns,
            "activity": rng.choice(("low", "moderate", "high")),
        }
        pos = len(out.subjects)
        out.subjects.append(
            {
                "type": "nutrition_user",
                "source": APP,
                "external_id": ext,
                "display_name": attributes["name"],
                "attributes": attributes,
                "business_line": world.line_id,
                "brand": world.brand_id,
                "region": rng.choice(world.region_ids),
            }
        )
        since = people.moment(rng)
        out.link(pos, _rel("follows", ext, "F1", rng.choice(world.nutritionists), since))
        if i % 3 == 0:
            consulted = _rel(
                "consulted", ext, "C1", rng.choice(world.nutritionists), people.moment(rng, after=since, span=90)
            )
            consulted["attributes"] = {"topic": concerns[0]}
            out.link(pos, consulted)
        if i % 2 == 0:
            bought = _rel(
                "product_purchased", ext, "B1", rng.choice(world.products), people.moment(rng, after=since, span=120)
            )
            bought["attributes"] = {"amount": rng.randrange(49, 1200), "order_id": f"NF{ext[1:]}"}
            out.link(pos, bought)


def _rel(type_code: str, ext: str, suffix: str, to: int, valid_from: str) -> dict:
    return {"type": type_code, "source": APP, "external_id": f"{ext}-{suffix}", "to": to, "valid_from": valid_from}
