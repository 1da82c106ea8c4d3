"""Every write to OneID data goes through these functions."""

from ..resolution.incremental import resolve_records
from .records import RecordResult, RecordsResult, source_record_bulk_upsert

__all__ = ["RecordResult", "RecordsResult", "resolve_records", "source_record_bulk_upsert"]
