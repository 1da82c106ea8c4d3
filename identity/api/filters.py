"""Filters of the identity API whose names are not model field paths."""

import django_filters as filters

from subjects.models import Subject

from ..models import SourceRecord


class SourceRecordFilter(filters.FilterSet):
    oneid = filters.ModelChoiceFilter(
        field_name="assignment__oneid",
        queryset=Subject.objects.all(),
        help_text="OneID (subject id) the records belong to",
    )

    class Meta:
        model = SourceRecord
        fields = ["source", "brand", "oneid", "external_id"]
