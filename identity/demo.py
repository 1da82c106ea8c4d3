"""OneID demo data on top of the subjects demo (``manage.py loaddemo``): the medical-aesthetics identities.

From the demo's members (one subject per brand CRM record) it builds source
records as each system knows the person: the brand CRMs (name + phone + member
id, with the WeCom external_userid and, when bound, the WeChat unionid), WeCom
(external_userid + name), a WeChat official account of Glow and a mini-program of
Lumière on one open platform (openid per app + unionid), and the e-commerce shop
(name + phone + shipping address + order id). The demo's tenth member of every
group is the first person again in a second brand's CRM, so those people become
one OneID across two brands. Added on purpose: a junk phone (13800138000) shared
by test orders, and a family of four sharing one phone. Everything is written
through the services and resolved in one batch run; a second run writes nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

from subjects.models import Subject, SubjectType
from subjects.services import subject_type_save

from .defaults import install_defaults
from .models import SourceSystem
from .resolution.batch import resolve_all
from .services import source_record_bulk_upsert
from .services.config import config_save

PERSON_TYPE = {
    "code": "person",
    "name": "Person (OneID)",
    "category": "customer",
    "description": "One person across every source system and brand: the golden record of a OneID.",
    "attribute_schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "phone": {"type": "string", "maxLength": 40},
            "birth_date": {"type": "string", "format": "date"},
            "gender": {"enum": ["female", "male", "unknown"]},
            "email": {"type": "string", "maxLength": 200},
            "address": {"type": "string", "maxLength": 300},
        },
        "additionalProperties": False,
    },
}
# code, name, kind, brand external id (None: group), trust rank, app id, open platform id
SOURCES = [
    # the CRMs store the unionids members bound through the group's open platform
    ("crm_glow", "Glow CRM", "crm", "glow", 90, "", "open_aesthetics"),
    ("crm_lumi", "Lumière CRM", "crm", "lumi", 90, "", "open_aesthetics"),
    ("crm_vera", "Vera CRM", "crm", "vera", 90, "", "open_aesthetics"),
    ("wecom_group", "Group WeCom", "wecom", None, 70, "", ""),
    ("oa_glow", "Glow WeChat official account", "wechat_oa", "glow", 40, "wx_glow_oa", "open_aesthetics"),
    ("mp_lumi", "Lumière WeChat mini-program", "wechat_mp", "lumi", 40, "wx_lumi_mp", "open_aesthetics"),
    ("shop_tmall", "Group Tmall shop", "ecommerce", None, 30, "", ""),
]
CHUNK = 5000
MAX_MEMBERS = 50_000
STREETS = ("南京西路", "淮海中路", "建国路", "天河路", "文三路", "春熙路")


def _say(stdout: TextIO | None, text: str) -> None:
    if stdout is not None:
        stdout.write(text + "\n")


def _person_type() -> SubjectType:
    existing = SubjectType.objects.filter(code=PERSON_TYPE["code"]).first()
    if existing and all(getattr(existing, k) == v for k, v in PERSON_TYPE.items()):
        return existing
    return subject_type_save(actor=None, data=PERSON_TYPE, instance=existing)


def _sources(person: SubjectType) -> None:
    brands = dict(Subject.objects.filter(subject_type__code="brand", source="hq").values_list("external_id", "id"))
    for code, name, kind, brand, trust, app, platform in SOURCES:
        wanted = {
            "code": code,
            "name": name,
            "kind": kind,
            "brand_id": brands.get(brand) if brand else None,
            "trust_rank": trust,
            "app_id": app,
            "open_platform_id": platform,
            "subject_type_id": person.id,
        }
        existing = SourceSystem.objects.filter(code=code).first()
        if existing is None or any(getattr(existing, k) != v for k, v in wanted.items()):
            config_save(actor=None, model=SourceSystem, data=wanted, instance=existing)


def _records_of(member: tuple) -> list[dict]:
    """What each system knows of one demo member (one CRM record of the subjects demo)."""
    _id, source, external_id, attributes = member
    brand = source.removeprefix("crm_")
    n = int(external_id[1:])
    person = n - 9 if n % 10 == 0 else n  # the 10th record of a group is person 1 of the group again
    name, phone = attributes.get("name"), attributes.get("phone")
    crm = {k: attributes[k] for k in ("name", "phone", "birth_date", "gender") if k in attributes}
    crm["member_id"] = external_id
    records = []
    if attributes.get("wecom_external_userid"):
        crm["external_userid"] = attributes["wecom_external_userid"]
        records.append(
            {
                "source": "wecom_group",
                "external_id": attributes["wecom_external_userid"],
                "raw": {"external_userid": attributes["wecom_external_userid"], "name": name},
            }
        )
    if person % 3 == 0:
        crm["unionid"] = f"oU{person:07d}"
        records.append(
            {
                "source": "oa_glow",
                "external_id": f"oG{person:07d}",
                "raw": {"openid": f"oG{person:07d}", "unionid": f"oU{person:07d}"},
            }
        )
    if person % 5 == 0:
        records.append(
            {
                "source": "mp_lumi",
                "external_id": f"oL{person:07d}",
                "raw": {"openid": f"oL{person:07d}", "unionid": f"oU{person:07d}"},
            }
        )
    if person % 4 == 0 and n == person:
        address = f"上海市{STREETS[person % len(STREETS)]}{person % 900 + 1}号"
        records.append(
            {
                "source": "shop_tmall",
                "external_id": f"T{person:07d}",
                "raw": {"name": name, "phone": phone, "address": address, "order_id": f"TM{person:09d}"},
            }
        )
    records.append({"source": f"crm_{brand}", "external_id": external_id, "raw": crm})
    return [r for r in records if r["source"] in {s[0] for s in SOURCES}]


def _special_cases() -> list[dict]:
    junk = [
        {
            "source": "shop_tmall",
            "external_id": f"JUNK{i}",
            "raw": {"name": "测试", "phone": "13800138000", "order_id": f"TEST{i}"},
        }
        for i in range(3)
    ]
    family = [
        {
            "source": "crm_glow",
            "external_id": f"FAM{i}",
            "raw": {"name": n, "phone": "13911112222", "member_id": f"FAM{i}"},
        }
        for i, n in enumerate(["陈伟", "陈芳", "陈静", "陈明"])
    ]
    return junk + family


def load_demo(*, stdout: TextIO | None = None) -> None:
    """Build the demo identities (idempotent: a second run writes nothing)."""
    stdout = stdout if stdout is not None else sys.stdout
    install_defaults()
    person = _person_type()
    _sources(person)
    members = (
        Subject.objects.filter(subject_type__code="member", source__in=["crm_glow", "crm_lumi", "crm_vera"])
        .order_by("id")
        .values_list("id", "source", "external_id", "attributes")[:MAX_MEMBERS]
    )
    items: list[dict] = _special_cases()
    written = 0
    for member in members.iterator(chunk_size=CHUNK):
        items += _records_of(member)
        if len(items) >= CHUNK:
            written += _push(items)
            items = []
    written += _push(items)
    result = resolve_all()
    _say(
        stdout,
        f"OneID demo: {written:,} source records written; batch resolution: {result.records:,} records,"
        f" {result.groups:,} OneIDs, {result.created:,} new, {result.moved:,} records moved",
    )


def _push(items: list[dict]) -> int:
    if not items:
        return 0
    seen: dict[tuple[str, str], dict] = {}
    for item in items:
        seen.setdefault((item["source"], item["external_id"]), item)
    result = source_record_bulk_upsert(actor=None, items=list(seen.values()), resolve=False)
    return result.counts["created"] + result.counts["updated"]
