"""Field-level change logging (django-auditlog) for the OneID rules and decisions.

Records, identifiers and assignments are written set-based and audited by domain
events (``identity.source_records_upserted``, ``identity.resolved``) and merge events.
"""

from auditlog.registry import auditlog

from .models import BlockedValue, CompositeKey, IdentifierType, SourceSystem, SurvivorshipRule

for model in (SourceSystem, IdentifierType, CompositeKey, BlockedValue, SurvivorshipRule):
    auditlog.register(model)
