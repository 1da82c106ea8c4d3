"""The roles Tagweave ships with: Django groups holding model permissions (issue 6).

A role says *what* a user may do (view, add, change… per model); *where* (which business lines,
brands, regions) comes from ``ScopeGrant`` rows on the user or on the role's group, read by
``subjects.access``. The two HQ roles hold ``subjects.all_scopes`` and need no grant.

``ROLES`` is data so that other apps can append the codenames of their own models (one line
each). Permission names are ``app_label.codename`` and may be shell patterns (``tags.view_*``):
a pattern keeps a role complete when an app adds a model, an exact name documents a deliberate
choice, and ``!name`` takes a name back out (``subjects.view_*`` would include ``view_pii``). ``ensure_roles`` runs after every ``migrate`` (a ``post_migrate`` hook) and from
``manage.py setup_roles``; it only adds what is missing unless asked to reset, so permissions an
operator granted on purpose survive a deploy.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS, transaction

ROLE_APPS = ("subjects", "identity", "tags", "audit", "auditlog", "authtoken")


@dataclass
class Role:
    group: str
    permissions: list[str]
    description: str = ""

    @property
    def all_scopes(self) -> bool:
        return "subjects.all_scopes" in self.permissions or "subjects.*" in self.permissions

    @property
    def view_pii(self) -> bool:
        names = self.permissions
        return "!subjects.view_pii" not in names and ("subjects.view_pii" in names or "subjects.*" in names)


ROLES: dict[str, Role] = {
    "hq_admin": Role(
        "HQ admin",
        [*(f"{app}.*" for app in ROLE_APPS), "!subjects.integration_rate"],
        "Everything, in every scope, PII unmasked.",
    ),
    "hq_analyst": Role(
        "HQ analyst",
        [
            "subjects.view_*",
            "!subjects.view_pii",
            "subjects.all_scopes",
            "identity.view_*",
            "tags.view_*",
            "audit.view_*",
            "auditlog.view_logentry",
        ],
        "Reads everything in every scope; PII masked unless view_pii is granted on top.",
    ),
    "brand_operator": Role(
        "Brand operator",
        [
            "subjects.view_subjecttype",
            "subjects.view_relationshiptype",
            "subjects.view_subject",
            "subjects.add_subject",
            "subjects.change_subject",
            "subjects.view_relationship",
            "subjects.add_relationship",
            "subjects.change_relationship",
            "identity.view_sourcesystem",
            "identity.view_identifiertype",
            "identity.view_oneid",
            "identity.view_sourcerecord",
            "identity.add_sourcerecord",
            "identity.change_sourcerecord",
            "tags.view_taggroup",
            "tags.view_tagdefinition",
            "tags.view_tagoption",
            "tags.view_tagvalue",
            "tags.add_tagvalue",
            "tags.change_tagvalue",
            "tags.view_tagvaluechange",
        ],
        "Reads and edits subjects, relationships, tag values and source records of their brands.",
    ),
    "regional_manager": Role(
        "Regional manager",
        [
            "subjects.view_subjecttype",
            "subjects.view_relationshiptype",
            "subjects.view_subject",
            "subjects.view_relationship",
            "identity.view_oneid",
            "tags.view_taggroup",
            "tags.view_tagdefinition",
            "tags.view_tagoption",
            "tags.view_tagvalue",
        ],
        "Reads subjects of their regions (their clinics and those clinics' members) and their tags.",
    ),
    "integration": Role(
        "Integration",
        [
            "subjects.integration_rate",
            "subjects.view_subjecttype",
            "subjects.view_relationshiptype",
            "subjects.add_subject",
            "subjects.change_subject",
            "subjects.add_relationship",
            "subjects.change_relationship",
            "identity.view_sourcesystem",
            "identity.view_identifiertype",
            "identity.add_sourcerecord",
            "identity.change_sourcerecord",
            "tags.add_tagvalue",
            "tags.change_tagvalue",
            "tags.add_event",
        ],
        "An API token that writes for its source systems and brands; it reads only reference data.",
    ),
    "auditor": Role(
        "Auditor",
        ["auditlog.view_logentry", "audit.view_*"],
        "Reads the audit log, domain events and usage views; nothing else.",
    ),
}


@dataclass
class RolesReport:
    created_groups: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)


def role_permission_ids(role: Role, available: dict[str, int]) -> tuple[set[int], list[str]]:
    """The permission ids a role's names and patterns match, and the names that matched nothing."""
    ids: set[int] = set()
    excluded: set[int] = set()
    unknown = []
    for name in role.permissions:
        pattern = name.removeprefix("!")
        matched = (
            fnmatch.filter(available, pattern)
            if any(c in pattern for c in "*?[")
            else [pattern] * (pattern in available)
        )
        if not matched:
            unknown.append(name)
        (excluded if name.startswith("!") else ids).update(available[m] for m in matched)
    return ids - excluded, unknown


def ensure_roles(*, reset: bool = False, using: str = DEFAULT_DB_ALIAS) -> RolesReport:
    """Create the six groups and give each its permissions; safe to run any number of times.

    Without ``reset`` only missing permissions are added (an operator's extra grants stay);
    with it each group holds exactly its role's permissions. A few queries in all, whatever the
    number of roles: one to read the permissions, one per group for its current ones.
    """
    report = RolesReport()
    rows = Permission.objects.using(using).filter(content_type__app_label__in=ROLE_APPS)
    available = {f"{app}.{code}": pk for pk, app, code in rows.values_list("id", "content_type__app_label", "codename")}
    with transaction.atomic(using=using):
        for code, role in ROLES.items():
            group, created = Group.objects.using(using).get_or_create(name=role.group)
            if created:
                report.created_groups.append(role.group)
            wanted, unknown = role_permission_ids(role, available)
            if unknown:
                report.unknown[code] = unknown
            current = set(group.permissions.values_list("id", flat=True))
            missing = wanted - current
            if missing:
                group.permissions.add(*missing)
            report.added[code] = len(missing)
            if reset and (extra := current - wanted):
                group.permissions.remove(*extra)
                report.removed[code] = len(extra)
    return report


def role_group(code: str, using: str = DEFAULT_DB_ALIAS) -> Group:
    """The group of role ``code`` (created with its permissions if it does not exist yet)."""
    name = ROLES[code].group
    group = Group.objects.using(using).filter(name=name).first()
    if group is None:
        ensure_roles(using=using)
        group = Group.objects.using(using).get(name=name)
    return group


def ensure_roles_after_migrate(sender, app_config=None, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """``post_migrate`` receiver: run once per ``migrate``, after the last app created its permissions."""
    from django.apps import apps

    with_models = [config for config in apps.get_app_configs() if config.models_module is not None]
    if not with_models or sender is not with_models[-1]:
        return
    if not Permission.objects.using(using).filter(content_type__app_label="subjects").exists():
        return  # a migrate that stopped before subjects (e.g. ``migrate auth``)
    ensure_roles(using=using)
