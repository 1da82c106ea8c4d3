"""Reads: a OneID with its records, identifiers, links and history; lookup by identifier.

Each identifier says *why* it belongs: the record that holds it, and whether and
with whom it links (``link``), or why it does not (``blocked``, ``over_limit``,
``composite part``). A fixed number of queries whatever the OneID's size.

Given a ``viewer`` (the acting user), every read is scoped (``identity.access``): only the
viewer's source records, their identifiers, the merges made of them, and a golden record
recomputed from them when the viewer does not see all of the person's records. Without a
viewer (internal callers: tasks, the tag engine) everything is read.
"""

from __future__ import annotations

from django.db.models import Count, F

from common.errors import ServiceError
from subjects import pii

from .extract import Rules, SourceScope, link_key, load_rules
from .golden import RecordView, golden_record
from .models import (
    Identifier,
    IdentifierStatus,
    IdentifierType,
    ManualLink,
    MergeEvent,
    OneId,
    RecordAssignment,
    SourceRecord,
    SourceSystem,
    SurvivorshipRule,
)
from .normalize import NORMALIZERS, NormalizeError
from .resolution.region import rule_label, value_label
from .scoping import oneid_filter, record_brand_allowed, sees_everything, visible_records

MAX_RECORDS = 1000
# Evidence keys that explain a merge or suggestion without personal data (rules, record and OneID ids,
# scores); every other value in evidence (identifier values, shared values, free-text reasons) is masked.
EVIDENCE_SAFE_KEYS = frozenset(
    {"rule", "records", "records_a", "records_b", "oneids", "do_not_link", "removed_do_not_link"}
    | {"name_score", "address_score", "score"}
)


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


RECORD_FIELDS = (
    "id",
    "source__code",
    "source__trust_rank",
    "brand_id",
    "external_id",
    "raw",
    "created_at",
    "updated_at",
)


def oneid_detail(
    subject_id: int, rules: Rules | None = None, *, include_records: bool = True, viewer=None, masked: bool = False
) -> dict:
    """A OneID with its golden record and history; with ``include_records`` also its source records (raw
    fields), identifiers and links. The caller decides: raw records and identifier values need
    ``identity.view_sourcerecord``, the golden record only ``identity.view_oneid``.

    With a ``viewer`` a OneID out of their scope is "not found", and only the records they may see
    (and what is made of them) are shown. ``partial`` says that some records are left out; the
    golden record is then recomputed from the visible records by the same survivorship rules, so
    brand A never sees an attribute that only brand B's record holds. ``masked`` replaces every
    personal value (see :func:`mask_detail`)."""
    queryset = OneId.objects.select_related("subject", "subject__subject_type").filter(subject_id=subject_id)
    if viewer is not None and not sees_everything(viewer):
        queryset = queryset.filter(oneid_filter(viewer, "subject"))
    oneid = queryset.first()
    if oneid is None:
        raise ServiceError.single("id", f"No OneID {subject_id}.", "not_found")
    scoped = viewer is not None and not sees_everything(viewer)
    if not include_records and not scoped:
        return _masked(_summary(oneid), oneid, masked)
    rows = list(
        SourceRecord.objects.filter(assignment__oneid=subject_id).order_by("id").values(*RECORD_FIELDS)[:MAX_RECORDS]
    )
    records = [r for r in rows if record_brand_allowed(viewer, r["brand_id"])] if scoped else rows
    partial = len(records) < len(rows)
    summary = _summary(oneid, viewer=viewer if partial else None)
    if partial:
        summary["attributes"], summary["display_name"] = _golden_of(oneid, records)
    summary["partial"] = partial
    if not include_records:
        return _masked(summary, oneid, masked)
    rules = rules or load_rules()
    record_ids = [r["id"] for r in records]
    identifiers, links = _identifier_rows(record_ids, rules)
    manual = ManualLink.objects.filter(record_a_id__in=record_ids, record_b_id__in=record_ids)
    links += [
        {"rule": "manual", "value": "", "records": sorted([a, b])}
        for a, b in manual.values_list("record_a_id", "record_b_id")
    ]
    detail = {
        **summary,
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
    return _masked(detail, oneid, masked)


def _masked(detail: dict, oneid: OneId, masked: bool) -> dict:
    return mask_detail(detail, oneid.subject.subject_type) if masked else detail


def mask_evidence(evidence: object) -> object:
    """Merge or suggestion evidence with every value masked except rules, ids and scores: they
    explain the decision ("identifier:email linked records 3 and 7") without the personal data."""
    if isinstance(evidence, list):
        return [mask_evidence(item) for item in evidence]
    if isinstance(evidence, dict):
        return {k: v if k in EVIDENCE_SAFE_KEYS else mask_evidence(v) for k, v in evidence.items()}
    return pii.mask(evidence)


def mask_raw(raw: object) -> object:
    """A source record's raw fields, every value masked: what a source sends is personal data as a
    whole (field names stay, so an operator still sees which fields a source fills)."""
    if not isinstance(raw, dict):
        return pii.mask(raw)
    return {k: pii.mask(v) for k, v in raw.items()}


def mask_detail(detail: dict, subject_type) -> dict:
    """A OneID detail with every personal value masked: golden name and PII attributes (the subject
    rules of ``subjects.pii``), raw fields and external ids of records, identifier and link values,
    evidence values of the history. Total masking: nothing partial survives."""
    out = pii.mask_subject_payload(detail, subject_type)
    out["history"] = [{**e, "evidence": mask_evidence(e["evidence"])} for e in detail.get("history", [])]
    if "records" in detail:
        out["records"] = [
            {**r, "raw": mask_raw(r["raw"]), "external_id": pii.mask(r["external_id"])} for r in detail["records"]
        ]
        out["identifiers"] = [{**i, "value": pii.mask(i["value"])} for i in detail["identifiers"]]
        out["links"] = [{**link, "value": pii.mask(link["value"])} for link in detail["links"]]
    return out


def oneid_rows(oneids: list[OneId], *, viewer=None, masked: bool = False) -> list[dict]:
    """A page of the OneID list. For a scoped viewer, the OneIDs holding records they may not see
    show the name of the golden record of their visible records (one query for the page's records,
    whatever the page size); display names of people are masked when ``masked``."""
    partial: dict[int, list[dict]] = {}
    if viewer is not None and not sees_everything(viewer) and oneids:
        rows = SourceRecord.objects.filter(assignment__oneid__in=[o.subject_id for o in oneids]).values(
            *RECORD_FIELDS, oneid_id=F("assignment__oneid")
        )
        by_oneid: dict[int, list[dict]] = {}
        for row in rows.order_by("oneid_id", "id"):
            by_oneid.setdefault(row["oneid_id"], []).append(row)
        for oneid_id, records in by_oneid.items():
            visible = [r for r in records if record_brand_allowed(viewer, r["brand_id"])]
            if len(visible) < len(records):
                partial[oneid_id] = visible
    out = []
    by_id = {o.subject_id: o for o in oneids}
    strategies = dict(SurvivorshipRule.objects.values_list("attribute", "strategy")) if partial else None
    for oneid in oneids:
        subject = oneid.subject
        name = subject.display_name
        if oneid.subject_id in partial:
            name = _golden_of(by_id[oneid.subject_id], partial[oneid.subject_id], strategies)[1]
        if masked and pii.is_pii_type(subject.subject_type):
            name = pii.mask(name)
        out.append(
            {
                "id": oneid.subject_id,
                "subject_type": subject.subject_type.code,
                "display_name": name,
                "status": oneid.status,
                "merged_into": oneid.merged_into_id,
                "partial": oneid.subject_id in partial,
                "created_at": oneid.created_at,
                "updated_at": oneid.updated_at,
            }
        )
    return out


def _golden_of(oneid: OneId, records: list[dict], strategies: dict | None = None) -> tuple[dict, str]:
    """The golden record of ``records`` alone (a viewer's part of a person), by the survivorship rules."""
    views = [
        RecordView(r["id"], r["source__trust_rank"], r["created_at"].timestamp(), r["updated_at"].timestamp(), r["raw"])
        for r in records
    ]
    if not views:
        return {}, ""
    if strategies is None:
        strategies = dict(SurvivorshipRule.objects.values_list("attribute", "strategy"))
    return golden_record(views, oneid.subject.subject_type.attribute_schema or {}, strategies)


def _summary(oneid: OneId, *, viewer=None) -> dict:
    """The part of a OneID's detail that needs only ``view_oneid``: golden record, state, history.

    With a ``viewer`` who does not see all the person's records, a merge or split is shown only when
    every record it names is visible to them (one query): the event itself would otherwise tell
    that, and with what, another brand's record was joined."""
    history = list(
        MergeEvent.objects.filter(oneid_id=oneid.subject_id).values(
            "id", "kind", "rule", "evidence", "others", "records", "actor_id", "correlation_id", "created_at"
        )[:100]
    )
    if viewer is not None and history:
        named = {r for event in history for r in event["records"] if isinstance(r, int)}
        visible = set(visible_records(viewer).filter(id__in=named).values_list("id", flat=True))
        history = [e for e in history if set(e["records"]) <= visible]
    subject = oneid.subject
    return {
        "id": subject.id,
        "subject_type": subject.subject_type.code,
        "display_name": subject.display_name,
        "attributes": subject.attributes,
        "status": oneid.status,
        "merged_into": oneid.merged_into_id,
        "history": history,
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


def oneid_lookup(
    *,
    type_code: str,
    value: str,
    scope: str | None = None,
    include_records: bool = True,
    viewer=None,
    masked: bool = False,
) -> list[dict]:
    """OneIDs holding ``value`` of identifier type ``type_code`` (after normalization).

    With a ``viewer``, only values held by records they may see count: brand A looking up a
    phone that only brand B's record holds finds nobody."""
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
    holders = SourceRecord.objects.filter(id__in=found.values("record_id"), assignment__isnull=False)
    if viewer is not None:
        holders = visible_records(viewer, holders)
    oneids = sorted(set(holders.values_list("assignment__oneid", flat=True)))[:20]
    rules = load_rules() if include_records else None
    return [oneid_detail(o, rules, include_records=include_records, viewer=viewer, masked=masked) for o in oneids]


def oneid_lookup_many(
    keys: list[tuple[str, str, str | None]],
) -> dict[tuple[str, str, str | None], list[dict] | ServiceError]:
    """``oneid_lookup`` for many ``(type_code, value, scope)`` keys at once, set-based (event attribution).

    Per key: the OneIDs holding the value, ``[{"id", "status", "records"}]`` (at most 20, by id;
    ``records``: that OneID's records holding the value, by id — the event's provenance), or the
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
    oneid_of = dict(RecordAssignment.objects.filter(record_id__in=list(holders)).values_list("record_id", "oneid_id"))
    status = dict(OneId.objects.filter(subject_id__in=set(oneid_of.values())).values_list("subject_id", "status"))
    per_key: dict = {}
    for record_id, oneid in oneid_of.items():
        for key in holders[record_id]:
            per_key.setdefault(key, {}).setdefault(oneid, []).append(record_id)
    for key, oneids in per_key.items():
        answers[key] = [{"id": o, "status": status.get(o), "records": sorted(oneids[o])} for o in sorted(oneids)[:20]]
    return answers


def record_source_codes(record_ids: list[int]) -> dict[int, str]:
    """The source system code of each record: how a split gives back events that name no record."""
    return dict(SourceRecord.objects.filter(id__in=list(record_ids)).values_list("id", "source__code"))
