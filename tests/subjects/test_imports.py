import csv
import io

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import DomainEvent
from subjects import imports
from subjects.models import Relationship, Subject
from tests.factories import SubjectFactory, UserFactory

SUBJECTS_CSV = """type,source,external_id,display_name,attributes,business_line,brand,region,parent
region,hq,GZ,Guangzhou,,,,,hq:CN
member,crm,M1,Mei,"{""skin_type"": ""dry""}",hq:aesthetics,hq:A,hq:GZ,
member,crm,M2,Lei,,,{brand_b},,
"""


@pytest.fixture
def client(client, admin_user):
    client.force_login(admin_user)
    return client


def subjects_csv(world) -> str:
    return SUBJECTS_CSV.replace("{brand_b}", str(world.brand_b.pk))


def upload(client, model: str, text: str):
    """The first step of the admin import: a dry run that shows the preview or the errors."""
    file = SimpleUploadedFile("data.csv", text.encode(), content_type="text/csv")
    return client.post(reverse(f"admin:subjects_{model}_import"), {"format": "0", "resource": "0", "import_file": file})


def confirm(client, model: str, preview):
    form = preview.context["confirm_form"]
    data = {name: form.initial[name] for name in ("import_file_name", "original_file_name", "format", "resource")}
    return client.post(reverse(f"admin:subjects_{model}_process_import"), data)


def import_csv(client, model: str, text: str):
    preview = upload(client, model, text)
    assert "confirm_form" in preview.context, preview.context["result"].invalid_rows
    return confirm(client, model, preview)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def row_errors(response) -> list[tuple[int, dict]]:
    return [(row.number, row.error_dict) for row in response.context["result"].invalid_rows]


def test_preview_writes_nothing_and_confirm_imports(client, world):
    before = Subject.objects.count()
    preview = upload(client, "subject", subjects_csv(world))
    assert preview.status_code == 200
    assert [row.import_type for row in preview.context["result"].rows] == ["new", "new", "new"]
    assert Subject.objects.count() == before
    assert not DomainEvent.objects.exists()

    response = confirm(client, "subject", preview)
    assert response.status_code == 302
    assert messages_of(response) == ["Import finished: 3 created, 0 updated, 0 unchanged subjects."]
    assert Subject.objects.count() == before + 3
    mei = Subject.objects.get(source="crm", external_id="M1")
    guangzhou = Subject.objects.get(source="hq", external_id="GZ")
    assert (mei.attributes, mei.brand_id, mei.region_id, mei.business_line_id) == (
        {"skin_type": "dry"},
        world.brand_a.pk,
        guangzhou.pk,
        world.line.pk,
    )
    assert guangzhou.parent_id == world.china.pk
    assert Subject.objects.get(external_id="M2").brand_id == world.brand_b.pk
    event = DomainEvent.objects.get(action="subjects.csv_imported")
    assert (event.row_count, event.actor.username) == (3, "admin")


def test_reimporting_the_same_file_changes_nothing(client, world):
    import_csv(client, "subject", subjects_csv(world))
    stamps = dict(Subject.objects.values_list("id", "updated_at"))
    preview = upload(client, "subject", subjects_csv(world))
    assert [row.import_type for row in preview.context["result"].rows] == ["skip", "skip", "skip"]
    response = confirm(client, "subject", preview)
    assert messages_of(response) == ["Import finished: 0 created, 0 updated, 3 unchanged subjects."]
    assert dict(Subject.objects.values_list("id", "updated_at")) == stamps
    assert DomainEvent.objects.filter(action="subjects.csv_imported").count() == 1  # the re-import wrote nothing


def test_one_bad_row_imports_nothing_and_is_reported(client, world):
    before = Subject.objects.count()
    text = subjects_csv(world) + 'member,crm,M3,Bad,"{""spend"": -5}",,,,\n'
    response = upload(client, "subject", text)
    assert "confirm_form" not in response.context
    ((number, errors),) = row_errors(response)
    assert number == 4
    assert list(errors) == ["attributes.spend"]
    assert "attributes.spend" in response.content.decode()
    assert Subject.objects.count() == before
    assert not DomainEvent.objects.exists()


def test_cell_and_service_errors_are_reported_together(client, world):
    text = (
        "type,source,external_id,display_name,attributes,brand\n"
        "member,crm,M1,Mei,{not json,\n"
        "member,crm,M2,Lei,,hq:NOPE\n"
        "nurse,crm,N1,Nina,,\n"
        "member,crm,M1,Again,,\n"
    )
    response = upload(client, "subject", text)
    assert row_errors(response) == [
        (1, {"attributes": ["Not valid JSON: Expecting property name enclosed in double quotes (column 2)."]}),
        (2, {"brand": ["No brand with source 'hq' and external_id 'NOPE'."]}),
        (3, {"type": ["Unknown subject type 'nurse'."]}),
        (4, {"external_id": ["Duplicate of row 1 (same type, source and external_id)."]}),
    ]
    assert not Subject.objects.filter(source="crm").exists()


def test_a_bad_row_in_a_later_chunk_rolls_back_earlier_chunks(client, world, monkeypatch):
    monkeypatch.setattr(imports, "CHUNK", 2)
    rows = "".join(f"member,crm,M{i},Member {i},,,,,\n" for i in range(5))
    header = "type,source,external_id,display_name,attributes,business_line,brand,region,parent\n"
    response = upload(client, "subject", header + rows + "member,crm,M9,,,,hq:CN,,\n")
    assert row_errors(response) == [(6, {"brand": ["No brand with source 'hq' and external_id 'CN'."]})]
    assert not Subject.objects.filter(source="crm").exists()
    assert not DomainEvent.objects.exists()


def test_chunks_see_the_rows_of_earlier_chunks(client, world, monkeypatch):
    monkeypatch.setattr(imports, "CHUNK", 1)
    text = "type,source,external_id,display_name,brand\nbrand,hq,C,Brand C,\nmember,crm,M1,Mei,hq:C\n"
    import_csv(client, "subject", text)
    assert Subject.objects.get(external_id="M1").brand == Subject.objects.get(external_id="C")
    events = DomainEvent.objects.filter(action="subjects.csv_imported")
    assert events.count() == 2
    assert len({e.correlation_id for e in events}) == 1  # one file, one operation


def test_relationship_import_by_keys_and_ids(client, world):
    member = SubjectFactory(subject_type=world.member_type, source="crm", external_id="M1")
    doctor = SubjectFactory(subject_type=world.doctor_type, source="hr", external_id="D1")
    text = (
        "type,source,external_id,from,to,weight,valid_from,valid_to,attributes\n"
        f"visited,pos,V1,crm:M1,{world.clinic_a_sh.pk},2.5,2024-01-01,,\n"
        "works_at,hr,W1,hr:D1,hq:C1,,,,\n"
    )
    response = import_csv(client, "relationship", text)
    assert messages_of(response) == ["Import finished: 2 created, 0 updated, 0 unchanged relationships."]
    visit = Relationship.objects.get(external_id="V1")
    assert (visit.from_subject_id, visit.to_subject_id, visit.weight, visit.valid_from.date().isoformat()) == (
        member.pk,
        world.clinic_a_sh.pk,
        2.5,
        "2024-01-01",
    )
    works = Relationship.objects.get(external_id="W1")
    assert (works.from_subject_id, works.to_subject_id, works.weight) == (doctor.pk, world.clinic_a_sh.pk, 1.0)
    assert DomainEvent.objects.get(action="relationships.csv_imported").row_count == 2


def test_relationship_import_with_a_bad_row_imports_nothing(client, world):
    SubjectFactory(subject_type=world.member_type, source="crm", external_id="M1")
    text = (
        "type,source,external_id,from,to,weight,valid_from,valid_to,attributes\n"
        "visited,pos,V1,crm:M1,hq:C1,1,,,\n"
        "visited,pos,V2,crm:M1,hq:C2,heavy,,,\n"
        "visited,pos,V3,crm:M1,hq:C2,1,2024-02-01,2024-01-01,\n"
    )
    response = upload(client, "relationship", text)
    assert row_errors(response) == [
        (2, {"weight": ["Must be a number."]}),
        (3, {"valid_to": ["Must not be before valid_from."]}),
    ]
    assert not Relationship.objects.exists()


def test_export_uses_the_import_columns_and_round_trips(client, world):
    import_csv(client, "subject", subjects_csv(world))
    response = client.post(
        reverse("admin:subjects_subject_export") + "?unmask=1&subject_type__id__exact=" + str(world.member_type.pk),
        {"format": "0", "resource": "0", **{f"subjectresource_{c}": "on" for c in imports.SUBJECT_COLUMNS}},
    )
    assert response.status_code == 200
    text = response.content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(imports.SUBJECT_COLUMNS)
    assert [row["external_id"] for row in rows] == ["M2", "M1"]  # by id: M1 waited for its region
    assert rows[1] == {
        "type": "member",
        "source": "crm",
        "external_id": "M1",
        "display_name": "Mei",
        "attributes": '{"skin_type": "dry"}',
        "business_line": "hq:aesthetics",
        "brand": "hq:A",
        "region": "hq:GZ",
        "parent": "",
    }
    preview = upload(client, "subject", text)
    assert [row.import_type for row in preview.context["result"].rows] == ["skip", "skip"]


def test_import_needs_add_and_change_permission(client, world):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_subject", "change_subject"]))
    client.force_login(viewer)
    assert client.get(reverse("admin:subjects_subject_import")).status_code == 403
    assert client.get(reverse("admin:subjects_subject_export")).status_code == 200
