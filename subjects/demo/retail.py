"""Reference scenario 3: a retail chain with stores, shopping guides and customers."""

from __future__ import annotations

import random

from subjects.models import Subject

from . import people
from .aesthetics import Batch
from .scopes import LEAF_REGIONS, hq
from .sizes import GUIDES_PER_STORE, STORES

LINE, BRAND, SOURCE, POS = "retail", "urbanmart", "urbanmart", "urbanmart_pos"
FORMATS = ("mall", "street", "outlet")


def store_region(i: int) -> str:
    return LEAF_REGIONS[i % len(LEAF_REGIONS)][0]


def _scope(region: str) -> dict:
    return {"business_line": hq("business_line", LINE), "brand": hq("brand", BRAND), "region": hq("region", region)}


def fixed_subjects(rng: random.Random) -> list[dict]:
    items = []
    for i in range(STORES):
        region = store_region(i)
        city = next(r[1] for r in LEAF_REGIONS if r[0] == region).split()
        attributes = {
            "address": f"{city[0]}{rng.choice(('中山路', '解放路', '人民路'))}{rng.randint(1, 500)}号",
            "opened_on": people.day(rng, after="2012-01-01", span=4000),
            "format": FORMATS[i % 3],
        }
        ext = f"S{i + 1:02d}"
        items.append(
            {
                "type": "store",
                "source": SOURCE,
                "external_id": ext,
                "display_name": f"UrbanMart {city[1]} {ext}",
                "attributes": attributes,
            }
            | _scope(region)
        )
        for k in range(GUIDES_PER_STORE):
            name = people.name(rng)
            attributes = {"name": name, "hired_on": people.day(rng, after="2019-01-01", span=1800)}
            ext = f"G{i * GUIDES_PER_STORE + k + 1:03d}"
            items.append(
                {
                    "type": "shopping_guide",
                    "source": SOURCE,
                    "external_id": ext,
                    "display_name": name,
                    "attributes": attributes,
                }
                | _scope(region)
            )
    return items


def fixed_relationships() -> list[dict]:
    items = []
    for i in range(STORES):
        store = f"S{i + 1:02d}"
        items.append(_link("store_in_region", store, {"source": "hq", "external_id": store_region(i)}))
        items.append(_link("store_of_brand", store, {"source": "hq", "external_id": BRAND}))
        for k in range(GUIDES_PER_STORE):
            guide = f"G{i * GUIDES_PER_STORE + k + 1:03d}"
            items.append(_link("guide_works_at", guide, {"source": SOURCE, "external_id": store}))
    return items


def _link(type_code: str, from_ext: str, to: dict) -> dict:
    return {
        "type": type_code,
        "source": SOURCE,
        "external_id": f"{from_ext}-{to['external_id']}",
        "from": {"source": SOURCE, "external_id": from_ext},
        "to": to,
    }


class World:
    def __init__(self):
        stores = dict(
            Subject.objects.filter(subject_type__code="store", source=SOURCE).values_list("external_id", "id")
        )
        guides = dict(
            Subject.objects.filter(subject_type__code="shopping_guide", source=SOURCE).values_list("external_id", "id")
        )
        scopes = dict(Subject.objects.filter(subject_type__code="store", source=SOURCE).values_list("id", "region_id"))
        self.stores = [stores[f"S{i + 1:02d}"] for i in range(STORES)]
        self.guides = [
            [guides[f"G{i * GUIDES_PER_STORE + k + 1:03d}"] for k in range(GUIDES_PER_STORE)] for i in range(STORES)
        ]
        self.regions = [scopes[s] for s in self.stores]
        self.line_id = Subject.objects.get(subject_type__code="business_line", source="hq", external_id=LINE).id
        self.brand_id = Subject.objects.get(subject_type__code="brand", source="hq", external_id=BRAND).id


def customer_group(rng: random.Random, group: int, count: int, world: World, out: Batch) -> None:
    for k in range(count):
        i = group * 10 + k
        ext = f"R{i + 1:07d}"
        store = rng.randrange(STORES)
        attributes = {
            "name": people.name(rng),
            "phone": people.phone(rng),
            "birth_date": people.birth_date(rng),
            "gender": people.gender(rng, 0.55),
            "tier": rng.choice(("regular", "regular", "silver", "gold")),
        }
        pos = len(out.subjects)
        out.subjects.append(
            {
                "type": "retail_customer",
                "source": POS,
                "external_id": ext,
                "display_name": attributes["name"],
                "attributes": attributes,
                "business_line": world.line_id,
                "brand": world.brand_id,
                "region": world.regions[store],
            }
        )
        first = people.moment(rng)
        shopped = {"type": "shopped_at", "source": POS, "external_id": f"{ext}-{store + 1}", "to": world.stores[store]}
        out.link(pos, shopped | {"valid_from": first, "weight": round(rng.uniform(0.2, 1), 2)})
        if i % 2 == 0:
            guided = {
                "type": "guided_by",
                "source": POS,
                "external_id": f"{ext}-G",
                "to": rng.choice(world.guides[store]),
            }
            out.link(pos, guided | {"valid_from": first, "weight": round(rng.uniform(0.3, 1), 2)})
