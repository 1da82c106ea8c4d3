"""Reference scenario 1: a medical-aesthetics group with three brands, clinics in six regions,
doctors, consultants, treatment projects and members who visit, buy and get treated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from subjects.models import Subject

from . import people
from .scopes import AESTHETICS_BRANDS, BRANDS, HQ, LEAF_REGIONS, hq
from .sizes import CLINICS, CONSULTANTS_PER_CLINIC, DOCTORS_PER_CLINIC, GROUP
from .types import SKIN_TYPES, SPECIALTIES

LINE = "aesthetics"
STREETS = ("南京西路", "淮海中路", "建国路", "天河路", "文三路", "春熙路", "中山路", "人民路")
# code, name, category, (min, max) recovery days, (min, max) price in CNY
PROJECTS = (
    ("hyaluronic_filler", "玻尿酸填充 Hyaluronic filler", "injectables", (0, 3), (3000, 12000)),
    ("botox", "肉毒素除皱 Botulinum toxin", "injectables", (0, 2), (2000, 8000)),
    ("skin_booster", "水光针 Skin booster", "injectables", (1, 3), (1500, 5000)),
    ("picosecond_laser", "皮秒祛斑 Picosecond laser", "laser", (3, 7), (2000, 9000)),
    ("photorejuvenation", "光子嫩肤 IPL photorejuvenation", "laser", (0, 3), (800, 3000)),
    ("thermage", "热玛吉 Thermage", "laser", (0, 7), (12000, 30000)),
    ("hair_removal", "激光脱毛 Laser hair removal", "laser", (0, 1), (500, 3000)),
    ("chemical_peel", "果酸焕肤 Chemical peel", "skin_care", (3, 7), (400, 1500)),
    ("deep_cleanse", "深层清洁 Deep cleanse", "skin_care", (0, 1), (200, 800)),
    ("microneedling", "微针 Microneedling", "skin_care", (3, 7), (1000, 4000)),
    ("double_eyelid", "双眼皮 Double eyelid", "surgery", (7, 30), (5000, 20000)),
    ("rhinoplasty", "隆鼻 Rhinoplasty", "surgery", (14, 90), (15000, 60000)),
    ("thread_lift", "线雕提升 Thread lift", "surgery", (7, 14), (8000, 30000)),
    ("liposuction", "吸脂塑形 Liposuction", "body", (14, 60), (10000, 50000)),
    ("coolsculpting", "冷冻溶脂 CoolSculpting", "body", (0, 3), (5000, 20000)),
)
CHANNELS = ("walk_in", "referral", "online", "wecom")


def clinic_layout(i: int) -> tuple[str, str]:
    """(brand, region) of clinic ``i``: every brand has a clinic in every region."""
    return AESTHETICS_BRANDS[(i + i // len(LEAF_REGIONS)) % 3], LEAF_REGIONS[i % len(LEAF_REGIONS)][0]


def _scope(brand: str, region: str) -> dict:
    return {"business_line": hq("business_line", LINE), "brand": hq("brand", brand), "region": hq("region", region)}


def fixed_subjects(rng: random.Random) -> list[dict]:
    items = []
    regions = dict((r[0], r[1]) for r in LEAF_REGIONS)
    for i in range(CLINICS):
        brand, region = clinic_layout(i)
        ext = f"C{i + 1:02d}"
        items.append(
            {
                "type": "clinic",
                "source": HQ,
                "external_id": ext,
                "display_name": f"{BRANDS[brand][0]} {regions[region].split()[1]} {ext}",
                "attributes": {
                    "address": f"{regions[region].split()[0]}{rng.choice(STREETS)}{rng.randint(1, 999)}号",
                    "opened_on": people.day(rng, after="2015-01-01", span=3000),
                    "treatment_rooms": rng.randint(3, 20),
                },
                **_scope(brand, region),
            }
        )
        for k in range(DOCTORS_PER_CLINIC):
            items.append(_doctor(rng, f"D{i * DOCTORS_PER_CLINIC + k + 1:03d}", brand, region))
        for k in range(CONSULTANTS_PER_CLINIC):
            ext = f"K{i * CONSULTANTS_PER_CLINIC + k + 1:03d}"
            name = people.name(rng)
            attributes = {"name": name, "hired_on": people.day(rng, after="2018-01-01", span=2000)}
            attributes["wecom_userid"] = f"wc_{ext.lower()}"
            items.append(
                {"type": "consultant", "source": HQ, "external_id": ext, "display_name": name, "attributes": attributes}
                | _scope(brand, region)
            )
    for code, name, category, recovery, price in PROJECTS:
        attributes = {
            "category": category,
            "recovery_days": rng.randint(*recovery),
            "price": rng.randrange(price[0], price[1], 100),
            "suitable_skin_types": people.sample(rng, SKIN_TYPES, 3),
        }
        items.append(
            {
                "type": "project",
                "source": HQ,
                "external_id": code,
                "display_name": name,
                "attributes": attributes,
                "business_line": hq("business_line", LINE),
            }
        )
    return items


def _doctor(rng: random.Random, ext: str, brand: str, region: str) -> dict:
    name = people.name(rng)
    attributes = {
        "name": name,
        "specialties": people.sample(rng, SPECIALTIES, 3),
        "title": rng.choice(("resident", "attending", "attending", "chief")),
        "licensed_since": people.day(rng, after="2000-01-01", span=7000),
    }
    return {
        "type": "doctor",
        "source": HQ,
        "external_id": ext,
        "display_name": f"Dr. {name}",
        "attributes": attributes,
    } | _scope(brand, region)


def fixed_relationships() -> list[dict]:
    items = []
    for i in range(CLINICS):
        brand, region = clinic_layout(i)
        clinic = f"C{i + 1:02d}"
        items.append(_hq_link("in_region", clinic, region))
        items.append(_hq_link("of_brand", clinic, brand))
        for k in range(DOCTORS_PER_CLINIC):
            items.append(_hq_link("doctor_works_at", f"D{i * DOCTORS_PER_CLINIC + k + 1:03d}", clinic))
        for k in range(CONSULTANTS_PER_CLINIC):
            items.append(_hq_link("consultant_works_at", f"K{i * CONSULTANTS_PER_CLINIC + k + 1:03d}", clinic))
    return items


def _hq_link(type_code: str, from_ext: str, to_ext: str) -> dict:
    return {
        "type": type_code,
        "source": HQ,
        "external_id": f"{from_ext}-{to_ext}",
        "from": {"source": HQ, "external_id": from_ext},
        "to": {"source": HQ, "external_id": to_ext},
    }


@dataclass
class Clinic:
    id: int
    brand: str
    brand_id: int
    region_id: int
    doctors: list[int] = field(default_factory=list)
    consultants: list[int] = field(default_factory=list)


@dataclass
class World:
    """Ids of the fixed subjects that members refer to, read once before the member chunks."""

    line_id: int
    brand_ids: dict[str, int]
    clinics: list[Clinic]
    projects: list[tuple[int, str, float]]  # id, code, price

    def clinics_of(self, brand: str, region_id: int | None = None) -> list[Clinic]:
        return [c for c in self.clinics if c.brand == brand and region_id in (None, c.region_id)]

    @classmethod
    def load(cls) -> World:
        def ids(code: str) -> dict[str, int]:
            return dict(Subject.objects.filter(subject_type__code=code, source=HQ).values_list("external_id", "id"))

        brands, regions, doctors, consultants = ids("brand"), ids("region"), ids("doctor"), ids("consultant")
        clinic_ids = ids("clinic")
        clinics = []
        for i in range(CLINICS):
            brand, region = clinic_layout(i)
            clinic = Clinic(clinic_ids[f"C{i + 1:02d}"], brand, brands[brand], regions[region])
            clinic.doctors = [doctors[f"D{i * DOCTORS_PER_CLINIC + k + 1:03d}"] for k in range(DOCTORS_PER_CLINIC)]
            clinic.consultants = [
                consultants[f"K{i * CONSULTANTS_PER_CLINIC + k + 1:03d}"] for k in range(CONSULTANTS_PER_CLINIC)
            ]
            clinics.append(clinic)
        rows = Subject.objects.filter(subject_type__code="project", source=HQ).values_list(
            "id", "external_id", "attributes"
        )
        projects = sorted((id_, code, attrs["price"]) for id_, code, attrs in rows)
        line_id = Subject.objects.get(subject_type__code="business_line", source=HQ, external_id=LINE).id
        return cls(line_id, brands, clinics, projects)


def second_brand(brand: str) -> str:
    return AESTHETICS_BRANDS[(AESTHETICS_BRANDS.index(brand) + 1) % 3]


def member_group(rng: random.Random, group: int, count: int, world: World, out: Batch) -> None:
    """Records ``group * 10 …`` (``count`` of them): nine people, then the first one again in another brand."""
    first = None
    for k in range(count):
        i = group * GROUP + k
        if k == GROUP - 1:
            _second_brand_record(rng, i, first, world, out)
        else:
            record = _member(rng, i, rng.choice(world.clinics), None, world, out)
            first = first or record


@dataclass
class Batch:
    """Subjects of one chunk and relationships whose ``from`` is the position of a subject in it."""

    subjects: list[dict] = field(default_factory=list)
    relationships: list[tuple[int, dict]] = field(default_factory=list)

    def link(self, pos: int, item: dict) -> None:
        self.relationships.append((pos, item))


def _member(rng, i: int, clinic: Clinic, person: dict | None, world: World, out: Batch) -> tuple[int, dict, Clinic]:
    ext = f"M{i + 1:07d}"
    source = f"crm_{clinic.brand}"
    attributes = dict(person) if person else _person(rng)
    attributes["registered_on"] = people.day(rng)
    attributes["level"] = rng.choice(("silver", "silver", "silver", "gold", "gold", "vip"))
    if rng.random() < 0.6:
        attributes["wecom_external_userid"] = f"wm{rng.getrandbits(48):012x}"
    pos = len(out.subjects)
    out.subjects.append(
        {
            "type": "member",
            "source": source,
            "external_id": ext,
            "display_name": attributes["name"],
            "attributes": attributes,
            "business_line": world.line_id,
            "brand": clinic.brand_id,
            "region": clinic.region_id,
        }
    )
    link = _linker(out, pos, source, ext)
    link("member_of", clinic.brand_id, clinic.brand, valid_from=attributes["registered_on"])
    first_visit = people.moment(rng, after=attributes["registered_on"], span=30)
    visit = {"first_visit": True, "channel": rng.choice(CHANNELS)}
    link("visited", clinic.id, "V1", valid_from=first_visit, weight=round(rng.uniform(0.5, 1), 2), attributes=visit)
    if i % GROUP == 3:
        again = rng.choice(world.clinics_of(clinic.brand))
        visit = {"first_visit": False, "channel": rng.choice(CHANNELS)}
        later = people.moment(rng, after=first_visit, span=180)
        link("visited", again.id, "V2", valid_from=later, weight=round(rng.uniform(0.5, 1), 2), attributes=visit)
    if i % 2 == 0:
        project_id, code, price = rng.choice(world.projects)
        paid = people.moment(rng, after=first_visit, span=60)
        order = {"amount": round(price * rng.uniform(0.7, 1.0)), "order_id": f"O{ext[1:]}{clinic.brand[0].upper()}"}
        link("purchased", project_id, "P1", valid_from=paid, attributes=order)
        if i % 4 == 0:
            link("treated_by", rng.choice(clinic.doctors), "T1", valid_from=paid, attributes={"project": code})
    if i % 4 == 1:
        served = {"channel": rng.choice(CHANNELS)}
        link(
            "served_by",
            rng.choice(clinic.consultants),
            "S1",
            valid_from=first_visit,
            weight=round(rng.uniform(0.3, 1), 2),
            attributes=served,
        )
    return pos, attributes, clinic


def _second_brand_record(rng, i: int, first, world: World, out: Batch) -> None:
    pos, attributes, clinic = first
    person = {k: attributes[k] for k in ("name", "phone", "birth_date", "gender", "skin_type")}
    brand = second_brand(clinic.brand)
    other = rng.choice(world.clinics_of(brand, clinic.region_id))
    _, again, _ = _member(rng, i, other, person, world, out)
    primary = out.subjects[pos]
    link = _linker(out, pos, primary["source"], primary["external_id"])
    link("member_of", other.brand_id, brand, valid_from=again["registered_on"])


def _person(rng: random.Random) -> dict:
    return {
        "name": people.name(rng),
        "phone": people.phone(rng),
        "birth_date": people.birth_date(rng),
        "gender": people.gender(rng, 0.85),
        "skin_type": rng.choice(SKIN_TYPES),
    }


def _linker(out: Batch, pos: int, source: str, ext: str):
    def link(type_code: str, to: int, suffix: str, *, valid_from=None, weight=1.0, attributes=None) -> None:
        out.link(
            pos,
            {
                "type": type_code,
                "source": source,
                "external_id": f"{ext}-{suffix}",
                "to": to,
                "weight": weight,
                "valid_from": valid_from,
                "attributes": attributes or {},
            },
        )

    return link
