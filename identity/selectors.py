"""Reads: a OneID with its records, identifiers, links and history; lookup by identifier.

Each identifier says *why* it belongs: the record that holds it, and whether and
with whom it links (``link``), or why it does not (``blocked``, ``over_limit``,
``composite part``). A fixed number of queries whatever the OneID's size.
"""

from __future__ import annotations

from django.db.models import Count

from common.errors import ServiceError

from .extract import Rules, SourceScope, link_key, load_rules
from .models import (
    Identifier,
    IdentifierStatus,
    IdentifierType,
    ManualLink,
    MergeEvent,
    OneId,
    SourceRecord,
    SourceSystem,
)
from .normalize import NORMALIZERS, NormalizeError
from .resolution.region import rule_label, value_label

MAX_RECORDS = 1000


def _identifier_rows(record_ids: list[int], rules: Rules) -> tuple[list[dict], list[dict]]:
    rows = list(
        Identifier.objects.filter(record_id__in=record_ids).values_list(
            "id", "record_id", "identifier_type_id", "composite_key_id", "scope", "value", "key", "status"
        )
    )
    keys = [r[6] for r in rows if r[7] == IdentifierStatus.LINK]
    holders = dict(
        Identifier.objects.filter(key__in=keys, status=IdentifierStatus.LINK)
        .values("key")
        .annotate(n=Count("id"))
        .values_list("key", "n")
    )
    inside: dict[int, list[int]] = {}
    for _, record, *_rest, key, status in rows:
        if status == IdentifierStatus.LINK:
            inside.setdefault(key, []).append(record)
    identifiers, links = [], []
    for id_, record, type_id, composite_id, scope, value, key, status in rows:
        rule = rule_label(rules, type_id, composite_id)
        limit = rules.shared_limit(type_id, composite_id)
        count = holders.get(key, 0)
        if status == IdentifierStatus.BLOCKED:
            why = "blocked value: never links"
        elif status == IdentifierStatus.PART:
            why = "links only inside a composite key"
        elif limit is not None and count > limit:
            status, why = "over_limit", f"held by {count} records, over the limit of {limit}: links nobody"
        elif len(inside.get(key, [])) > 1:
            why = f"links records {sorted(inside[key])}"
        else:
            why = "held by this record only"
        identifiers.append(
            {
                "id": id_,
                "record": record,
                "rule": rule,
                "scope": scope,
                "value": value_label(value),
                "status": status,
                "shared_by": count,
                "why": why,
            }
        )
    seen = set()
    for _id, _record, type_id, composite_id, _scope, value, key, status in rows:
        limit = rules.shared_limit(type_id, composite_id)
        if status != IdentifierStatus.LINK or key in seen or len(inside.get(key, [])) < 2:
            continue
        if limit is not None and holders.get(key, 0) > limit:
            continue
        seen.add(key)
        links.append(
            {
                "rule": rule_label(rules, type_id, composite_id),
                "value": value_label(value),
                "records": sorted(inside[key]),
            }
        )
    return identifiers, links


def oneid_detail(subject_id: int, rules: Rules | None = None, *, include_records: bool = True) -> dict:
    """A OneID with its golden record and history; with ``include_records`` also its source records (raw
    fields), identifiers and links. The caller decides: raw records and identifier values need
    ``identity.view_sourcerecord``, the golden record only ``identity.view_oneid``."""
    oneid = OneId.objects.select_related("subject", "subject__subject_type").filter(subject_id=subject_id).first()
    if oneid is None:
        raise ServiceError.single("id", f"No OneID {subject_id}.", "not_found")
    if not include_records:
        return _summary(oneid)
    rules = rules or load_rules()
    records = list(
        SourceRecord.objects.filter(oneid_id=subject_id)
        .order_by("id")
        .values("id", "source__code", "brand_id", "external_id", "raw", "created_at", "updated_at")[:MAX_RECORDS]
    )
    record_ids = [r["id"] for r in records]
    identifiers, links = _identifier_rows(record_ids, rules)
    manual = ManualLink.objects.filter(record_a_id__in=record_ids, record_b_id__in=record_ids)
    links += [
        {"rule": "manual", "value": "", "records": sorted([a, b])}
        for a, b in manual.values_list("record_a_id", "record_b_id")
    ]
    return {
        **_summary(oneid),
        "records": [
            {
                "id": r["id"],
                "source": r["source__code"],
                "brand": r["brand_id"],
                "external_id": r["external_id"],
                "raw": r["raw"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
            }
            for r in records
        ],
        "identifiers": identifiers,
        "links": links,
    }


def _summary(oneid: OneId) -> dict:
    """The part of a OneID's detail that needs only ``view_oneid``: golden record, state, history."""
    history = MergeEvent.objects.filter(oneid_id=oneid.subject_id).values(
        "id", "kind", "rule", "evidence", "others", "records", "actor_id", "correlation_id", "created_at"
    )[:100]
    subject = oneid.subject
    return {
        "id": subject.id,
        "subject_type": subject.subject_type.code,
        "display_name": subject.display_name,
        "attributes": subject.attributes,
        "status": oneid.status,
        "merged_into": oneid.merged_into_id,
        "history": list(history),
    }


def _candidate_keys(identifier_type: IdentifierType, spellings: set[str], scope: str | None) -> list[int]:
    """The graph keys the value can have: one per OneID subject type and possible scope.

    Identifiers are found by their key index (there is no index on the bare value:
    it would cost every ingest for the sake of this lookup)."""
    sources = [SourceScope(s.code, s.subject_type_id, s.app_id, s.open_platform_id) for s in SourceSystem.objects.all()]
    scopes = {(s.subject_type_id, s.scope_for(identifier_type.scoping)) for s in sources}
    return sorted(
        {
            link_key(type_id, f"t{identifier_type.id}", one_scope, value)
            for type_id, one_scope in scopes
            if scope is None or one_scope == scope
            for value in spellings
        }
    )


def oneid_lookup(*, type_code: str, value: str, scope: str | None = None, include_records: bool = True) -> list[dict]:
    """OneIDs holding ``value`` of identifier type ``type_code`` (after normalization)."""
    identifier_type = IdentifierType.objects.filter(code=type_code).first()
    if identifier_type is None:
        raise ServiceError.single("type", f"No identifier type {type_code!r}.", "not_found")
    normalizer = NORMALIZERS[identifier_type.normalizer]
    try:
        cleaned = normalizer.clean(value)
        spellings = {cleaned, normalizer.finish(cleaned)}
    except NormalizeError as exc:
        raise ServiceError.single("value", f"{type_code} {exc}") from None
    found = Identifier.objects.filter(key__in=_candidate_keys(identifier_type, spellings, scope), value__in=spellings)
    oneids = sorted(
        set(
            SourceRecord.objects.filter(id__in=found.values("record_id"))
            .exclude(oneid=None)
            .values_list("oneid_id", flat=True)
        )
    )[:20]
    rules = load_rules() if include_records else None
    return [oneid_detail(o, rules, include_records=include_records) for o in oneids]


def oneid_lookup_many(
    keys: list[tuple[str, str, str | None]],
) -> dict[tuple[str, str, str | None], list[dict] | ServiceError]:
    """``oneid_lookup`` for many ``(type_code, value, scope)`` keys at once, set-based (event attribution).

    Per key: the OneIDs holding the value, ``[{"id", "status"}]`` (at most 20, by id), or the
    ``ServiceError`` ``oneid_lookup`` would raise (unknown type, a value that does not
    normalize). Four queries whatever the number of keys, instead of a handful per key.
    """
    from .models import OneId

    types = {t.code: t for t in IdentifierType.objects.filter(code__in={k[0] for k in keys})}
    sources = [SourceScope(s.code, s.subject_type_id, s.app_id, s.open_platform_id) for s in SourceSystem.objects.all()]
    answers: dict = {}
    wanted: dict[tuple[int, str], set] = {}  # (graph key, spelling) → the lookup keys asking for it
    for key in keys:
        type_code, value, scope = key
        identifier_type = types.get(type_code)
        if identifier_type is None:
            answers[key] = ServiceError.single("type", f"No identifier type {type_code!r}.", "not_found")
            continue
        normalizer = NORMALIZERS[identifier_type.normalizer]
        try:
            cleaned = normalizer.clean(value)
            spellings = {cleaned, normalizer.finish(cleaned)}
        except NormalizeError as exc:
            answers[key] = ServiceError.single("value", f"{type_code} {exc}")
            continue
        answers[key] = []
        scopes = {(s.subject_type_id, s.scope_for(identifier_type.scoping)) for s in sources}
        for type_id, one_scope in scopes:
            if scope is not None and one_scope != scope:
                continue
            for spelling in spellings:
                wanted.setdefault(
                    (link_key(type_id, f"t{identifier_type.id}", one_scope, spelling), spelling), set()
                ).add(key)
    if not wanted:
        return answers
    found = Identifier.objects.filter(key__in={k for k, _ in wanted}, value__in={v for _, v in wanted})
    holders: dict[int, set] = {}
    for graph_key, value, record_id in found.values_list("key", "value", "record_id"):
        for key in wanted.get((graph_key, value), ()):
            holders.setdefault(record_id, set()).add(key)
    oneid_of = dict(SourceRecord.objects.filter(id__in=list(holders)).exclude(oneid=None).values_list("id", "oneid_id"))
    status = dict(OneId.objects.filter(subject_id__in=set(oneid_of.values())).values_list("subject_id", "status"))
    per_key: dict = {}
    for record_id, oneid in oneid_of.items():
        for key in holders[record_id]:
            per_key.setdefault(key, set()).add(oneid)
    for key, oneids in per_key.items():
        answers[key] = [{"id": o, "status": status.get(o)} for o in sorted(oneids)[:20]]
    return answers
