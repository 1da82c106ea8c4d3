"""Field-level change logging (django-auditlog) for the subjects models.

Bulk writes bypass model signals; the bulk services record domain events instead.
"""

from auditlog.registry import auditlog

from .models import Relationship, RelationshipType, Subject, SubjectType

auditlog.register(SubjectType)
auditlog.register(RelationshipType)
auditlog.register(Subject)
auditlog.register(Relationship)
