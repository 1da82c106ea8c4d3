"""Field-level change logging (django-auditlog) for the subjects models.

The services write these entries themselves (``audit.services.audit_log_entry``: explicit actor,
PII masked) with auditlog's signals disabled around their SQL writes; the registration covers any
other ORM save. Bulk writes bypass model signals; the bulk services record domain events instead.
The guard on ``LogEntry`` masks PII and fills the actor for every entry, however it is written.
"""

from auditlog.registry import auditlog

from audit.services import connect_log_entry_guard

from .models import Relationship, RelationshipType, ScopeGrant, Subject, SubjectScope, SubjectType

auditlog.register(SubjectType)
auditlog.register(RelationshipType)
auditlog.register(Subject)  # PII masked key by key by the LogEntry guard, not wholly by auditlog
auditlog.register(Relationship)
auditlog.register(ScopeGrant)
auditlog.register(SubjectScope)

connect_log_entry_guard()
