from subjects.models import Subject
from subjects.querysets import Scope
from tests.factories import SubjectFactory


def test_region_scope_covers_its_subtree_and_the_scope_subjects(world):
    member = SubjectFactory(subject_type=world.member_type, region=world.shanghai, brand=world.brand_a)
    visible = set(Subject.objects.in_scopes([Scope(region_id=world.china.id)]).values_list("id", flat=True))
    assert visible == {
        world.china.id,
        world.shanghai.id,
        world.beijing.id,
        world.clinic_a_sh.id,
        world.clinic_b_bj.id,
        member.id,
    }


def test_brand_and_region_in_one_grant_must_both_hold(world):
    in_both = SubjectFactory(subject_type=world.member_type, region=world.shanghai, brand=world.brand_a)
    SubjectFactory(subject_type=world.member_type, region=world.beijing, brand=world.brand_a)
    SubjectFactory(subject_type=world.member_type, region=world.shanghai, brand=world.brand_b)
    visible = Subject.objects.of_type("member").in_scopes(
        [Scope(brand_id=world.brand_a.id, region_id=world.shanghai.id)]
    )
    assert list(visible.values_list("id", flat=True)) == [in_both.id]


def test_grants_add_up_and_no_grant_sees_nothing(world):
    a = Subject.objects.of_type("clinic").in_scopes([Scope(brand_id=world.brand_a.id)])
    both = Subject.objects.of_type("clinic").in_scopes(
        [Scope(brand_id=world.brand_a.id), Scope(brand_id=world.brand_b.id)]
    )
    assert list(a) == [world.clinic_a_sh]
    assert set(both) == {world.clinic_a_sh, world.clinic_b_bj}
    assert not Subject.objects.in_scopes([]).exists()


def test_visibility_is_one_query(world, django_assert_num_queries):
    with django_assert_num_queries(1):
        list(
            Subject.objects.in_scopes(
                [Scope(brand_id=world.brand_a.id, region_id=world.china.id), Scope(business_line_id=world.line.id)]
            )
        )
