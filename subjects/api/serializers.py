"""Serializers: they shape and document the API; the services validate and write."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tags.api.profile_serializers import SubjectTagGroupSerializer

from .. import pii
from ..models import Relationship, RelationshipType, Subject, SubjectType


class PiiListSerializer(serializers.ListSerializer):
    """Logs one ``pii.unmasked`` event for a whole unmasked page (not one per row)."""

    def to_representation(self, data):
        rows = super().to_representation(data)
        request = self.context.get("request")
        if pii.wants_unmasked(request):
            pii.log_unmask(
                request.user, self.child.pii_object_type, [row["id"] for row in rows], ["display_name", "attributes"]
            )
        return rows


class PiiMaskedSerializer(serializers.ModelSerializer):
    """Output with personal data masked unless a ``view_pii`` holder asked ``?unmask=1`` (logged).

    Masking happens on the serialized output, so every field added later passes through it.
    """

    pii_object_type = "subjects.subject"
    pii_type_attribute = "subject_type"

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not pii.wants_unmasked(request):
            return pii.mask_subject_payload(data, getattr(instance, self.pii_type_attribute, None))
        if not isinstance(self.parent, serializers.ListSerializer):
            pii.log_unmask(request.user, self.pii_object_type, [instance.pk], ["display_name", "attributes"])
        return data


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "description": "Subject id"},
            {
                "type": "object",
                "properties": {
                    "source": {"type": "string"},
                    "external_id": {"type": "string"},
                    "type": {"type": "string", "description": "Subject type code (optional)"},
                },
                "required": ["source", "external_id"],
            },
        ],
        "nullable": True,
    }
)
class ReferenceField(serializers.JSONField):
    """A subject by id or by external key; resolved (and checked) by the services."""


class SubjectTypeSerializer(serializers.ModelSerializer):
    subject_count = serializers.SerializerMethodField()

    class Meta:
        model = SubjectType
        fields = [
            "id", "code", "name", "category", "description", "attribute_schema", "scope_role",
            "subject_count", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def get_subject_count(self, obj: SubjectType) -> int | None:
        return getattr(obj, "subject_count", None)


class RelationshipTypeSerializer(serializers.ModelSerializer):
    from_type = serializers.SlugRelatedField(slug_field="code", queryset=SubjectType.objects.all())
    to_type = serializers.SlugRelatedField(slug_field="code", queryset=SubjectType.objects.all())
    subject_type = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = RelationshipType
        fields = [
            "id", "code", "name", "description", "from_type", "to_type", "cardinality", "taggable",
            "subject_type", "attribute_schema", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "subject_type", "created_at", "updated_at"]


class SubjectSerializer(PiiMaskedSerializer):
    type = serializers.SlugRelatedField(source="subject_type", slug_field="code", read_only=True)

    class Meta:
        model = Subject
        list_serializer_class = PiiListSerializer
        fields = [
            "id", "type", "display_name", "attributes", "business_line", "brand", "region", "parent",
            "source", "external_id", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class SubjectDetailSerializer(SubjectSerializer):
    """One subject with its tags grouped by tag group (``tags`` is filled by the view in two queries)."""

    tags = SubjectTagGroupSerializer(
        many=True,
        read_only=True,
        allow_null=True,
        source="tag_groups_shown",
        help_text="Tags grouped by tag group; null without the permission to view tag values",
    )

    class Meta(SubjectSerializer.Meta):
        fields = [*SubjectSerializer.Meta.fields, "tags"]
        read_only_fields = fields


class SubjectWriteSerializer(serializers.Serializer):
    """A subject as sent by a client; ``type``, ``source`` and ``external_id`` identify it."""

    type = serializers.CharField(help_text="Subject type code")
    source = serializers.CharField(max_length=64)
    external_id = serializers.CharField(max_length=128)
    display_name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    attributes = serializers.JSONField(required=False)
    business_line = ReferenceField(required=False, allow_null=True)
    brand = ReferenceField(required=False, allow_null=True)
    region = ReferenceField(required=False, allow_null=True)
    parent = ReferenceField(required=False, allow_null=True)


class RelationshipSerializer(PiiMaskedSerializer):
    pii_object_type = "subjects.relationship"
    pii_type_attribute = "relationship_type"

    type = serializers.SlugRelatedField(source="relationship_type", slug_field="code", read_only=True)
    from_subject = serializers.IntegerField(source="from_subject_id", read_only=True)
    to_subject = serializers.IntegerField(source="to_subject_id", read_only=True)
    subject = serializers.IntegerField(source="subject_id", read_only=True, allow_null=True)

    class Meta:
        model = Relationship
        list_serializer_class = PiiListSerializer
        fields = [
            "id", "type", "from_subject", "to_subject", "weight", "valid_from", "valid_to", "attributes",
            "source", "external_id", "subject", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class RelationshipWriteSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Relationship type code")
    source = serializers.CharField(max_length=64)
    external_id = serializers.CharField(max_length=128)
    from_ = ReferenceField(help_text="The 'from' subject")
    to = ReferenceField(help_text="The 'to' subject")
    weight = serializers.FloatField(required=False)
    valid_from = serializers.DateTimeField(required=False, allow_null=True)
    valid_to = serializers.DateTimeField(required=False, allow_null=True)
    attributes = serializers.JSONField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class ItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "updated", "unchanged"])


class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    correlation_id = serializers.UUIDField()
    results = ItemResultSerializer(many=True)


class SubjectBulkRequestSerializer(serializers.Serializer):
    items = SubjectWriteSerializer(many=True)


class RelationshipBulkRequestSerializer(serializers.Serializer):
    items = RelationshipWriteSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True)
    field = serializers.CharField()
    message = serializers.CharField()
    code = serializers.CharField()


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = ErrorDetailSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
