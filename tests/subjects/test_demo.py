"""loaddemo and demo_admin: documented sizes, wiring of scopes, determinism, idempotency."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, F, Max, Q
from rest_framework.authtoken.models import Token

from audit.models import DomainEvent
from subjects.demo.loader import DemoLoader, stored_counts
from subjects.demo.sizes import Sizes
from subjects.models import Relationship, RelationshipType, Subject, SubjectType

pytestmark = pytest.mark.django_db

MEMBERS = 100  # at --members 100 --scale 2: 200 member records, 20 second-brand records


def load(**options) -> str:
    out = StringIO()
    call_command("loaddemo", members=MEMBERS, scale=2, stdout=out, subjects_only=True, **options)
    return out.getvalue()


def snapshot() -> tuple:
    """Everything a rerun could touch: row counts and the latest write time of each table."""
    return (
        Subject.objects.count(),
        Relationship.objects.count(),
        Subject.objects.aggregate(m=Max("updated_at"))["m"],
        Relationship.objects.aggregate(m=Max("updated_at"))["m"],
        SubjectType.objects.aggregate(m=Max("updated_at"))["m"],
        RelationshipType.objects.aggregate(m=Max("updated_at"))["m"],
    )


def test_counts_are_exactly_the_documented_sizes():
    load()
    subjects, relationships = stored_counts()
    sizes = Sizes.of(members=MEMBERS, scale=2)
    assert subjects == sizes.subject_counts()
    assert relationships == sizes.relationship_counts()
    assert subjects["member"] == 200
    assert subjects["rel_served_by"] == relationships["served_by"] == 50
    assert relationships["member_of"] == 220
    assert relationships["visited"] == 220
    assert (subjects["clinic"], subjects["doctor"], subjects["consultant"], subjects["project"]) == (20, 40, 60, 15)
    assert (subjects["nutrition_user"], subjects["retail_customer"]) == (20, 20)


def test_default_sizes_at_scale_one_match_the_docstring():
    sizes = Sizes.of()
    assert sum(sizes.subject_counts().values()) == 3262
    assert sum(sizes.relationship_counts().values()) == 7297
    big = Sizes.of(scale=500)
    assert big.members == 1_000_000
    assert sum(big.relationship_counts().values()) == 3_533_564


def test_every_clinic_has_brand_region_and_business_line_and_matching_links():
    load()
    clinics = Subject.objects.of_type("clinic").select_related("brand__subject_type", "region", "business_line")
    assert clinics.count() == 20
    for clinic in clinics:
        assert clinic.brand.subject_type.code == "brand"
        assert clinic.region.parent.external_id == "CN"
        assert clinic.business_line.external_id == "aesthetics"
    links = Relationship.objects.filter(relationship_type__code__in=["in_region", "of_brand"])
    assert {(r.from_subject_id, r.to_subject_id) for r in links} == {
        *((c.id, c.region_id) for c in clinics),
        *((c.id, c.brand_id) for c in clinics),
    }
    pairs = set(clinics.values_list("brand__external_id", "region__external_id"))
    assert len(pairs) == 18  # every aesthetics brand has a clinic in each of the six regions


def test_region_tree_is_a_country_with_six_children():
    load()
    regions = Subject.objects.of_type("region")
    assert regions.get(parent=None).external_id == "CN"
    assert regions.filter(parent__external_id="CN").count() == 6


def test_members_take_the_scope_of_their_home_clinic_and_staff_work_at_one_clinic():
    load()
    visited = Relationship.objects.filter(relationship_type__code="visited", attributes__first_visit=True)
    home = Q(from_subject__brand=F("to_subject__brand"), from_subject__region=F("to_subject__region"))
    assert visited.count() == 200
    assert visited.filter(home).count() == 200
    works = Relationship.objects.filter(relationship_type__code="doctor_works_at")
    assert works.values("from_subject").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert not Relationship.objects.filter(from_slot__isnull=True, relationship_type__cardinality="n:1").exists()


def test_some_members_belong_to_two_brands_with_a_record_in_each_crm():
    load()
    two = (
        Relationship.objects.filter(relationship_type__code="member_of")
        .values("from_subject")
        .annotate(n=Count("to_subject", distinct=True))
        .filter(n=2)
    )
    assert two.count() == 20
    members = Subject.objects.of_type("member")
    for row in two[:5]:
        primary = members.get(id=row["from_subject"])
        same_person = members.filter(
            attributes__phone=primary.attributes["phone"], attributes__name=primary.attributes["name"]
        ).exclude(id=primary.id)
        other = same_person.get()
        assert other.source != primary.source and other.source.startswith("crm_")
        assert other.brand_id != primary.brand_id
        brands = set(
            Relationship.objects.filter(from_subject=primary).values_list("to_subject__external_id", flat=True)
        )
        assert {primary.brand.external_id, other.brand.external_id} <= brands


def test_served_by_relationships_are_taggable_subjects_in_the_members_scope():
    load()
    served = Relationship.objects.filter(relationship_type__code="served_by").select_related("subject", "from_subject")
    assert served.count() == 50
    for rel in served[:10]:
        assert rel.subject.subject_type.code == "rel_served_by"
        assert rel.subject.brand_id == rel.from_subject.brand_id


def test_second_run_writes_nothing():
    load()
    before = snapshot()
    last_event = DomainEvent.objects.aggregate(m=Max("id"))["m"]
    loader = DemoLoader(sizes=Sizes.of(members=MEMBERS, scale=2), log=lambda _: None)
    tally = loader.run()
    assert tally.types_written == 0
    assert tally.subjects["created"] == tally.subjects["updated"] == 0
    assert tally.relationships["created"] == tally.relationships["updated"] == 0
    assert tally.subjects["unchanged"] == 200 + 20 + 20 + 262
    assert tally.relationships["unchanged"] == sum(Sizes.of(members=MEMBERS, scale=2).relationship_counts().values())
    assert snapshot() == before
    # a bulk call that writes nothing leaves no domain event either
    assert not DomainEvent.objects.filter(id__gt=last_event).exists()


def test_rerun_command_says_nothing_was_written():
    load()
    assert "nothing written" in load()


def test_data_do_not_depend_on_the_chunk_size_and_scale_only_adds():
    load(chunk=30)
    before = snapshot()
    load(chunk=10_000)
    assert snapshot() == before
    out = StringIO()
    call_command("loaddemo", members=MEMBERS, scale=3, stdout=out, subjects_only=True)
    assert Subject.objects.of_type("member").count() == 300
    assert Subject.objects.filter(updated_at__gt=before[2], created_at__lt=before[2]).count() == 0


def test_same_seed_same_data_other_seed_other_data():
    def clinics():
        return list(Subject.objects.of_type("clinic").order_by("external_id").values_list("attributes", flat=True))

    load()
    first = clinics()
    load(seed=7)
    assert clinics() != first
    load()
    assert clinics() == first


def test_members_must_be_a_multiple_of_ten():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="multiple of 10"):
        call_command("loaddemo", members=15, stdout=StringIO())


def test_demo_admin_is_idempotent_and_prints_the_token(monkeypatch):
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    first, second = StringIO(), StringIO()
    call_command("demo_admin", stdout=first)
    call_command("demo_admin", stdout=second)
    user = get_user_model().objects.get(username="admin")
    token = Token.objects.get(user=user)
    assert user.is_superuser and user.is_staff and user.check_password("tagweave-demo")
    assert get_user_model().objects.filter(username="admin").count() == 1 and Token.objects.count() == 1
    assert "created" in first.getvalue() and "unchanged" in second.getvalue()
    for out in (first.getvalue(), second.getvalue()):
        assert f"token:    {token.key}" in out
        assert "password: tagweave-demo" in out
        assert "http://127.0.0.1:8000/admin/" in out and "http://127.0.0.1:8000/api/docs/" in out


def test_demo_admin_takes_the_password_from_the_environment(monkeypatch):
    call_command("demo_admin", stdout=StringIO())
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "s3cret-demo")
    out = StringIO()
    call_command("demo_admin", stdout=out)
    assert get_user_model().objects.get(username="admin").check_password("s3cret-demo")
    assert "updated" in out.getvalue()
