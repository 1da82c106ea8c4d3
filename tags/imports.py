"""CSV import of tag values for the admin (django-import-export), through ``store.write_values``.

Columns: ``subject_source``, ``subject_external_id``, ``tag`` (code), ``value`` and,
when a tag code exists for several subject types, ``subject_type``. An empty
value removes the tag's value. Rows become the items of the API's bulk import
(``tags.api.bulk.import_values``: set-based resolution, then one ``write_values``
per tag), so the file is validated exactly like an API request. The file is all
or nothing: it runs in one transaction that is rolled back on any error (and on
the preview); refused rows are dropped and the rest retried so that one report
lists the problems of every stage (resolution, then values).
"""

from __future__ import annotations

from collections import defaultdict

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from import_export import resources
from import_export.results import Result, RowResult

from common.errors import ItemError, ServiceError
from tags.api.bulk import import_values
from tags.models import TagDefinition, TagValue

from .admin.values_input import parse_value_text

COLUMNS = ("subject_source", "subject_external_id", "subject_type", "tag", "value")
REQUIRED = ("subject_source", "subject_external_id", "tag")
FIELD_TO_COLUMN = {"subject": "subject_external_id", "subject.type": "subject_type", "tag": "tag", "value": "value"}


class _Rollback(Exception):
    pass


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def rows_to_items(rows: list[dict]) -> tuple[list[dict | None], list[ItemError]]:
    """API bulk items for the rows (None for a row with a missing cell), and the cell errors."""
    types = _value_types({_text(r.get("tag")) for r in rows})
    items: list[dict | None] = []
    errors: list[ItemError] = []
    for index, row in enumerate(rows):
        cells = {name: _text(row.get(name)) for name in COLUMNS}
        missing = [name for name in REQUIRED if not cells[name]]
        for name in missing:
            errors.append(ItemError(index, name, "Required.", "required"))
        if missing:
            items.append(None)
            continue
        subject = {"source": cells["subject_source"], "external_id": cells["subject_external_id"]}
        if cells["subject_type"]:
            subject["type"] = cells["subject_type"]
        value_type = types.get((cells["tag"], cells["subject_type"])) or types.get((cells["tag"], ""))
        value = parse_value_text(value_type, cells["value"]) if value_type else cells["value"] or None
        items.append({"subject": subject, "tag": cells["tag"], "value": value})
    return items, errors


def _value_types(codes: set[str]) -> dict[tuple[str, str], str]:
    """(code, subject type code) → value type, and (code, "") when the code has one value type."""
    found: dict[tuple[str, str], str] = {}
    kinds: dict[str, set[str]] = defaultdict(set)
    rows = TagDefinition.objects.filter(code__in=codes).values_list("code", "subject_type__code", "value_type")
    for code, type_code, value_type in rows:
        found[(code, type_code)] = value_type
        kinds[code].add(value_type)
    found.update({(code, ""): next(iter(k)) for code, k in kinds.items() if len(k) == 1})
    return found


def import_rows(*, actor, rows: list[dict], dry_run: bool) -> tuple[dict, list[ItemError]]:
    """Write the rows (all or nothing); ``(counts, errors)`` with errors indexed by row."""
    items, errors = rows_to_items(rows)
    pending = [(i, item) for i, item in enumerate(items) if item is not None]
    counts = {"created": 0, "updated": 0, "removed": 0, "unchanged": 0}
    try:
        with transaction.atomic():
            while pending:
                try:
                    outcome = import_values(actor=actor, items=[item for _, item in pending], max_items=len(pending))
                except ServiceError as exc:
                    refused = {e.index for e in exc.errors}
                    errors.extend(
                        ItemError(None if e.index is None else pending[e.index][0], e.field, e.message, e.code)
                        for e in exc.errors
                    )
                    if not exc.errors or None in refused:
                        break
                    pending = [entry for position, entry in enumerate(pending) if position not in refused]
                    continue
                counts = {name: getattr(outcome, name) for name in counts}
                break
            if dry_run or errors:
                raise _Rollback
    except _Rollback:
        pass
    return counts, errors


class TagValueResource(resources.ModelResource):
    """Import only: rows go to ``import_rows``, never through import-export's save per row."""

    class Meta:
        model = TagValue
        fields = ()
        name = "Tag values (subject_source, subject_external_id, tag, value[, subject_type])"

    def get_diff_headers(self):
        return list(COLUMNS)

    def import_data(self, dataset, dry_run=False, raise_errors=False, **kwargs):
        rows = list(dataset.dict)
        result = Result()
        result.diff_headers = self.get_diff_headers()
        result.total_rows = len(rows)
        counts, errors = import_rows(actor=kwargs.get("user"), rows=rows, dry_run=dry_run)
        if errors:
            _invalid_rows(result, rows, errors)
            if raise_errors:
                raise ValidationError([f"row {_row_number(e)}: {e.field}: {e.message}" for e in errors])
            return result
        result.totals[RowResult.IMPORT_TYPE_NEW] = counts["created"]
        result.totals[RowResult.IMPORT_TYPE_UPDATE] = counts["updated"]
        result.totals[RowResult.IMPORT_TYPE_DELETE] = counts["removed"]
        result.totals[RowResult.IMPORT_TYPE_SKIP] = counts["unchanged"]
        return result


def _row_number(error: ItemError) -> int | str:
    return "-" if error.index is None else error.index + 1


def _invalid_rows(result: Result, rows: list[dict], errors: list[ItemError]) -> None:
    by_row: dict[int | None, dict[str, list[str]]] = {}
    for error in errors:
        column = FIELD_TO_COLUMN.get(error.field, error.field) or NON_FIELD_ERRORS
        messages = by_row.setdefault(error.index, {}).setdefault(column, [])
        if error.message not in messages:
            messages.append(error.message)
    for index in sorted(by_row, key=lambda i: -1 if i is None else i):
        row = rows[index] if index is not None and index < len(rows) else {}
        result.append_invalid_row(0 if index is None else index + 1, row, ValidationError(by_row[index]))
        result.totals[RowResult.IMPORT_TYPE_INVALID] += 1
