"""Serializers: they document the API (drf-spectacular) and shape output; services validate."""

from __future__ import annotations

from rest_framework import serializers

from subjects import pii
from subjects.models import Subject, SubjectType

from ..models import (
    BlockedValue,
    CompositeKey,
    IdentifierType,
    MatchSuggestion,
    OneId,
    ReapplyRun,
    SourceRecord,
    SourceSystem,
)
from ..selectors import mask_evidence, mask_raw


class SourceSystemSerializer(serializers.ModelSerializer):
    subject_type = serializers.SlugRelatedField(slug_field="code", queryset=SubjectType.objects.all())
    brand = serializers.PrimaryKeyRelatedField(
        queryset=Subject.objects.filter(subject_type__scope_role="brand"), allow_null=True, required=False
    )

    class Meta:
        model = SourceSystem
        fields = [
            "id", "code", "name", "kind", "brand", "trust_rank", "app_id", "open_platform_id", "subject_type",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]


class IdentifierTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = IdentifierType
        fields = [
            "id", "code", "name", "normalizer", "fields", "linking", "priority", "max_per_oneid",
            "max_shared_records", "scoping", "active",
        ]  # fmt: skip
        read_only_fields = ["id"]


class CompositeKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = CompositeKey
        fields = ["id", "code", "name", "parts", "priority", "max_shared_records", "active"]
        read_only_fields = ["id"]


class BlockedValueSerializer(serializers.ModelSerializer):
    identifier_type = serializers.SlugRelatedField(
        slug_field="code", queryset=IdentifierType.objects.all(), allow_null=True, required=False
    )

    class Meta:
        model = BlockedValue
        fields = ["id", "identifier_type", "value", "pattern", "reason"]
        read_only_fields = ["id"]


class SourceRecordSerializer(serializers.ModelSerializer):
    """Raw fields and external id are personal data: masked unless the view says ``unmasked``."""

    source = serializers.SlugRelatedField(slug_field="code", read_only=True)
    oneid = serializers.IntegerField(
        source="assigned_oneid_id", read_only=True, allow_null=True, help_text="The OneID the record belongs to"
    )

    class Meta:
        model = SourceRecord
        fields = ["id", "source", "external_id", "raw", "brand", "oneid", "created_at", "updated_at"]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("unmasked"):
            data["raw"] = mask_raw(data["raw"])
            data["external_id"] = pii.mask(data["external_id"])
        return data


class SourceRecordWriteSerializer(serializers.Serializer):
    source = serializers.CharField(help_text="Source system code")
    external_id = serializers.CharField(max_length=128)
    raw = serializers.DictField(help_text="The record's fields as the source system knows them")


class SourceRecordBulkRequestSerializer(serializers.Serializer):
    items = SourceRecordWriteSerializer(many=True)


class WarningSerializer(serializers.Serializer):
    type = serializers.CharField()
    value = serializers.CharField()
    reason = serializers.CharField()


class RecordResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True)
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="created | updated | unchanged")
    oneid = serializers.IntegerField(allow_null=True)
    warnings = WarningSerializer(many=True)


class RecordsResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    correlation_id = serializers.UUIDField()
    merge_events = serializers.ListField(child=serializers.IntegerField())
    results = RecordResultSerializer(many=True)


class OneIdSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="subject_id", read_only=True)
    display_name = serializers.CharField(source="subject.display_name", read_only=True)
    subject_type = serializers.CharField(source="subject.subject_type.code", read_only=True)
    status = serializers.CharField(read_only=True, help_text="active | retired")

    class Meta:
        model = OneId
        fields = ["id", "subject_type", "display_name", "status", "merged_into", "created_at", "updated_at"]
        read_only_fields = fields


class OneIdRecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.CharField()
    brand = serializers.IntegerField(allow_null=True, help_text="The brand of the record's source (null: group)")
    external_id = serializers.CharField()
    raw = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class IdentifierWhySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    record = serializers.IntegerField()
    rule = serializers.CharField(help_text="identifier:<type> or composite:<key>")
    scope = serializers.CharField()
    value = serializers.CharField()
    status = serializers.CharField(help_text="link | part | blocked | over_limit")
    shared_by = serializers.IntegerField(help_text="Records holding this value (all OneIDs)")
    why = serializers.CharField()


class LinkSerializer(serializers.Serializer):
    rule = serializers.CharField()
    value = serializers.CharField()
    records = serializers.ListField(child=serializers.IntegerField())


class MergeEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    rule = serializers.CharField()
    evidence = serializers.JSONField()
    others = serializers.ListField(child=serializers.IntegerField())
    records = serializers.ListField(child=serializers.IntegerField())
    actor_id = serializers.IntegerField(allow_null=True)
    correlation_id = serializers.UUIDField()
    created_at = serializers.DateTimeField()


class OneIdDetailSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject_type = serializers.CharField()
    display_name = serializers.CharField()
    attributes = serializers.DictField(help_text="The golden record")
    status = serializers.CharField()
    merged_into = serializers.IntegerField(allow_null=True)
    partial = serializers.BooleanField(
        required=False, help_text="Some records are other brands': records, golden record and history show yours only"
    )
    records = OneIdRecordSerializer(many=True, required=False, help_text="Only with identity.view_sourcerecord")
    identifiers = IdentifierWhySerializer(many=True, required=False, help_text="Only with identity.view_sourcerecord")
    links = LinkSerializer(many=True, required=False, help_text="Only with identity.view_sourcerecord")
    history = MergeEventSerializer(many=True)


class ResolveResponseSerializer(serializers.Serializer):
    matches = OneIdDetailSerializer(many=True)


class SplitRequestSerializer(serializers.Serializer):
    records = serializers.ListField(child=serializers.IntegerField(), help_text="Record ids to split off")
    reason = serializers.CharField(required=False, allow_blank=True)


class SplitResponseSerializer(serializers.Serializer):
    kept = serializers.IntegerField()
    new = serializers.IntegerField()


class MergeRequestSerializer(serializers.Serializer):
    oneids = serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2)
    reason = serializers.CharField(required=False, allow_blank=True)


class MergeResponseSerializer(serializers.Serializer):
    survivor = serializers.IntegerField()


class MatchSuggestionSerializer(serializers.ModelSerializer):
    """The evidence's shared values are identifier values: masked unless the view says ``unmasked``."""

    status = serializers.CharField(read_only=True, help_text="open | accepted | rejected")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("unmasked"):
            data["evidence"] = mask_evidence(data["evidence"])
        return data

    class Meta:
        model = MatchSuggestion
        fields = ["id", "oneid_a", "oneid_b", "score", "evidence", "status", "decided_by", "decided_at", "created_at"]
        read_only_fields = fields


class ReapplyRunSerializer(serializers.ModelSerializer):
    # Plain text (not an enum): its name cannot collide with the other "status" enums in the schema.
    status = serializers.CharField(read_only=True, help_text="pending, running, done, skipped or failed")

    class Meta:
        model = ReapplyRun
        fields = [
            "id", "status", "requested_by", "requested_at", "refresh_golden", "started_at", "finished_at",
            "covered_by", "records", "changed", "added", "removed", "problems", "problem_samples", "resolution",
            "correlation_id", "error",
        ]  # fmt: skip
        read_only_fields = fields
