"""The one scope function: grants to users and groups, extra memberships, write targets."""

import pytest
from django.contrib.auth.models import Group, Permission

from subjects.access import access_for, forget_access, region_ancestors, uncovered_targets, visible_subjects
from subjects.models import ScopeGrant, SubjectScope
from tests.factories import SubjectFactory, UserFactory


def _ids(queryset):
    return set(queryset.values_list("id", flat=True))


def test_no_grant_sees_nothing_and_superuser_sees_everything(world):
    nobody = UserFactory()
    root = UserFactory(is_superuser=True)
    assert not visible_subjects(nobody).exists()
    assert visible_subjects(root).count() == visible_subjects(root, None).count() > 0
    assert access_for(root).unrestricted


def test_all_scopes_permission_is_unrestricted(world):
    analyst = UserFactory()
    analyst.user_permissions.add(Permission.objects.get(codename="all_scopes"))
    assert access_for(analyst).unrestricted


def test_group_region_grant_covers_subtree_and_user_grants_add_up(world):
    member_sh = SubjectFactory(subject_type=world.member_type, region=world.shanghai, brand=world.brand_a)
    member_bj = SubjectFactory(subject_type=world.member_type, region=world.beijing, brand=world.brand_b)
    managers = Group.objects.create(name="managers of Shanghai")
    ScopeGrant.objects.create(group=managers, region=world.shanghai)
    user = UserFactory()
    user.groups.add(managers)
    assert _ids(visible_subjects(user).of_type("member")) == {member_sh.id}
    ScopeGrant.objects.create(user=user, brand=world.brand_b)
    forget_access(user)
    assert _ids(visible_subjects(user).of_type("member")) == {member_sh.id, member_bj.id}


def test_extra_scope_rows_make_a_subject_visible_in_another_brand(world):
    person = SubjectFactory(subject_type=world.member_type, brand=world.brand_a)
    SubjectScope.objects.create(subject=person, brand=world.brand_b, origin="identity")
    operator_b = UserFactory()
    ScopeGrant.objects.create(user=operator_b, brand=world.brand_b)
    assert person.id in _ids(visible_subjects(operator_b))


def test_access_is_cached_per_user_object(world, django_assert_num_queries):
    user = UserFactory()
    ScopeGrant.objects.create(user=user, brand=world.brand_a)
    access_for(user)
    with django_assert_num_queries(0):
        access_for(user)


def test_write_targets_must_be_covered(world):
    user = UserFactory()
    ScopeGrant.objects.create(user=user, brand=world.brand_a, region=world.china)
    targets = [
        (None, world.brand_a.id, world.shanghai.id),  # inside: region below China
        (None, world.brand_b.id, world.shanghai.id),  # other brand
        (None, world.brand_a.id, None),  # no region: not covered by a region grant
        (world.line.id, world.brand_a.id, world.china.id),
    ]
    assert uncovered_targets(user, targets) == [1, 2]
    assert uncovered_targets(UserFactory(is_superuser=True), targets) == []
    assert uncovered_targets(UserFactory(), targets) == [0, 1, 2, 3]


@pytest.mark.django_db
def test_region_ancestors_walks_the_parent_chain(world):
    assert region_ancestors([world.shanghai.id, world.china.id]) == {
        world.shanghai.id: frozenset({world.shanghai.id, world.china.id}),
        world.china.id: frozenset({world.china.id}),
    }
