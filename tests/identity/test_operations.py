import pytest

from common.errors import ConflictError, ServiceError
from identity.models import DoNotLink, MergeEvent, OneId, SourceRecord
from identity.resolution.batch import resolve_all
from identity.services import oneid_merge, oneid_split
from subjects.models import Relationship, RelationshipType

from .helpers import oneid_of, partition, push

pytestmark = pytest.mark.django_db


def record(source, ext):
    return SourceRecord.objects.get(source__code=source, external_id=ext).id


@pytest.fixture
def merged(sources):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "13812345678", "email": "fang@qq.com"}),
        ("wecom", "W1", {"external_userid": "wm1", "email": "fang@qq.com"}),
        ("crm_b", "B1", {"name": "王芳", "phone": "13812345678"}),
        ("oa_a", "O1", {"openid": "o1", "external_userid": "wm1"}),
    )
    assert len(partition()) == 1
    return oneid_of("crm_a", "A1")


def test_split_is_exact_recorded_and_survives_re_resolution(merged, admin_user):
    kept, new = oneid_split(
        actor=admin_user, oneid=merged, records=[record("wecom", "W1"), record("oa_a", "O1")], reason="two people"
    )
    expected = {
        frozenset({("crm_a", "A1"), ("crm_b", "B1")}),
        frozenset({("wecom", "W1"), ("oa_a", "O1")}),
    }
    assert partition() == expected
    assert kept == merged and new != merged
    event = MergeEvent.objects.get(kind="manual_split")
    assert event.actor == admin_user and event.others == [new]
    assert DoNotLink.objects.count() == 1
    result = resolve_all()
    assert (result.moved, result.merges) == (0, 0)
    push(("crm_a", "A1", {"name": "王芳", "phone": "13812345678", "email": "fang@qq.com", "city": "上海"}))
    push(("shop", "S1", {"email": "fang@qq.com"}))  # a new record bridging both sides joins one of them
    assert len(partition()) == 2


def test_split_keeps_an_unlinked_side_together(merged, admin_user):
    # crm_b's B1 and wecom's W1 are linked only through A1; splitting both off keeps them one OneID
    oneid_split(actor=admin_user, oneid=merged, records=[record("crm_b", "B1"), record("wecom", "W1")])
    assert frozenset({("crm_b", "B1"), ("wecom", "W1")}) in partition()
    resolve_all()
    assert frozenset({("crm_b", "B1"), ("wecom", "W1")}) in partition()


def test_split_refuses_bad_input(merged, admin_user):
    with pytest.raises(ServiceError):
        oneid_split(actor=admin_user, oneid=merged, records=[])
    with pytest.raises(ServiceError):
        oneid_split(actor=admin_user, oneid=merged, records=list(SourceRecord.objects.values_list("id", flat=True)))
    with pytest.raises(ServiceError):
        oneid_split(actor=admin_user, oneid=merged, records=[10**9])


def test_manual_merge_then_split_then_merge_again(sources, admin_user):
    push(("crm_a", "A1", {"name": "王芳"}), ("crm_b", "B1", {"name": "Fang Wang"}))
    a, b = oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")
    survivor = oneid_merge(actor=admin_user, oneids=[a, b], reason="same passport")
    assert len(partition()) == 1 and survivor in (a, b)
    assert MergeEvent.objects.get(kind="manual_merge").actor == admin_user
    assert OneId.objects.get(subject_id=({a, b} - {survivor}).pop()).status == "retired"
    resolve_all()
    assert len(partition()) == 1
    oneid_split(actor=admin_user, oneid=survivor, records=[record("crm_b", "B1")])
    assert len(partition()) == 2
    resolve_all()
    assert len(partition()) == 2
    oneid_merge(actor=admin_user, oneids=[oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")])
    assert len(partition()) == 1 and DoNotLink.objects.count() == 0


def test_manual_merge_refuses_two_unionids(sources, admin_user):
    push(("oa_a", "O1", {"unionid": "u1"}), ("mp_b", "O2", {"unionid": "u2"}))
    with pytest.raises(ConflictError):
        oneid_merge(actor=admin_user, oneids=[oneid_of("oa_a", "O1"), oneid_of("mp_b", "O2")])
    assert len(partition()) == 2


def test_relationships_follow_their_records(merged, admin_user, sources):
    world = sources.world
    person = sources.person
    visited = RelationshipType.objects.create(
        code="person_visited", name="Visited", from_type=person, to_type=world.clinic_type
    )
    Relationship.objects.create(
        relationship_type=visited,
        from_subject_id=merged,
        to_subject=world.clinic_a_sh,
        source="wecom",
        external_id="W1-V1",
    )
    Relationship.objects.create(
        relationship_type=visited,
        from_subject_id=merged,
        to_subject=world.clinic_b_bj,
        source="crm_a",
        external_id="A1-V1",
    )
    kept, new = oneid_split(actor=admin_user, oneid=merged, records=[record("wecom", "W1"), record("oa_a", "O1")])
    assert Relationship.objects.get(external_id="W1-V1").from_subject_id == new
    assert Relationship.objects.get(external_id="A1-V1").from_subject_id == kept
    oneid_merge(actor=admin_user, oneids=[kept, new])
    survivor = oneid_of("crm_a", "A1")
    assert set(Relationship.objects.values_list("from_subject_id", flat=True)) == {survivor}
