"""The identifier types, composite keys and blocked values Tagweave ships with.

Installed by a data migration and by :func:`install_defaults` (idempotent: it only
adds what is missing, so an operator's edits survive). Phone numbers link only
together with a name by default: a family or a store shares one phone, and a
phone alone merging people is the most common wrong merge.
"""

from __future__ import annotations

IDENTIFIER_TYPES = [
    # code, name, normalizer, fields, linking, priority, max_per_oneid, max_shared_records, scoping
    ("wechat_unionid", "WeChat unionid", "token", ["unionid"], "strong", 10, 1, None, "open_platform"),
    ("wechat_openid", "WeChat openid", "token", ["openid"], "strong", 20, None, None, "app"),
    ("wecom_external_userid", "WeCom external_userid", "token", ["external_userid"], "strong", 20, None, None, "none"),
    ("crm_member_id", "CRM member id", "token", ["member_id"], "strong", 30, None, None, "source"),
    ("email", "E-mail", "email", ["email"], "strong", 40, None, 5, "none"),
    ("phone", "Phone", "phone", ["phone", "mobile"], "composite", 50, None, None, "none"),
    ("name", "Name", "text", ["name"], "composite", 60, None, None, "none"),
    ("order_id", "Order id", "token", ["order_id"], "composite", 70, None, None, "source"),
    ("address", "Shipping address", "text", ["address", "shipping_address"], "composite", 80, None, None, "none"),
]
COMPOSITE_KEYS = [
    # code, name, parts, priority, max_shared_records
    ("name_phone", "Name + phone", ["name", "phone"], 45, 3),
    ("address_order", "Shipping address + order id", ["address", "order_id"], 75, 3),
]
BLOCKED = [
    # identifier type code (None: every type), exact value, pattern, reason
    ("phone", "13800138000", "", "the textbook example number"),
    ("phone", "", r"\+?(\d)\1{6,}", "all the same digit (00000000000, 11111111111)"),
    ("phone", "", r"\+?0+", "all zeros"),
    ("email", "", r"(test|demo|noreply|no-reply)[^@]*@.*", "test and no-reply mailboxes"),
    ("email", "", r".*@(example|test)\.(com|org|net)", "reserved example domains"),
    (None, "null", "", "placeholder"),
    (None, "none", "", "placeholder"),
    (None, "n/a", "", "placeholder"),
    (None, "na", "", "placeholder"),
    (None, "nil", "", "placeholder"),
    (None, "undefined", "", "placeholder"),
    (None, "unknown", "", "placeholder"),
    (None, "-", "", "placeholder"),
    (None, "", r"test[_\- ]?(user|account|acct)?[_\-]?\d*", "test accounts"),
]


def install_defaults(apps=None) -> None:
    """Add the shipped rules that are missing (by code / by value); never overwrite."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    IdentifierType = apps.get_model("identity", "IdentifierType")
    CompositeKey = apps.get_model("identity", "CompositeKey")
    BlockedValue = apps.get_model("identity", "BlockedValue")
    for code, name, normalizer, fields, linking, priority, per_oneid, shared, scoping in IDENTIFIER_TYPES:
        IdentifierType.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "normalizer": normalizer,
                "fields": fields,
                "linking": linking,
                "priority": priority,
                "max_per_oneid": per_oneid,
                "max_shared_records": shared,
                "scoping": scoping,
            },
        )
    for code, name, parts, priority, shared in COMPOSITE_KEYS:
        CompositeKey.objects.get_or_create(
            code=code, defaults={"name": name, "parts": parts, "priority": priority, "max_shared_records": shared}
        )
    types = {t.code: t for t in IdentifierType.objects.all()}
    for type_code, value, pattern, reason in BLOCKED:
        BlockedValue.objects.get_or_create(
            identifier_type=types.get(type_code) if type_code else None,
            value=value,
            pattern=pattern,
            defaults={"reason": reason},
        )
