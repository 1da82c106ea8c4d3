import pytest

from audit.models import DomainEvent
from common.errors import ServiceError
from identity.models import Identifier, MergeEvent, OneId, SourceRecord
from subjects.models import Subject

from .helpers import oneid_of, partition, push

pytestmark = pytest.mark.django_db


def test_same_name_and_phone_in_two_brand_crms_is_one_oneid(sources):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "138 1234 5678"}),
        ("crm_b", "B1", {"name": "王芳", "phone": "+86 13812345678"}),
    )
    assert partition() == {frozenset({("crm_a", "A1"), ("crm_b", "B1")})}
    subject = Subject.objects.get(id=oneid_of("crm_a", "A1"))
    assert subject.source == "oneid" and subject.subject_type == sources.person
    assert subject.attributes == {"name": "王芳", "phone": "138 1234 5678"}  # crm_a is more trusted
    assert subject.brand_id is None
    assert list(SourceRecord.objects.order_by("id").values_list("brand_id", flat=True)) == [
        sources.world.brand_a.id,
        sources.world.brand_b.id,
    ]


def test_family_of_five_sharing_a_phone_stays_five_people(sources):
    names = ["王伟", "王芳", "王娜", "王敏", "王静"]
    push(*[("crm_a", f"F{i}", {"name": n, "phone": "13900001111"}) for i, n in enumerate(names)])
    assert len(partition()) == 5


def test_shared_name_and_phone_over_the_limit_stops_linking(sources):
    push(*[("crm_a", f"S{i}", {"name": "李明", "phone": "13900002222"}) for i in range(3)])
    assert len(partition()) == 1
    result = push(("crm_b", "S4", {"name": "李明", "phone": "13900002222"}))
    assert result.results[0].warnings == [
        {"type": "name_phone", "value": "李明 + +8613900002222", "reason": "over_limit: held by 4 records"}
    ]
    assert len(partition()) == 4  # a 4th holder: over max_shared_records=3, the value links nobody
    assert MergeEvent.objects.filter(kind="split").count() == 1


def test_junk_phone_never_merges(sources):
    push(
        ("crm_a", "J1", {"name": "张三", "phone": "13800138000"}),
        ("crm_b", "J2", {"name": "张三", "phone": "138-0013-8000"}),
        ("crm_a", "J3", {"name": "张三", "phone": "00000000000"}),
        ("crm_b", "J4", {"name": "张三", "phone": "00000000000"}),
        ("crm_a", "J5", {"email": "null"}),
        ("crm_b", "J6", {"email": "NULL"}),
    )
    assert len(partition()) == 6
    assert set(Identifier.objects.filter(identifier_type__code="phone").values_list("status", flat=True)) == {"blocked"}


def test_blocked_values_are_reported(sources):
    result = push(("crm_a", "J1", {"name": "张三", "phone": "13800138000"}))
    assert result.results[0].warnings == [{"type": "phone", "value": "13800138000", "reason": "blocked"}]


def test_openids_of_different_apps_never_link(sources):
    push(("oa_a", "o1", {"openid": "oXYZ"}), ("mp_b", "o1", {"openid": "oXYZ"}))
    assert len(partition()) == 2


def test_same_unionid_across_apps_links(sources):
    push(("oa_a", "o1", {"openid": "oA", "unionid": "uX"}), ("mp_b", "o2", {"openid": "oB", "unionid": "uX"}))
    assert len(partition()) == 1


def test_two_unionids_never_share_a_oneid(sources):
    push(
        ("oa_a", "o1", {"unionid": "u1", "email": "fang@qq.com"}),
        ("mp_b", "o2", {"unionid": "u2", "email": "fang@qq.com"}),
    )
    assert len(partition()) == 2


def test_record_without_identifiers_gets_its_own_oneid(sources):
    push(("shop", "X1", {"note": "walk-in"}), ("shop", "X2", {}))
    assert len(partition()) == 2
    assert OneId.objects.filter(status="active").count() == 2


def test_repush_unchanged_writes_nothing(sources):
    push(("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}))
    events = DomainEvent.objects.count()
    result = push(("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}))
    assert result.counts == {"created": 0, "updated": 0, "unchanged": 1}
    assert DomainEvent.objects.count() == events


def test_changed_record_is_re_resolved(sources):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}),
        ("crm_b", "B1", {"name": "王芳", "phone": "13812345678"}),
    )
    assert len(partition()) == 1
    result = push(("crm_b", "B1", {"name": "王芳", "phone": "13987654321"}))
    assert result.counts["updated"] == 1
    assert len(partition()) == 2
    split = MergeEvent.objects.get(kind="split")
    assert len(split.records) == 2


def test_bridging_record_merges_two_oneids_with_why(sources):
    push(("wecom", "W1", {"external_userid": "wmA", "email": "a@qq.com"}), ("oa_a", "O1", {"openid": "oA"}))
    assert len(partition()) == 2
    push(("crm_a", "C1", {"external_userid": "wmA", "openid": "x", "email": "a@qq.com", "member_id": "M1"}))
    push(("oa_a", "O1", {"openid": "oA", "email": "a@qq.com"}))
    assert len(partition()) == 1
    event = MergeEvent.objects.get(kind="merge")
    assert event.rule == "identifier:email"
    assert event.evidence[0]["value"] == "a@qq.com"


def test_doctors_link_only_with_doctors(sources):
    push(("hr", "D1", {"email": "dr.li@clinic.cn"}), ("crm_a", "P1", {"email": "dr.li@clinic.cn"}))
    assert len(partition()) == 2
    push(("hr", "D2", {"email": "Dr.Li@clinic.cn "}))
    assert oneid_of("hr", "D1") == oneid_of("hr", "D2") != oneid_of("crm_a", "P1")
    assert Subject.objects.get(id=oneid_of("hr", "D1")).subject_type == sources.world.doctor_type


def test_malformed_values_reject_the_batch_per_field(sources):
    with pytest.raises(ServiceError) as exc:
        push(
            ("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}),
            ("crm_a", "A2", {"phone": "12345"}),
            ("nope", "A3", {}),
            ("crm_a", "A4", {"email": ["ok@qq.com", "bad"]}),
        )
    fields = [(e.index, e.field) for e in exc.value.errors]
    assert fields == [(1, "raw.phone"), (2, "source"), (3, "raw.email.1")]
    assert SourceRecord.objects.count() == 0
