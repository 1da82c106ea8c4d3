"""Every write to subjects and relationships goes through these functions."""

from .objects import (
    relationship_delete,
    relationship_save,
    relationship_type_delete,
    relationship_type_save,
    subject_delete,
    subject_save,
    subject_type_delete,
    subject_type_save,
)
from .relationship_bulk import relationship_bulk_upsert
from .subject_bulk import BulkResult, ItemResult, subject_bulk_upsert

__all__ = [
    "BulkResult",
    "ItemResult",
    "relationship_bulk_upsert",
    "relationship_delete",
    "relationship_save",
    "relationship_type_delete",
    "relationship_type_save",
    "subject_bulk_upsert",
    "subject_delete",
    "subject_save",
    "subject_type_delete",
    "subject_type_save",
]
