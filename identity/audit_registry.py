"""Field-level change logging (django-auditlog) for the OneID rules and decisions.

Records, identifiers and assignments are written set-based and audited by domain
events (``identity.source_records_upserted``, ``identity.resolved``) and merge events.
A blocked value may be a real phone number or open id: its diffs are masked wholly. Operators'
decisions (manual links, do-not-link constraints, suggestion decisions) are logged as objects; a
do-not-link reason is free text, masked like personal data.
"""

from auditlog.registry import auditlog

from .models import (
    BlockedValue,
    CompositeKey,
    DoNotLink,
    IdentifierType,
    ManualLink,
    MatchSuggestion,
    SourceSystem,
    SurvivorshipRule,
)

for model in (SourceSystem, IdentifierType, CompositeKey, SurvivorshipRule, ManualLink):
    auditlog.register(model)
auditlog.register(BlockedValue, mask_fields=["value"])
auditlog.register(DoNotLink, mask_fields=["reason"])
auditlog.register(MatchSuggestion, mask_fields=["evidence"])
