"""FilterSets of the tags API; ids are plain numbers so the browsable API never lists big tables."""

from __future__ import annotations

import json

import django_filters as filters

from tags.models import RecomputeJob, TagDefinition, TagGroup, TagValue, ValueSource


class TagGroupFilter(filters.FilterSet):
    subject_type = filters.CharFilter(field_name="subject_type__code", help_text="Subject type code")

    class Meta:
        model = TagGroup
        fields = ["code"]


class TagDefinitionFilter(filters.FilterSet):
    subject_type = filters.CharFilter(field_name="subject_type__code", help_text="Subject type code")
    group = filters.NumberFilter(field_name="group_id", help_text="Tag group id")
    group_code = filters.CharFilter(field_name="group__code", help_text="Tag group code")

    class Meta:
        model = TagDefinition
        fields = ["code", "status", "computation", "value_type"]


class RecomputeJobFilter(filters.FilterSet):
    tag = filters.NumberFilter(field_name="tag_id")

    class Meta:
        model = RecomputeJob
        fields = ["status"]


def parse_value_param(text: str) -> object:
    """A value given in a query string: JSON when it parses (``3``, ``true``, ``["a"]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class TagValueFilter(filters.FilterSet):
    tag = filters.NumberFilter(field_name="tag_id", help_text="Tag id")
    tag_code = filters.CharFilter(field_name="tag__code", help_text="Tag code")
    subject = filters.NumberFilter(field_name="subject_id", help_text="Subject id")
    subject_type = filters.CharFilter(field_name="tag__subject_type__code", help_text="Subject type code")
    source = filters.ChoiceFilter(choices=ValueSource.choices)
    value = filters.CharFilter(
        method="filter_value", help_text='The value as JSON (3, true, ["a","b"]) or plain text ("dry")'
    )
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gt")

    class Meta:
        model = TagValue
        fields: list[str] = []

    def filter_value(self, queryset, name, value):
        return queryset.filter(value=parse_value_param(value))
