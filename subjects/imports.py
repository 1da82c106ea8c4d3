"""CSV import and export of subjects and relationships for the admin (django-import-export).

An import does not go through import-export's row-by-row save: the rows are
parsed into the same items the API takes and written by ``subject_bulk_upsert`` /
``relationship_bulk_upsert``, so validation is identical. The file is written in
chunks of ``CHUNK`` items inside one transaction, so it stays all or nothing; the
confirm step runs the same code and rolls back. Errors become import-export
invalid rows (row number, field, message), which its import page already shows.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from import_export import fields, resources
from import_export.results import Result, RowResult

from common.errors import ItemError, ServiceError

from .models import Relationship, Subject
from .services import relationship_bulk_upsert, subject_bulk_upsert

CHUNK = 1000
PREVIEW_ROWS = 500
SUBJECT_COLUMNS = (
    "type",
    "source",
    "external_id",
    "display_name",
    "attributes",
    "business_line",
    "brand",
    "region",
    "parent",
)
SUBJECT_REFS = ("business_line", "brand", "region", "parent")
RELATIONSHIP_COLUMNS = (
    "type",
    "source",
    "external_id",
    "from",
    "to",
    "weight",
    "valid_from",
    "valid_to",
    "attributes",
)
STATUS_TO_IMPORT_TYPE = {
    "created": RowResult.IMPORT_TYPE_NEW,
    "updated": RowResult.IMPORT_TYPE_UPDATE,
    "unchanged": RowResult.IMPORT_TYPE_SKIP,
}


class _DryRun(Exception):
    """Raised to roll back a dry run's transaction."""


@dataclass
class ParsedFile:
    items: list[dict | None]
    errors: list[ItemError] = field(default_factory=list)


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def parse_ref_cell(value: object) -> int | dict | None:
    """A reference cell: empty, a subject id, or ``source:external_id``."""
    text = _text(value)
    if not text:
        return None
    if text.isdigit():
        return int(text)
    source, sep, external_id = text.partition(":")
    if not sep:
        raise ValueError("Give a subject id or source:external_id.")
    return {"source": source, "external_id": external_id}


def _parse_json_object(value: object) -> dict:
    text = _text(value)
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Not valid JSON: {exc.msg} (column {exc.colno}).") from exc
    if not isinstance(parsed, dict):
        raise ValueError("Must be a JSON object.")
    return parsed


def _parse_cells(index: int, row: dict, parsers: dict[str, Callable], errors: list[ItemError]) -> dict:
    item = {}
    for name, parse in parsers.items():
        if name not in row:
            continue
        try:
            value = parse(row[name])
        except ValueError as exc:
            errors.append(ItemError(index, name, str(exc)))
            continue
        if value is not _OMIT:
            item[name] = value
    return item


_OMIT = object()


def _weight(value: object) -> float | object:
    text = _text(value)
    if not text:
        return _OMIT
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError("Must be a number.") from exc


def _optional_text(value: object) -> str | None:
    return _text(value) or None


SUBJECT_PARSERS = {
    "type": _text,
    "source": _text,
    "external_id": _text,
    "display_name": _text,
    "attributes": _parse_json_object,
    **dict.fromkeys(SUBJECT_REFS, parse_ref_cell),
}
RELATIONSHIP_PARSERS = {
    "type": _text,
    "source": _text,
    "external_id": _text,
    "from": parse_ref_cell,
    "to": parse_ref_cell,
    "weight": _weight,
    "valid_from": _optional_text,
    "valid_to": _optional_text,
    "attributes": _parse_json_object,
}


def parse_rows(rows: Sequence[dict], parsers: dict[str, Callable]) -> ParsedFile:
    """Items for the bulk service, plus cell errors and keys repeated across the file.

    Duplicates are checked over the whole file because the service only sees one
    chunk; a repeated row becomes ``None`` and is not sent. A row with a bad cell is
    still sent, without that cell, so the service reports its other problems.
    """
    parsed = ParsedFile(items=[])
    seen: dict[tuple, int] = {}
    for index, row in enumerate(rows):
        key = (_text(row.get("type")), _text(row.get("source")), _text(row.get("external_id")))
        first = seen.setdefault(key, index)
        if first != index and all(key):
            parsed.errors.append(
                ItemError(index, "external_id", f"Duplicate of row {first + 1} (same type, source and external_id).")
            )
            parsed.items.append(None)
            continue
        parsed.items.append(_parse_cells(index, row, parsers, parsed.errors))
    return parsed


@dataclass
class ImportOutcome:
    statuses: list[tuple[int, int, str]]  # (index, id, status)
    errors: list[ItemError]
    counts: dict[str, int]


def bulk_import(*, actor, items: list[dict | None], upsert: Callable, action: str, dry_run: bool) -> ImportOutcome:
    """Write ``items`` chunk by chunk in one transaction; any error rolls everything back.

    Every chunk is tried even after one fails, so the report covers the whole file;
    a later chunk may then also report references to rows of the failed chunk.
    """
    outcome = ImportOutcome(statuses=[], errors=[], counts={"created": 0, "updated": 0, "unchanged": 0})
    # One correlation id links the domain events of all chunks of one file.
    upsert = functools.partial(upsert, correlation_id=uuid.uuid4())
    try:
        with transaction.atomic():
            for start in range(0, len(items), CHUNK):
                _import_chunk(actor, items[start : start + CHUNK], start, upsert, action, outcome)
            if dry_run or outcome.errors:
                raise _DryRun
    except _DryRun:
        pass
    return outcome


def _import_chunk(actor, chunk, start, upsert, action, outcome: ImportOutcome) -> None:
    """Upsert one chunk; on refusal, retry without the refused items to report the rest too.

    The service stops at its first failing stage (parsing, then references), so
    retrying the remaining items finds the errors of the later stages. Any error
    means the file's transaction is rolled back, so what the retries write is discarded.
    """
    pending = [(index, item) for index, item in enumerate(chunk, start) if item is not None]
    while pending:
        try:
            with transaction.atomic():
                result = upsert(actor=actor, items=[item for _, item in pending], action=action)
        except ServiceError as exc:
            refused = {e.index for e in exc.errors}
            outcome.errors.extend(
                ItemError(None if e.index is None else pending[e.index][0], e.field, e.message, e.code)
                for e in exc.errors
            )
            if not exc.errors or None in refused:
                outcome.errors.extend([] if exc.errors else [ItemError(None, "", exc.message, exc.code)])
                return
            pending = [entry for position, entry in enumerate(pending) if position not in refused]
            continue
        for item_result in result.results:
            outcome.statuses.append((pending[item_result.index][0], item_result.id, item_result.status))
        for status, count in result.counts.items():
            outcome.counts[status] += count
        return


class BulkServiceResource(resources.ModelResource):
    """A resource whose import is one bulk-service call per chunk, not a save per row."""

    columns: tuple[str, ...] = ()
    parsers: dict[str, Callable] = {}
    action = ""

    def upsert(self, **kwargs):
        raise NotImplementedError

    def get_diff_headers(self):
        return list(self.columns)

    def import_data(self, dataset, dry_run=False, raise_errors=False, **kwargs):
        rows = list(dataset.dict)
        result = Result()
        result.diff_headers = self.get_diff_headers()
        result.total_rows = len(rows)
        parsed = parse_rows(rows, self.parsers)
        # Cell errors still go through the service (rolled back) so that one report lists everything.
        outcome = bulk_import(
            actor=kwargs.get("user"),
            items=parsed.items,
            upsert=self.upsert,
            action=self.action,
            dry_run=dry_run or bool(parsed.errors),
        )
        errors = parsed.errors + outcome.errors
        if errors:
            _add_invalid_rows(result, rows, errors)
        else:
            _add_row_results(result, rows, outcome)
        if raise_errors and errors:
            raise ValidationError([f"row {_row_number(e)}: {e.field}: {e.message}" for e in errors])
        return result


def _row_number(error: ItemError) -> int | str:
    return "-" if error.index is None else error.index + 1


def _add_invalid_rows(result: Result, rows: list[dict], errors: list[ItemError]) -> None:
    by_row: dict[int | None, dict[str, list[str]]] = {}
    for error in errors:
        messages = by_row.setdefault(error.index, {}).setdefault(error.field or NON_FIELD_ERRORS, [])
        if error.message not in messages:
            messages.append(error.message)
    for index in sorted(by_row, key=lambda i: -1 if i is None else i):
        row = rows[index] if index is not None and index < len(rows) else {}
        number = 0 if index is None else index + 1
        result.append_invalid_row(number, row, ValidationError(by_row[index]))
        result.totals[RowResult.IMPORT_TYPE_INVALID] += 1


def _add_row_results(result: Result, rows: list[dict], outcome: ImportOutcome) -> None:
    result.totals[RowResult.IMPORT_TYPE_NEW] = outcome.counts["created"]
    result.totals[RowResult.IMPORT_TYPE_UPDATE] = outcome.counts["updated"]
    result.totals[RowResult.IMPORT_TYPE_SKIP] = outcome.counts["unchanged"]
    for index, id_, status in sorted(outcome.statuses)[:PREVIEW_ROWS]:
        row_result = RowResult()
        row_result.import_type = STATUS_TO_IMPORT_TYPE[status]
        row_result.object_id = id_
        row_result.diff = [rows[index].get(name, "") for name in result.diff_headers]
        result.append_row_result(row_result)


# Export ----------------------------------------------------------------------------------


def ref_cell(subject: Subject | None) -> str:
    return "" if subject is None else f"{subject.source}:{subject.external_id}"


class SubjectResource(BulkServiceResource):
    """Subjects in the CSV shape that import reads back: references as ``source:external_id``."""

    columns = SUBJECT_COLUMNS
    parsers = SUBJECT_PARSERS
    action = "subjects.csv_imported"

    type = fields.Field(column_name="type")
    source = fields.Field(attribute="source", column_name="source")
    external_id = fields.Field(attribute="external_id", column_name="external_id")
    display_name = fields.Field(attribute="display_name", column_name="display_name")
    attributes = fields.Field(column_name="attributes")
    business_line = fields.Field(column_name="business_line")
    brand = fields.Field(column_name="brand")
    region = fields.Field(column_name="region")
    parent = fields.Field(column_name="parent")

    class Meta:
        model = Subject
        fields = SUBJECT_COLUMNS
        export_order = SUBJECT_COLUMNS
        name = "Subjects (bulk upsert by type, source and external_id)"

    def upsert(self, **kwargs):
        return subject_bulk_upsert(**kwargs)

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("subject_type", "business_line", "brand", "region", "parent")

    def dehydrate_type(self, subject: Subject) -> str:
        return subject.subject_type.code

    def dehydrate_attributes(self, subject: Subject) -> str:
        return json.dumps(subject.attributes, ensure_ascii=False, sort_keys=True)

    def dehydrate_business_line(self, subject: Subject) -> str:
        return ref_cell(subject.business_line)

    def dehydrate_brand(self, subject: Subject) -> str:
        return ref_cell(subject.brand)

    def dehydrate_region(self, subject: Subject) -> str:
        return ref_cell(subject.region)

    def dehydrate_parent(self, subject: Subject) -> str:
        return ref_cell(subject.parent)


class RelationshipResource(BulkServiceResource):
    columns = RELATIONSHIP_COLUMNS
    parsers = RELATIONSHIP_PARSERS
    action = "relationships.csv_imported"

    class Meta:
        model = Relationship
        fields = ()
        name = "Relationships (bulk upsert by type, source and external_id)"

    def upsert(self, **kwargs):
        return relationship_bulk_upsert(**kwargs)
