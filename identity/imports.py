"""CSV import of source records in the admin (django-import-export), all or nothing.

Rows become the items the API takes and go through ``source_record_bulk_upsert``
chunk by chunk inside one transaction (the subjects app's ``BulkServiceResource``),
so a file with one bad row writes nothing and lists every row's errors.
Columns: ``source``, ``external_id``, ``raw`` (a JSON object).
"""

from __future__ import annotations

import json

from import_export import fields

from subjects.imports import BulkServiceResource

from .models import SourceRecord
from .services import source_record_bulk_upsert

COLUMNS = ("source", "external_id", "raw")


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _json_object(value: object) -> dict:
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


class SourceRecordResource(BulkServiceResource):
    columns = COLUMNS
    parsers = {"source": _text, "external_id": _text, "raw": _json_object}
    action = "identity.csv_imported"

    source = fields.Field(column_name="source")
    external_id = fields.Field(attribute="external_id", column_name="external_id")
    raw = fields.Field(column_name="raw")

    class Meta:
        model = SourceRecord
        fields = COLUMNS
        export_order = COLUMNS
        name = "Source records (upsert by source and external_id, then resolve)"

    def upsert(self, *, action: str, **kwargs):
        return source_record_bulk_upsert(**kwargs)

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("source")

    def dehydrate_source(self, record: SourceRecord) -> str:
        return record.source.code

    def dehydrate_raw(self, record: SourceRecord) -> str:
        return json.dumps(record.raw, ensure_ascii=False, sort_keys=True)
