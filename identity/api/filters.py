"""Filters of the identity API whose names are not model field paths."""

import django_filters as filters

from ..models import SourceRecord


class SourceRecordFilter(filters.FilterSet):
    oneid = filters.NumberFilter(field_name="assignment__oneid", help_text="OneID (subject id) the records belong to")

    class Meta:
        model = SourceRecord
        fields = ["source", "brand", "oneid", "external_id"]
