"""Business lines, brands and the region tree: the scope subjects every scenario shares."""

from __future__ import annotations

HQ = "hq"

LINES = {"aesthetics": "Medical aesthetics", "nutrition": "Health food and nutrition", "retail": "Retail chain"}
BRANDS = {
    "glow": ("Glow Aesthetics", "aesthetics"),
    "lumi": ("Lumière Clinics", "aesthetics"),
    "vera": ("Vera Skin", "aesthetics"),
    "nutrifit": ("NutriFit", "nutrition"),
    "urbanmart": ("UrbanMart", "retail"),
}
AESTHETICS_BRANDS = ("glow", "lumi", "vera")
COUNTRY = ("CN", "中国 China", "100000")
# external_id, name, level, administrative division code
LEAF_REGIONS = (
    ("SH", "上海 Shanghai", "city", "310000"),
    ("BJ", "北京 Beijing", "city", "110000"),
    ("GD", "广东 Guangdong", "province", "440000"),
    ("ZJ", "浙江 Zhejiang", "province", "330000"),
    ("SC", "四川 Sichuan", "province", "510000"),
    ("JS", "江苏 Jiangsu", "province", "320000"),
)


def hq(type_code: str, external_id: str) -> dict:
    """A reference by key to a subject of the HQ master data."""
    return {"source": HQ, "external_id": external_id, "type": type_code}


def scope_items() -> list[dict]:
    """One batch: the batch's own references (brand → line, region → parent) resolve in order."""
    items = [{"type": "business_line", "source": HQ, "external_id": c, "display_name": n} for c, n in LINES.items()]
    items += [
        {
            "type": "brand",
            "source": HQ,
            "external_id": code,
            "display_name": name,
            "business_line": hq("business_line", line),
        }
        for code, (name, line) in BRANDS.items()
    ]
    items.append(
        {
            "type": "region",
            "source": HQ,
            "external_id": COUNTRY[0],
            "display_name": COUNTRY[1],
            "attributes": {"level": "country", "admin_code": COUNTRY[2]},
        }
    )
    items += [
        {
            "type": "region",
            "source": HQ,
            "external_id": ext,
            "display_name": name,
            "attributes": {"level": level, "admin_code": code},
            "parent": hq("region", COUNTRY[0]),
        }
        for ext, name, level, code in LEAF_REGIONS
    ]
    return items
