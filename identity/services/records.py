"""Ingest of source records: validate and normalize the batch, write it set-based, resolve it.

Idempotent by (source, external id): a record whose raw fields did not change
(same content hash) writes nothing and is not re-resolved; a changed one
replaces its earlier version and its identifiers. All or nothing: any malformed
item or value rejects the batch with errors naming index and field.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b

import orjson
import psycopg
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from audit.services import bulk_write_record
from common.errors import ItemError, ServiceError
from subjects.schemas import valid_text

from ..extract import Extracted, Rules, SourceScope, extract, load_rules
from ..models import Identifier, RecordAssignment, SourceSystem
from ..resolution.incremental import resolve_records
from ..resolution.region import value_label

ITEM_FIELDS = {"source", "external_id", "raw"}
MAX_RAW_BYTES = 64 * 1024


@dataclass
class RecordResult:
    index: int
    id: int
    status: str  # created | updated | unchanged
    oneid: int | None = None
    warnings: list[dict] = field(default_factory=list)


@dataclass
class RecordsResult:
    results: list[RecordResult]
    correlation_id: uuid.UUID
    counts: dict[str, int]
    merges: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    index: int
    source: SourceSystem
    external_id: str
    raw: dict
    content_hash: str
    identifiers: list[Extracted]
    encoded: bytes = b""  # raw as canonical JSON (sorted keys): hashed, size-checked and copied once
    notes: list[dict] = field(default_factory=list)  # extraction warnings (composite combinations capped)


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored (and JSON-encoded): a lone surrogate cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode(raw: dict) -> tuple[bytes, str | None]:
    """Canonical JSON of ``raw``, or why every backend could not store it."""
    try:
        encoded = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        return b"", f"cannot be stored as JSON: {exc}"
    if b"\\u0000" in encoded:
        return b"", "text must not contain NUL characters (\\u0000)"
    if len(encoded) > MAX_RAW_BYTES:
        return b"", f"Must encode to at most {MAX_RAW_BYTES} bytes."
    return encoded, None


def source_record_bulk_upsert(
    *,
    actor,
    items: Sequence[Mapping],
    max_items: int | None = None,
    resolve: bool = True,
    correlation_id: uuid.UUID | None = None,
    rules: Rules | None = None,
) -> RecordsResult:
    """Create or update source records by (source, external_id); resolve what changed.

    ``resolve=False`` only stores records and identifiers (a bulk load followed by
    :func:`identity.resolution.batch.resolve_all`).
    """
    if max_items is not None and len(items) > max_items:
        raise ServiceError.single("items", f"A batch holds at most {max_items} items; got {len(items)}.", "too_many")
    rules = rules or load_rules()
    errors: list[ItemError] = []
    with _collector_paused(len(items) > SMALL_BATCH):
        parsed = _parse(items, rules, errors)
    if errors:
        raise ServiceError(f"{len({e.index for e in errors})} of {len(items)} items are invalid.", errors)
    correlation_id = correlation_id or uuid.uuid4()
    with transaction.atomic():
        with _collector_paused(len(items) > SMALL_BATCH):
            results = _write_records(parsed)
            changed = [(item, r) for item, r in zip(parsed, results, strict=True) if r.status != "unchanged"]
            removed = _replace_identifiers(changed, rules)
        counts = {s: sum(1 for r in results if r.status == s) for s in ("created", "updated", "unchanged")}
        bulk_write_record(
            actor=actor,
            action="identity.source_records_upserted",
            object_type="identity.sourcerecord",
            counts=counts,
            ids=sorted(r.id for _, r in changed),
            correlation_id=correlation_id,
        )
        merges: list[int] = []
        assigned: dict[int, int] = {}
        if resolve and changed:
            outcome = resolve_records(
                record_ids=[r.id for _, r in changed],
                actor=actor,
                changed_keys=removed,
                correlation_id=correlation_id,
                rules=rules,
            )
            merges, assigned = outcome.merges, outcome.assignment
        if resolve:
            missing = [r.id for r in results if r.id not in assigned]
            if missing:
                assigned.update(
                    RecordAssignment.objects.filter(record_id__in=missing).values_list("record_id", "oneid_id")
                )
            for result in results:
                result.oneid = assigned.get(result.id)
    _warn(parsed, results, rules, over_limit=_over_limit(parsed, rules) if resolve else {})
    return RecordsResult(results, correlation_id, counts, merges)


@contextmanager
def _collector_paused(pause: bool):
    """Pause the cyclic garbage collector while a large batch is parsed and written.

    Parsing allocates a few tuples, dicts and strings per identifier and frees nothing, so
    every few hundred allocations a generation-0 pass runs and, with a large batch alive,
    the older generations are walked again and again: ~11 µs a record of a 10,000-item call
    (a quarter of ingest's Python). None of these objects forms a cycle; reference counting
    frees them, and the collector resumes afterwards (if it was on).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _parse(items: Sequence[Mapping], rules: Rules, errors: list[ItemError]) -> list[_Item]:
    codes = {i.get("source") for i in items if isinstance(i, Mapping) and isinstance(i.get("source"), str)}
    sources = {s.code: s for s in SourceSystem.objects.filter(code__in=codes)}
    scopes = {c: SourceScope(s.code, s.subject_type_id, s.app_id, s.open_platform_id) for c, s in sources.items()}
    parsed: list[_Item] = []
    seen: dict[tuple[int, str], int] = {}
    for index, raw_item in enumerate(items):
        item = _parse_valid_item(index, raw_item, sources, scopes, rules)
        if item is not None:
            first = seen.setdefault((item.source.id, item.external_id), index)
            if first == index:
                parsed.append(item)
                continue
        before = len(errors)
        if not isinstance(raw_item, Mapping):
            errors.append(ItemError(index, "", "Each item must be a JSON object."))
            continue
        for name in sorted(set(raw_item) - ITEM_FIELDS):
            errors.append(ItemError(index, name, "Unknown field.", "unknown_field"))
        source = sources.get(raw_item.get("source")) if isinstance(raw_item.get("source"), str) else None
        if source is None:
            errors.append(ItemError(index, "source", "No source system with this code.", "not_found"))
        external_id = raw_item.get("external_id")
        if not valid_text(external_id, 128):
            errors.append(ItemError(index, "external_id", "Must be a non-blank string of at most 128 characters."))
        elif not _utf8(external_id):
            errors.append(ItemError(index, "external_id", "Must be valid Unicode text (no lone surrogates)."))
        raw = raw_item.get("raw", {})
        encoded = b""
        if not isinstance(raw, dict):
            errors.append(ItemError(index, "raw", "Must be a JSON object."))
        else:
            encoded, problem = _encode(raw)
            if problem:
                errors.append(ItemError(index, "raw", problem))
        if len(errors) > before:
            continue
        notes: list[dict] = []
        identifiers, problems = extract(raw, scopes[source.code], rules, notes)
        for where, message in problems:
            errors.append(ItemError(index, where, message, "invalid_identifier"))
        first = seen.setdefault((source.id, external_id), index)
        if first != index:
            errors.append(ItemError(index, "external_id", f"Duplicate of item {first} (same source and external_id)."))
        if len(errors) == before:
            digest = blake2b(encoded, digest_size=16).hexdigest()
            parsed.append(_Item(index, source, external_id, raw, digest, identifiers, encoded, notes))
    return parsed


def _parse_valid_item(index: int, raw_item: object, sources: dict, scopes: dict, rules: Rules) -> _Item | None:
    """The fast path for a well-formed item (the common case); ``None`` sends it to the detailed
    path in :func:`_parse`, which finds and names every problem (duplicates included)."""
    if type(raw_item) is not dict or not raw_item.keys() <= ITEM_FIELDS:
        return None
    code = raw_item.get("source")
    source = sources.get(code) if type(code) is str else None
    external_id = raw_item.get("external_id")
    raw = raw_item.get("raw", {})
    if source is None or type(raw) is not dict or not valid_text(external_id, 128):
        return None
    if not external_id.isascii() and not _utf8(external_id):
        return None
    encoded, problem = _encode(raw)
    if problem:
        return None
    notes: list[dict] = []
    identifiers, problems = extract(raw, scopes[code], rules, notes)
    if problems:
        return None
    digest = blake2b(encoded, digest_size=16).hexdigest()
    return _Item(index, source, external_id, raw, digest, identifiers, encoded, notes)


RECORD_COLUMNS = [
    ("source_id", "bigint"),
    ("external_id", "text"),
    ("raw", "jsonb"),
    ("content_hash", "text"),
    ("brand_id", "bigint"),
]


def _write_records(items: list[_Item]) -> list[RecordResult]:
    """One guarded upsert: new rows inserted, changed rows (other content hash) updated.

    A large batch of only new keys (a bulk load) is copied straight into the table
    (as the subjects services' all-new path: one probe statement, then ``COPY``)."""
    if not items:
        return []
    now = timezone.now()
    rows = [(i.source.id, i.external_id, i.encoded.decode(), i.content_hash, i.source.brand_id) for i in items]
    if connection.vendor == "postgresql" and len(rows) > SMALL_BATCH:
        ids = _copy_if_all_new(rows, now)
        if ids is not None:
            return [RecordResult(i.index, id_, "created") for i, id_ in zip(items, ids, strict=True)]
    names = ", ".join(n for n, _ in RECORD_COLUMNS)
    source, params = _stage(rows)
    stamp = now.isoformat() if connection.vendor == "postgresql" else connection.ops.adapt_datetimefield_value(now)
    sql = (
        f"INSERT INTO identity_sourcerecord AS t ({names}, created_at, updated_at)"
        f" SELECT {', '.join('r.' + n for n, _ in RECORD_COLUMNS)}, %s, %s FROM {source}"
        " WHERE true ORDER BY r.source_id, r.external_id"
        " ON CONFLICT (source_id, external_id) DO UPDATE SET raw = excluded.raw,"
        " content_hash = excluded.content_hash, brand_id = excluded.brand_id, updated_at = excluded.updated_at"
        " WHERE t.content_hash <> excluded.content_hash OR t.brand_id IS DISTINCT FROM excluded.brand_id"
        " RETURNING id, source_id, external_id, created_at = updated_at"
    )
    written: dict[tuple[int, str], tuple[int, str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, stamp, *params])
        for id_, source_id, external_id, created in cursor.fetchall():
            written[(source_id, external_id)] = (id_, "created" if created else "updated")
        if len(written) < len(items):
            cursor.execute(
                f"SELECT t.id, t.source_id, t.external_id FROM {source} JOIN identity_sourcerecord t"
                " ON t.source_id = r.source_id AND t.external_id = r.external_id",
                params,
            )
            for id_, source_id, external_id in cursor.fetchall():
                written.setdefault((source_id, external_id), (id_, "unchanged"))
    return [RecordResult(i.index, *written[(i.source.id, i.external_id)]) for i in items]


SMALL_BATCH = 200
NEW_SAVEPOINT = "tw_records_all_new"
# Reserves one id per row when no key of the batch is stored (the EXISTS stops at the first that is;
# each key one probe of the unique index, a plan independent of statistics), else none.
RESERVE_SQL = (
    "SELECT nextval('identity_sourcerecord_id_seq'::regclass) FROM generate_series(1, CASE WHEN EXISTS"
    " (SELECT 1 FROM json_array_elements(%s::json) k CROSS JOIN LATERAL (SELECT 1 FROM identity_sourcerecord y"
    " WHERE y.source_id = (k->>0)::bigint AND y.external_id = k->>1 LIMIT 1) x) THEN 0 ELSE %s END)"
)


def _copy_if_all_new(rows: list[tuple], now) -> list[int] | None:
    """Ids (in ``rows`` order) when every key is new and the rows are copied in; ``None``, having
    written nothing, when some key is stored (the caller's guarded upsert takes the batch).

    Rows go in key order, the order of every writer, so concurrent batches cannot deadlock; a
    concurrent insert of one of the keys rolls back to the savepoint and falls back too. The COPY
    stream is built as one text (``write_row`` costs ~4 µs a row)."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1]))
    with connection.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {NEW_SAVEPOINT}")
        cursor.execute(RESERVE_SQL, [orjson.dumps([rows[i][:2] for i in order]).decode(), len(rows)])
        reserved = sorted(row[0] for row in cursor.fetchall())
        if len(reserved) != len(rows):
            cursor.execute(f"RELEASE SAVEPOINT {NEW_SAVEPOINT}")
            return None
        stamp = now.isoformat()
        stream = "".join(
            f"{id_}\t{source_id}\t{_text(external_id)}\t{_text(raw)}\t{digest}\t"
            f"{brand if brand is not None else NULL}\t{stamp}\t{stamp}\n"
            for id_, (source_id, external_id, raw, digest, brand) in zip(
                reserved, (rows[i] for i in order), strict=True
            )
        )
        try:
            with cursor.cursor.copy(
                "COPY identity_sourcerecord (id, source_id, external_id, raw, content_hash, brand_id,"
                " created_at, updated_at) FROM STDIN"
            ) as copy:
                copy.write(stream)
        except psycopg.IntegrityError:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {NEW_SAVEPOINT}; RELEASE SAVEPOINT {NEW_SAVEPOINT}")
            return None
        cursor.execute(f"RELEASE SAVEPOINT {NEW_SAVEPOINT}")
    ids = [0] * len(rows)
    for id_, i in zip(reserved, order, strict=True):
        ids[i] = id_
    return ids


def _decoded(row: tuple) -> tuple:
    """A staged row with ``raw`` as a JSON value again (for the JSON-parameter paths)."""
    return (row[0], row[1], orjson.loads(row[2]), *row[3:])


def _stage(rows: list[tuple]) -> tuple[str, list]:
    """Where the upsert reads the batch: a COPY-filled temporary table (large batches on
    PostgreSQL) or one JSON parameter (small batches: no temporary-table round trips; SQLite)."""
    if connection.vendor == "postgresql" and len(rows) <= SMALL_BATCH:
        names = [n for n, _ in RECORD_COLUMNS]
        definition = ", ".join(f"{n} {t}" for n, t in RECORD_COLUMNS)
        payload = orjson.dumps([dict(zip(names, _decoded(row), strict=True)) for row in rows]).decode()
        return f"jsonb_to_recordset(%s::jsonb) AS r({definition})", [payload]
    if connection.vendor != "postgresql":
        names = [n for n, _ in RECORD_COLUMNS]
        fields = ", ".join(
            f"json(json_extract(value, '$.{n}')) AS {n}" if t == "jsonb" else f"json_extract(value, '$.{n}') AS {n}"
            for n, t in RECORD_COLUMNS
        )
        payload = orjson.dumps([dict(zip(names, _decoded(row), strict=True)) for row in rows]).decode()
        return f"(SELECT {fields} FROM json_each(%s)) AS r", [payload]
    definition = ", ".join(f"{n} {t}" for n, t in RECORD_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS tw_stage_identity_record ({definition})")
        cursor.execute("TRUNCATE tw_stage_identity_record")
        with cursor.cursor.copy("COPY tw_stage_identity_record FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return "tw_stage_identity_record r", []


IDENTIFIER_COLUMNS = ("record_id", "identifier_type_id", "composite_key_id", "scope", "value", "key", "status")


def _replace_identifiers(changed: list[tuple[_Item, RecordResult]], rules: Rules) -> dict[int, int | None]:
    """Drop the identifiers of updated records and write the new ones; returns removed key -> shared limit."""
    updated = [r.id for _, r in changed if r.status == "updated"]
    removed: dict[int, int | None] = {}
    if updated:
        old = Identifier.objects.filter(record_id__in=updated, status="link")
        for key, type_id, composite_id in old.values_list("key", "identifier_type_id", "composite_key_id"):
            removed[key] = rules.shared_limit(type_id, composite_id)
        Identifier.objects.filter(record_id__in=updated).delete()
    rows = [
        (r.id, e.type_id, e.composite_id, e.scope, e.value, e.key, e.status)
        for item, r in changed
        for e in item.identifiers
    ]
    write_identifier_rows(rows)
    return removed


def write_identifier_rows(rows: list[tuple]) -> None:
    """Append identifier rows (in :data:`IDENTIFIER_COLUMNS` order): one ``COPY`` on PostgreSQL."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        columns = ", ".join(IDENTIFIER_COLUMNS)
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY identity_identifier ({columns}) FROM STDIN") as copy,
        ):
            copy.write(_copy_text(rows))
    else:
        Identifier.objects.bulk_create([Identifier(**dict(zip(IDENTIFIER_COLUMNS, row, strict=True))) for row in rows])


def _copy_text(rows: list[tuple]) -> str:
    """Identifier rows in COPY's text format, built in one join (``write_row`` costs ~4 µs a row).

    Ids are ints, statuses fixed words; scope and value are escaped (backslash, tab, newline,
    carriage return; NUL never passes normalization)."""

    text = _text
    return "".join(
        f"{record}\t{type_id if type_id is not None else NULL}\t{composite if composite is not None else NULL}"
        f"\t{text(scope)}\t{text(value)}\t{key}\t{status}\n"
        for record, type_id, composite, scope, value, key, status in rows
    )


def _text(value: str) -> str:
    """``value`` escaped for COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(COPY_ESCAPES)
    return value


NULL = "\\N"
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _over_limit(items: list[_Item], rules: Rules) -> dict[int, int]:
    """Linking values of the batch now held by more records than their shared limit: key -> holders."""
    limits = {
        e.key: limit
        for item in items
        for e in item.identifiers
        if e.status == "link" and (limit := rules.shared_limit(e.type_id, e.composite_id)) is not None
    }
    if not limits:
        return {}
    counts = (
        Identifier.objects.filter(key__in=list(limits), status="link")
        .values("key")
        .annotate(n=Count("id"))
        .filter(n__gt=min(limits.values()))
        .values_list("key", "n")
    )
    return {key: n for key, n in counts if n > limits[key]}


def _warn(items: list[_Item], results: list[RecordResult], rules: Rules, over_limit: dict[int, int]) -> None:
    """Blocked and over-limit values are reported on the item that carried them."""
    for item, result in zip(items, results, strict=True):
        result.warnings.extend(item.notes)
        for e in item.identifiers:
            code = rules.by_id[e.type_id].code if e.type_id in rules.by_id else _composite_code(rules, e.composite_id)
            if e.status == "blocked":
                result.warnings.append({"type": code, "value": e.value, "reason": "blocked"})
            elif e.key in over_limit:
                result.warnings.append(
                    {
                        "type": code,
                        "value": value_label(e.value),
                        "reason": f"over_limit: held by {over_limit[e.key]} records",
                    }
                )


def _composite_code(rules: Rules, composite_id: int | None) -> str:
    return next((c.code for c in rules.composites if c.id == composite_id), "?")
