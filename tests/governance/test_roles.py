"""Roles: six groups with their permissions, created by migrate and by ``setup_roles``, idempotent."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from subjects.roles import ROLES, ensure_roles

pytestmark = pytest.mark.django_db


def perms(code: str) -> set[str]:
    group = Group.objects.get(name=ROLES[code].group)
    return {f"{app}.{name}" for app, name in group.permissions.values_list("content_type__app_label", "codename")}


def test_migrate_created_every_role():
    """The test database was built by migrate: its post_migrate hook made the groups."""
    assert set(Group.objects.values_list("name", flat=True)) >= {role.group for role in ROLES.values()}


def test_hq_admin_holds_everything_including_all_scopes_and_pii():
    every = Permission.objects.filter(
        content_type__app_label__in=["subjects", "identity", "tags", "audit", "auditlog", "authtoken"]
    ).count()
    held = perms("hq_admin")
    # Everything but the integration API rate: HQ admins are throttled as people.
    assert len(held) == every - 1 and "subjects.integration_rate" not in held
    assert {"subjects.all_scopes", "subjects.view_pii", "subjects.delete_subject", "tags.change_tagdefinition"} <= held


def test_hq_analyst_views_everything_in_all_scopes_without_pii_or_writes():
    held = perms("hq_analyst")
    assert "subjects.all_scopes" in held
    assert "subjects.view_pii" not in held
    assert {
        "subjects.view_subject",
        "identity.view_sourcerecord",
        "tags.view_tagvalue",
        "audit.view_domainevent",
    } <= held
    assert not {p for p in held if p.split(".")[1].startswith(("add_", "change_", "delete_"))}


def test_brand_operator_edits_subjects_relationships_values_records_but_deletes_nothing():
    held = perms("brand_operator")
    assert {
        "subjects.add_subject",
        "subjects.change_subject",
        "subjects.add_relationship",
        "tags.change_tagvalue",
        "identity.add_sourcerecord",
    } <= held
    assert not {"subjects.all_scopes", "subjects.view_pii"} & held
    assert not {p for p in held if ".delete_" in p}


def test_regional_manager_only_views():
    held = perms("regional_manager")
    assert "subjects.view_subject" in held
    assert all(p.split(".")[1].startswith("view_") for p in held)
    assert "subjects.all_scopes" not in held


def test_integration_writes_and_reads_only_reference_data():
    held = perms("integration")
    assert {"subjects.add_subject", "subjects.change_subject", "identity.add_sourcerecord", "tags.add_event"} <= held
    assert "subjects.view_subject" not in held
    assert {p for p in held if ".view_" in p} <= {
        "subjects.view_subjecttype",
        "subjects.view_relationshiptype",
        "identity.view_sourcesystem",
        "identity.view_identifiertype",
    }


def test_auditor_sees_only_audit():
    held = perms("auditor")
    assert "auditlog.view_logentry" in held
    assert all(p.startswith(("auditlog.view_", "audit.view_")) for p in held)


def test_ensure_roles_is_idempotent_and_keeps_extra_grants_unless_reset():
    before = {code: perms(code) for code in ROLES}
    again = ensure_roles()
    assert again.created_groups == [] and set(again.added.values()) == {0}
    assert {code: perms(code) for code in ROLES} == before

    auditor = Group.objects.get(name=ROLES["auditor"].group)
    extra = Permission.objects.get(content_type__app_label="subjects", codename="view_subject")
    auditor.permissions.add(extra)
    ensure_roles()
    assert "subjects.view_subject" in perms("auditor")
    report = ensure_roles(reset=True)
    assert report.removed == {"auditor": 1}
    assert perms("auditor") == before["auditor"]


def test_setup_roles_command_recreates_a_deleted_group():
    Group.objects.filter(name=ROLES["regional_manager"].group).delete()
    out = StringIO()
    call_command("setup_roles", stdout=out)
    assert "Created: Regional manager" in out.getvalue()
    assert "subjects.view_subject" in perms("regional_manager")


def test_unknown_permission_names_are_reported_not_fatal(monkeypatch):
    monkeypatch.setattr(ROLES["auditor"], "permissions", [*ROLES["auditor"].permissions, "audit.view_nothing"])
    assert ensure_roles().unknown == {"auditor": ["audit.view_nothing"]}
