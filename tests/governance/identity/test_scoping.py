"""SubjectScope rows of OneIDs: every brand holding a record sees the person, and only while it does."""

from __future__ import annotations

import pytest

from identity.models import SourceRecord
from identity.resolution.batch import resolve_all
from identity.scoping import ORIGIN, sync_oneid_scopes
from identity.services import oneid_merge, oneid_split
from subjects.access import visible_subjects
from subjects.models import SubjectScope
from tests.identity.helpers import push

from .conftest import make_user

pytestmark = pytest.mark.django_db


def scope_rows() -> set[tuple[int, int]]:
    return set(SubjectScope.objects.filter(origin=ORIGIN).values_list("subject_id", "brand_id"))


def test_resolution_gives_each_brand_of_a_record_a_scope_row(world, person):
    assert scope_rows() == {(person.oneid, world.brand_a.id), (person.oneid, world.brand_b.id)}
    for brand in (world.brand_a, world.brand_b):
        user = make_user("view_oneid", brands=[brand])
        assert list(visible_subjects(user).filter(id=person.oneid).values_list("id", flat=True)) == [person.oneid]
    outsider = make_user("view_oneid", brands=[world.clinic_a_sh])  # a grant naming no real brand of the person
    assert not visible_subjects(outsider).filter(id=person.oneid).exists()


def test_split_removes_the_other_brands_visibility(world, person):
    kept, new = oneid_split(actor=None, oneid=person.oneid, records=[person.record_b.id], reason="two people")
    assert scope_rows() == {(kept, world.brand_a.id), (new, world.brand_b.id)}
    operator_b = make_user("view_oneid", brands=[world.brand_b])
    assert set(visible_subjects(operator_b).filter(id__in=[kept, new]).values_list("id", flat=True)) == {new}


def test_merge_adds_the_other_brand(world, sources):
    push(("crm_a", "A1", {"name": "X", "phone": "13911110002"}), ("crm_b", "B1", {"name": "Y", "phone": "13911110003"}))
    a, b = (SourceRecord.objects.get(external_id=e).assigned_oneid_id for e in ("A1", "B1"))
    assert scope_rows() == {(a, world.brand_a.id), (b, world.brand_b.id)}
    survivor = oneid_merge(actor=None, oneids=[a, b], reason="same person")
    assert scope_rows() == {(survivor, world.brand_a.id), (survivor, world.brand_b.id)}


def test_group_level_records_give_no_brand_scope(world, sources):
    push(("wecom", "W1", {"name": "Z", "phone": "13911110004"}))
    assert scope_rows() == set()


def test_batch_resynchronises_everything_and_a_rerun_writes_nothing(world, person):
    SubjectScope.objects.filter(origin=ORIGIN).delete()
    SubjectScope.objects.create(subject_id=person.oneid, brand=world.clinic_b_bj, origin=ORIGIN)  # stale row
    resolve_all()
    assert scope_rows() == {(person.oneid, world.brand_a.id), (person.oneid, world.brand_b.id)}
    assert sync_oneid_scopes() == (0, 0)
    assert sync_oneid_scopes([person.oneid]) == (0, 0)
    assert sync_oneid_scopes([]) == (0, 0)


def test_rows_of_other_origins_are_left_alone(world, person):
    SubjectScope.objects.create(subject_id=person.oneid, brand=world.clinic_b_bj, origin="manual")
    sync_oneid_scopes()
    assert SubjectScope.objects.filter(origin="manual").count() == 1
