"""CSV import of tag values in the admin: through write_values, all or nothing, errors per row."""

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import DomainEvent
from tags.imports import import_rows
from tags.models import TagValue, TagValueChange
from tests.factories import SubjectFactory

pytest_plugins = ["tests.tags.uiworld"]

HEADER = "subject_source,subject_external_id,subject_type,tag,value\n"


@pytest.fixture
def client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def members(tags):
    return [SubjectFactory(subject_type=tags.world.member_type, source="crm", external_id=f"M{i}") for i in range(3)]


def upload(client, text: str):
    file = SimpleUploadedFile("values.csv", text.encode(), content_type="text/csv")
    return client.post(reverse("admin:tags_tagvalue_import"), {"format": "0", "resource": "0", "import_file": file})


def confirm(client, preview):
    form = preview.context["confirm_form"]
    data = {name: form.initial[name] for name in ("import_file_name", "original_file_name", "format", "resource")}
    return client.post(reverse("admin:tags_tagvalue_process_import"), data)


def row_errors(response) -> list[tuple[int, dict]]:
    return [(row.number, row.error_dict) for row in response.context["result"].invalid_rows]


def stored(tag):
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


GOOD = (
    HEADER
    + "crm,M0,,skin,dry\n"
    + 'crm,M1,member,interests,"laser, peel"\n'
    + "crm,M2,,score,3.5\n"
    + "crm,M0,,vip,yes\n"
    + "hq,C1,clinic,grade,A\n"
)


def test_preview_writes_nothing_then_confirm_imports(client, tags, members):
    preview = upload(client, GOOD)
    assert preview.status_code == 200 and "confirm_form" in preview.context, row_errors(preview)
    assert preview.context["result"].totals["new"] == 5
    assert TagValue.objects.count() == 0 and TagValueChange.objects.count() == 0
    done = confirm(client, preview)
    assert done.status_code == 302
    m0, m1, m2 = members
    assert stored(tags.skin) == {m0.id: "dry"}
    assert stored(tags.interests) == {m1.id: ["laser", "peel"]}
    assert stored(tags.score) == {m2.id: 3.5}
    assert stored(tags.vip) == {m0.id: True}
    assert stored(tags.clinic_grade) == {tags.world.clinic_a_sh.id: "A"}
    assert set(TagValue.objects.values_list("source", flat=True)) == {"imported"}
    assert any("5 set" in str(m) for m in get_messages(done.wsgi_request))
    assert (
        len(set(DomainEvent.objects.filter(action="tags.values_imported").values_list("correlation_id", flat=True)))
        == 1
    )


def test_every_bad_row_is_reported_and_nothing_is_written(client, tags, members):
    text = (
        HEADER
        + "crm,M0,,skin,dry\n"  # 1: fine
        + "crm,M9,,skin,dry\n"  # 2: unknown subject
        + "crm,M1,,skin,purple\n"  # 3: not an option
        + "crm,M1,,age_band,under_30\n"  # 4: a rule tag
        + ",M2,,skin,dry\n"  # 5: missing source
        + "crm,M2,,nope,x\n"  # 6: unknown tag
        + "crm,M2,,score,lots\n"  # 7: not a number
        + "hq,C1,,grade,A\n"  # 8: grade exists for clinics and doctors: the type is needed
    )
    preview = upload(client, text)
    assert "confirm_form" not in preview.context
    errors = dict(row_errors(preview))
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8]
    assert "subject_external_id" in errors[2] and "value" in errors[3] and "tag" in errors[4]
    assert "subject_source" in errors[5] and "tag" in errors[6] and "value" in errors[7]
    assert "subject_type" in errors[8]
    assert TagValue.objects.count() == 0 and not DomainEvent.objects.filter(action__startswith="tags.values").exists()


def test_empty_value_removes_and_reimport_is_unchanged(tags, members, admin_user):
    rows = [{"subject_source": "crm", "subject_external_id": "M0", "tag": "skin", "value": "dry"}]
    counts, errors = import_rows(actor=admin_user, rows=rows, dry_run=False)
    assert errors == [] and counts["created"] == 1
    counts, _ = import_rows(actor=admin_user, rows=rows, dry_run=False)
    assert counts["unchanged"] == 1
    counts, _ = import_rows(actor=admin_user, rows=[{**rows[0], "value": ""}], dry_run=False)
    assert counts["removed"] == 1 and stored(tags.skin) == {}


def test_import_needs_the_value_permissions(client, tags, db):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tagvalue"))
    client.force_login(viewer)
    assert client.get(reverse("admin:tags_tagvalue_import")).status_code == 403
