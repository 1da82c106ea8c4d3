"""Field-level change logging (django-auditlog) for the OneID rules and decisions.

Records, identifiers and assignments are written set-based and audited by domain
events (``identity.source_records_upserted``, ``identity.resolved``) and merge events.
A blocked value may be a real phone number or open id: its diffs are masked wholly.
"""

from auditlog.registry import auditlog

from .models import BlockedValue, CompositeKey, IdentifierType, SourceSystem, SurvivorshipRule

for model in (SourceSystem, IdentifierType, CompositeKey, SurvivorshipRule):
    auditlog.register(model)
auditlog.register(BlockedValue, mask_fields=["value"])
