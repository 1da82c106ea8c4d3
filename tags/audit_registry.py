"""Field-level change logging (django-auditlog) for tag definitions and who may see or use them.

Groups, definitions, options and rule versions are saved through the ORM by
``tags.services.definitions`` (which also writes its domain events); the object-permission grants
on groups and definitions decide who sees which tag values, so their changes are logged too. The
actor comes from ``audit.actor`` (the request's user, token users included, or a task's actor).
Tag values, their history and events are written set-based: the value history
(``TagValueChange``) and the domain events are their audit.
"""

from auditlog.registry import auditlog

from .models import (
    TagDefinition,
    TagDefinitionGroupObjectPermission,
    TagDefinitionUserObjectPermission,
    TagGroup,
    TagGroupGroupObjectPermission,
    TagGroupUserObjectPermission,
    TagOption,
    TagRule,
)

for model in (
    TagGroup,
    TagDefinition,
    TagOption,
    TagRule,
    TagGroupUserObjectPermission,
    TagGroupGroupObjectPermission,
    TagDefinitionUserObjectPermission,
    TagDefinitionGroupObjectPermission,
):
    auditlog.register(model)
