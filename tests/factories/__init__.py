"""factory_boy factories for the domain models."""

import factory
from django.contrib.auth import get_user_model

from subjects.models import Relationship, RelationshipType, Subject, SubjectType


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")


class SubjectTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubjectType
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"type{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())
    category = "customer"


class BrandTypeFactory(SubjectTypeFactory):
    code = "brand"
    category = "organization"
    scope_role = "brand"


class RegionTypeFactory(SubjectTypeFactory):
    code = "region"
    category = "organization"
    scope_role = "region"


class BusinessLineTypeFactory(SubjectTypeFactory):
    code = "business_line"
    category = "organization"
    scope_role = "business_line"


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject

    subject_type = factory.SubFactory(SubjectTypeFactory)
    display_name = factory.Sequence(lambda n: f"Subject {n}")
    source = "test"
    external_id = factory.Sequence(lambda n: f"S{n}")
    attributes = factory.LazyFunction(dict)


class RelationshipTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RelationshipType
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"rel{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())
    from_type = factory.SubFactory(SubjectTypeFactory)
    to_type = factory.SubFactory(SubjectTypeFactory)
    cardinality = "n:m"


class RelationshipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Relationship

    relationship_type = factory.SubFactory(RelationshipTypeFactory)
    from_subject = factory.SubFactory(SubjectFactory)
    to_subject = factory.SubFactory(SubjectFactory)
    source = "test"
    external_id = factory.Sequence(lambda n: f"R{n}")
