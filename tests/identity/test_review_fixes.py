"""Reproductions of the review findings (each failed before its fix)."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from common.errors import ConflictError, ServiceError
from identity.extract import CompositeRule, Rules, SourceScope, TypeRule, extract
from identity.models import BlockedValue, IdentifierType, MatchSuggestion, OneId, SourceRecord
from identity.resolution.batch import resolve_all
from identity.services import oneid_merge, oneid_split
from tests.factories import UserFactory

from .helpers import oneid_of, partition, push
from .test_api import client_with

pytestmark = pytest.mark.django_db


# 1. batch = incremental when a per-OneID-limited type also has a shared limit
def test_over_limit_unionid_does_not_count_toward_max_per_oneid(sources):
    assert IdentifierType.objects.filter(code="wechat_unionid").update(max_shared_records=2) == 1
    push(("oa_a", "X1", {"unionid": "U2", "email": "e@qq.com"}))
    push(("oa_a", "X2", {"unionid": "U2"}))
    push(("oa_a", "X3", {"unionid": "U2"}))
    push(("mp_b", "A1", {"unionid": "U1", "email": "e@qq.com"}))
    incremental = partition()
    assert oneid_of("oa_a", "X1") == oneid_of("mp_b", "A1")  # U2 links nobody: only U1 counts
    resolve_all()
    assert partition() == incremental


# 3. blocked patterns: each compiled on its own
def test_blocked_patterns_with_backreference_and_same_group_name(sources):
    BlockedValue.objects.create(pattern=r"(?P<d>\d)(?P=d){10}")
    BlockedValue.objects.create(pattern=r"(?P<d>[a-z]+)@(?P=d)\.com")
    BlockedValue.objects.create(pattern=r"(\w)\1\1@qq\.com")
    result = push(
        ("crm_a", "B1", {"email": "aaa@qq.com"}),
        ("crm_a", "B2", {"email": "bob@bob.com"}),
        ("crm_a", "B3", {"email": "bob@alice.com"}),
    )
    reasons = [[w["reason"] for w in r.warnings] for r in result.results]
    assert reasons == [["blocked"], ["blocked"], []]


# 4. values longer than the column
def test_normalized_value_longer_than_the_column_is_a_field_error(sources):
    IdentifierType.objects.create(code="note", name="Note", normalizer="text", fields=["note"])
    long_text = "ﬀ" * 300  # 300 characters, 600 after NFKC
    with pytest.raises(ServiceError) as caught:
        push(("crm_a", "L0", {"name": "x"}), ("crm_a", "L1", {"note": long_text}))
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "raw.note")]
    assert SourceRecord.objects.count() == 0


def test_composite_longer_than_the_column_is_a_field_error(sources):
    with pytest.raises(ServiceError) as caught:
        push(("crm_a", "L1", {"name": "名" * 100 + "x" * 400, "phone": "13912345678"}))
    assert [(e.index, e.field) for e in caught.value.errors] == [(0, "raw.name")]


# 5. lone surrogates and NUL
def test_lone_surrogate_in_external_id_is_a_field_error(sources):
    with pytest.raises(ServiceError) as caught:
        push(("crm_a", "ok", {"name": "x"}), ("crm_a", "ab\ud800", {"name": "y"}))
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "external_id")]


def test_lone_surrogate_in_raw_is_a_field_error(sources):
    with pytest.raises(ServiceError) as caught:
        push(("crm_a", "ok", {"name": "x\ud800"}))
    assert [(e.index, e.field) for e in caught.value.errors] == [(0, "raw")]


def test_nul_in_resolve_parameters_is_400(api, sources):
    for query in ("type=a%00b&value=1", "type=phone&value=139%0012345678", "type=phone&value=1&scope=a%00"):
        response = api.get(f"/api/v1/oneids/resolve/?{query}")
        assert response.status_code == 400, (query, response.content)


# 6. operators' decisions wait for a batch run
@pytest.mark.postgres
@pytest.mark.parametrize("operation", ["split", "merge"])
def test_split_and_merge_first_take_the_records_table_lock(sources, operation):
    push(("crm_a", "A1", {"email": "a@qq.com"}), ("wecom", "W1", {"email": "a@qq.com"}), ("crm_b", "B1", {}))
    a1, w1, b1 = oneid_of("crm_a", "A1"), SourceRecord.objects.get(external_id="W1").id, oneid_of("crm_b", "B1")
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        if operation == "split":
            oneid_split(actor=None, oneid=a1, records=[w1])
        else:
            oneid_merge(actor=None, oneids=[a1, b1])
    first = next(s for s in statements if "identity_sourcerecord" in s or "identity_oneid" in s)
    assert first == "LOCK TABLE identity_sourcerecord IN ROW EXCLUSIVE MODE"


# 7. a merge of a OneID retired meanwhile is a conflict
def test_merge_of_a_retired_oneid_is_a_conflict(sources):
    push(("crm_a", "A", {}), ("crm_b", "B", {}), ("wecom", "C", {}))
    a, b, c = (oneid_of(s, e) for s, e in (("crm_a", "A"), ("crm_b", "B"), ("wecom", "C")))
    survivor = oneid_merge(actor=None, oneids=[a, b])
    retired = b if survivor == a else a
    with pytest.raises(ConflictError):
        oneid_merge(actor=None, oneids=[retired, c])


# 8. records and identifier values need view_sourcerecord
def _two_records(sources):
    push(("crm_a", "A1", {"name": "王芳", "email": "fang@qq.com"}), ("wecom", "W1", {"email": "fang@qq.com"}))
    return oneid_of("crm_a", "A1")


def test_view_oneid_alone_does_not_see_records_or_identifiers(sources):
    oneid = _two_records(sources)
    client = client_with("view_oneid")
    for url in (f"/api/v1/oneids/{oneid}/", "/api/v1/oneids/resolve/?type=email&value=fang@qq.com"):
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        detail = body["matches"][0] if "matches" in body else body
        assert detail["id"] == oneid
        assert "records" not in detail and "identifiers" not in detail and "links" not in detail
        assert "fang@qq.com" not in response.content.decode().replace(detail["attributes"].get("email", "-"), "")


def test_view_sourcerecord_sees_records_and_identifiers(sources):
    oneid = _two_records(sources)
    body = client_with("view_oneid", "view_sourcerecord").get(f"/api/v1/oneids/{oneid}/").json()
    assert len(body["records"]) == 2 and body["identifiers"] and body["links"]


def test_no_view_oneid_is_403(sources):
    oneid = _two_records(sources)
    client = client_with("view_sourcerecord")
    assert client.get(f"/api/v1/oneids/{oneid}/").status_code == 403
    assert client.get("/api/v1/oneids/resolve/?type=email&value=fang@qq.com").status_code == 403


def test_split_and_merge_need_change_oneid(sources):
    oneid = _two_records(sources)
    push(("crm_b", "B1", {}))
    client = client_with("view_oneid", "view_sourcerecord")
    w1 = SourceRecord.objects.get(external_id="W1").id
    assert client.post(f"/api/v1/oneids/{oneid}/split/", {"records": [w1]}, format="json").status_code == 403
    body = {"oneids": [oneid, oneid_of("crm_b", "B1")]}
    assert client.post("/api/v1/oneids/merge/", body, format="json").status_code == 403
    assert len(partition()) == 2


# 2. admin accept needs change_oneid as well
def _staff(*codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=[*codenames, "all_scopes"]))
    return user


def _suggestion(sources):
    push(("crm_a", "A1", {"name": "王芳"}), ("crm_b", "B1", {"name": "王芳"}))
    return MatchSuggestion.objects.create(
        oneid_a_id=oneid_of("crm_a", "A1"), oneid_b_id=oneid_of("crm_b", "B1"), score=90, evidence={}
    )


@pytest.mark.parametrize(
    ("codenames", "merged"),
    [
        (["view_matchsuggestion", "change_matchsuggestion"], False),
        (["view_matchsuggestion", "change_matchsuggestion", "change_oneid"], True),
    ],
)
def test_admin_accept_needs_change_oneid(client, sources, codenames, merged):
    suggestion = _suggestion(sources)
    client.force_login(_staff(*codenames))
    client.post(
        "/admin/identity/matchsuggestion/",
        {"action": "accept_selected", "_selected_action": [suggestion.id]},
    )
    assert (len(partition()) == 1) is merged
    suggestion.refresh_from_db()
    assert (suggestion.status == "accepted") is merged


def test_admin_merge_action_needs_change_oneid(client, sources):
    push(("crm_a", "A1", {}), ("crm_b", "B1", {}))
    client.force_login(_staff("view_oneid"))
    ids = [oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")]
    client.post("/admin/identity/oneid/", {"action": "merge_selected", "_selected_action": ids})
    assert len(partition()) == 2
    assert OneId.objects.filter(status="active").count() == 2


def test_admin_oneid_page_hides_records_without_view_sourcerecord(client, sources):
    oneid = _two_records(sources)
    client.force_login(_staff("view_oneid"))
    page = client.get(f"/admin/identity/oneid/{oneid}/change/")
    assert page.status_code == 200
    assert "W1" not in page.content.decode()


# 11. composite combinations beyond the cap are reported
def test_composite_combinations_beyond_the_cap_are_reported():
    name = TypeRule(1, "name", "text", ("name",), False, 1, None, None, "none")
    phone = TypeRule(2, "phone", "phone", ("phone",), False, 1, None, None, "none")
    rules = Rules([name, phone], [CompositeRule(9, "name_phone", (1, 2), 1, 3)], {}, {})
    raw = {"name": [f"n{i}" for i in range(5)], "phone": [f"139000000{i:02d}" for i in range(5)]}
    notes = []
    identifiers, problems = extract(raw, SourceScope("crm", 1, "", ""), rules, notes)
    assert problems == []
    assert sum(1 for e in identifiers if e.composite_id == 9) == 20
    assert notes == [
        {"type": "name_phone", "value": "", "reason": "too_many_combinations: 25, only the first 20 are used"}
    ]


def test_capped_combinations_are_a_warning_of_the_item(sources):
    raw = {"name": [f"名{i}" for i in range(5)], "phone": [f"1390000{i:04d}" for i in range(5)]}
    result = push(("crm_a", "C1", raw), ("crm_a", "C2", {"name": "x"}))
    assert [w["reason"] for w in result.results[0].warnings] == [
        "too_many_combinations: 25, only the first 20 are used"
    ]
    assert result.results[1].warnings == []
