"""Serializers documenting a subject's tags (``tags.api.profile``); no imports from the subjects API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field({"description": "The canonical JSON value (type depends on the tag)"})
class TagValueField(serializers.JSONField):
    pass


class SubjectTagSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField()
    name = serializers.CharField()
    value_type = serializers.CharField()
    unit = serializers.CharField()
    computation = serializers.CharField()
    value = TagValueField()
    label = serializers.CharField(allow_null=True, help_text="The option label (enum)")
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True, help_text="Labels (multi-enum)")
    source = serializers.CharField()
    rule_version = serializers.IntegerField(allow_null=True)
    updated_at = serializers.DateTimeField(help_text="When the value last changed")
    computed_at = serializers.DateTimeField(allow_null=True, help_text="When the tag was last computed in full")


class SubjectTagGroupSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    tags = SubjectTagSerializer(many=True)
