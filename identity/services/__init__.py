"""Every write to OneID data goes through these functions."""

from ..resolution.incremental import resolve_records
from .operations import oneid_merge, oneid_split
from .records import RecordResult, RecordsResult, source_record_bulk_upsert

__all__ = [
    "RecordResult",
    "RecordsResult",
    "oneid_merge",
    "oneid_split",
    "resolve_records",
    "source_record_bulk_upsert",
]
