import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from identity.models import SourceRecord, SourceSystem

from .helpers import oneid_of, partition, push

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_oneid_page_shows_records_links_history_and_splits(admin_client, sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("wecom", "W1", {"email": "fang@qq.com"}))
    oneid = oneid_of("crm_a", "A1")
    page = admin_client.get(f"/admin/identity/oneid/{oneid}/change/?unmask=1")  # values are masked by default
    assert page.status_code == 200
    html = page.content.decode()
    assert "identifier:email" in html and "fang@qq.com" in html and "Merge history" in html
    w1 = SourceRecord.objects.get(external_id="W1").id
    response = admin_client.post(f"/admin/identity/oneid/{oneid}/split/", {"records": [w1], "reason": "two people"})
    assert response.status_code == 302
    assert len(partition()) == 2


def test_admin_lists(admin_client, sources):
    push(("crm_a", "A1", {"name": "王芳"}))
    for url in (
        "sourcerecord",
        "oneid",
        "mergeevent",
        "sourcesystem",
        "identifiertype",
        "blockedvalue",
        "compositekey",
        "matchsuggestion",
    ):
        assert admin_client.get(f"/admin/identity/{url}/").status_code == 200, url


def test_merge_action(admin_client, sources):
    push(("crm_a", "A1", {"name": "王芳"}), ("crm_b", "B1", {"name": "Fang"}))
    ids = [oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")]
    response = admin_client.post("/admin/identity/oneid/", {"action": "merge_selected", "_selected_action": ids})
    assert response.status_code == 302
    assert len(partition()) == 1


def test_source_system_form_shows_rule_errors(admin_client, sources, world):
    world.member_type.attribute_schema = {"type": "object", "required": ["name"]}
    world.member_type.save()
    data = {"code": "pos", "name": "POS", "kind": "pos", "trust_rank": 50, "subject_type": world.member_type.id}
    response = admin_client.post("/admin/identity/sourcesystem/add/", data)
    assert response.status_code == 200 and "must not require attributes" in response.content.decode()
    assert not SourceSystem.objects.filter(code="pos").exists()


def csv_file(text):
    return SimpleUploadedFile("records.csv", text.encode(), content_type="text/csv")


def test_csv_import_is_all_or_nothing(admin_client, sources):
    bad = 'source,external_id,raw\ncrm_a,A1,"{""name"": ""王芳"", ""phone"": ""13812345678""}"\ncrm_a,A2,"{""phone"": ""12""}"\n'
    response = admin_client.post(
        "/admin/identity/sourcerecord/import/", {"import_file": csv_file(bad), "format": "0", "resource": "0"}
    )
    assert response.status_code == 200
    assert "phone is not a valid phone number" in response.content.decode()
    assert SourceRecord.objects.count() == 0
    good = 'source,external_id,raw\ncrm_a,A1,"{""name"": ""王芳"", ""phone"": ""13812345678""}"\ncrm_b,B1,"{""name"": ""王芳"", ""phone"": ""13812345678""}"\n'
    response = admin_client.post(
        "/admin/identity/sourcerecord/import/", {"import_file": csv_file(good), "format": "0", "resource": "0"}
    )
    assert response.status_code == 200
    assert SourceRecord.objects.count() == 0  # the preview is a dry run
    confirm = response.context["confirm_form"].initial
    response = admin_client.post("/admin/identity/sourcerecord/process_import/", confirm)
    assert response.status_code == 302
    assert partition() == {frozenset({("crm_a", "A1"), ("crm_b", "B1")})}
