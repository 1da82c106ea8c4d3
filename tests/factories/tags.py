"""factory_boy factories for the tags app."""

import datetime as dt

import factory
from django.utils import timezone

from tags.models import Event, TagDefinition, TagGroup, TagOption
from tests.factories import SubjectTypeFactory


class TagGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TagGroup
        django_get_or_create = ("subject_type", "code")

    subject_type = factory.SubFactory(SubjectTypeFactory)
    code = factory.Sequence(lambda n: f"group{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())


class TagDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TagDefinition
        skip_postgeneration_save = True

    group = factory.SubFactory(TagGroupFactory)
    subject_type = factory.LazyAttribute(lambda o: o.group.subject_type)
    code = factory.Sequence(lambda n: f"tag{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())
    value_type = "enum"
    status = "active"
    computation = "assigned"

    @factory.post_generation
    def options(self, create, extracted, **kwargs):
        """``options=["a", "b"]`` creates those options in that order."""
        if create and extracted:
            TagOption.objects.bulk_create(
                TagOption(tag=self, value=value, label=value.title(), position=i) for i, value in enumerate(extracted)
            )


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    type = "purchase"
    occurred_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=1))
    properties = factory.LazyFunction(dict)
    source = "test"
    event_id = factory.Sequence(lambda n: f"E{n}")
