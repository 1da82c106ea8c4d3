"""Serializers of the tags API: they shape and document; ``tags.services`` validates and writes."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from subjects.api.serializers import ReferenceField
from subjects.models import Subject, SubjectType
from tags import access
from tags.models import RecomputeJob, TagDefinition, TagGroup, TagRule

TAG_STATUSES = [choice for choice, _ in TagDefinition._meta.get_field("status").choices]


@extend_schema_field(
    {"type": "string", "pattern": f"^({'|'.join(TAG_STATUSES)})$", "description": "draft → active → archived"}
)
class TagStatusField(serializers.ChoiceField):
    """Documented by a pattern: a named enum would collide with the API's other "status" enums."""

    def __init__(self, **kwargs):
        super().__init__(choices=TAG_STATUSES, **kwargs)


class TagGroupSerializer(serializers.ModelSerializer):
    """A group with its owning brand and who may view, use and edit its tags (``tags.access``)."""

    subject_type = serializers.SlugRelatedField(slug_field="code", queryset=SubjectType.objects.all())
    brand = serializers.PrimaryKeyRelatedField(
        queryset=Subject.objects.filter(subject_type__scope_role="brand"),
        required=False,
        allow_null=True,
        help_text="The owning brand's subject id; null: group-wide (HQ only).",
    )

    class Meta:
        model = TagGroup
        fields = [
            "id", "subject_type", "code", "name", "description", "position", "brand", "view_policy", "use_policy",
            "edit_policy",
        ]  # fmt: skip
        read_only_fields = ["id"]


class TagOptionSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=64, help_text="The stored code.")
    label = serializers.CharField(max_length=200, required=False, allow_blank=True)
    position = serializers.IntegerField(read_only=True)


class TagDefinitionSerializer(serializers.ModelSerializer):
    group = serializers.PrimaryKeyRelatedField(read_only=True)
    group_code = serializers.CharField(source="group.code", read_only=True)
    subject_type = serializers.SlugRelatedField(slug_field="code", read_only=True)
    options = TagOptionSerializer(many=True, read_only=True)
    status = TagStatusField(read_only=True)
    dependencies = serializers.SerializerMethodField(help_text="Codes of the tags this tag's rule reads.")
    dependents = serializers.SerializerMethodField(help_text="Codes of the tags whose rules read this tag.")

    class Meta:
        model = TagDefinition
        fields = [
            "id", "group", "group_code", "subject_type", "code", "name", "description", "value_type", "unit",
            "owner", "status", "computation", "version", "rule", "last_computed_at", "options", "dependencies",
            "dependents", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_dependencies(self, obj: TagDefinition) -> list[str]:
        return sorted(d.depends_on.code for d in obj.dependencies.all())

    def get_dependents(self, obj: TagDefinition) -> list[str]:
        return sorted(d.tag.code for d in obj.dependents.all())


class TagDefinitionWriteSerializer(serializers.Serializer):
    """A tag definition as sent by a client; ``options`` (in display order) replaces the stored ones."""

    group = serializers.PrimaryKeyRelatedField(queryset=TagGroup.objects.all(), help_text="Tag group id")
    code = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    value_type = serializers.ChoiceField(choices=TagDefinition._meta.get_field("value_type").choices)
    unit = serializers.CharField(required=False, allow_blank=True, max_length=32)
    owner = serializers.IntegerField(required=False, allow_null=True, help_text="User id")
    status = TagStatusField(required=False)
    computation = serializers.ChoiceField(choices=TagDefinition._meta.get_field("computation").choices, required=False)
    options = TagOptionSerializer(many=True, required=False)

    def __init__(self, *args, **kwargs):
        """A group the user cannot see is "does not exist", like an unknown id."""
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["group"].queryset = access.visible_groups(request.user)


class TagRuleSerializer(serializers.ModelSerializer):
    active = serializers.SerializerMethodField()

    class Meta:
        model = TagRule
        fields = ["id", "tag", "version", "document", "created_by", "created_at", "activated_at", "active"]
        read_only_fields = fields

    def get_active(self, obj: TagRule) -> bool:
        return obj.tag.rule_id == obj.pk


class RuleDocumentSerializer(serializers.Serializer):
    document = serializers.JSONField(help_text="The rule document (see docs/TAGS.md).")


class RuleCreateSerializer(RuleDocumentSerializer):
    activate = serializers.BooleanField(default=False, help_text="Activate (and recompute) right away.")


class PreviewRequestSerializer(serializers.Serializer):
    document = serializers.JSONField(required=False, help_text="A rule document to preview, or …")
    version = serializers.IntegerField(required=False, help_text="… a saved (draft) version of this tag's rule.")


class PreviewSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Subjects of the tag's type")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Subjects per value")
    no_value = serializers.IntegerField(help_text="Subjects that would have no value")
    changes = serializers.IntegerField(help_text="Subjects whose value would change")
    sample = serializers.ListField(child=serializers.JSONField())


class ActivateSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)


class RecomputeJobSerializer(serializers.ModelSerializer):
    tag_code = serializers.CharField(source="tag.code", read_only=True)
    # Plain text (not an enum) so its name cannot collide with the tag's "status" enum in the schema.
    status = serializers.CharField(read_only=True, help_text="queued, running, done or failed")
    progress = serializers.SerializerMethodField(help_text="Chunks done / chunks total (0 to 1)")

    class Meta:
        model = RecomputeJob
        fields = [
            "id", "tag", "tag_code", "status", "subject_count", "chunks_total", "chunks_done", "progress",
            "rows_changed", "requested_by", "correlation_id", "created_at", "started_at", "finished_at", "error",
        ]  # fmt: skip
        read_only_fields = fields

    def get_progress(self, obj: RecomputeJob) -> float:
        return round(obj.chunks_done / obj.chunks_total, 4) if obj.chunks_total else 0.0


@extend_schema_field({"description": "The canonical JSON value (type depends on the tag)"})
class AnyValueField(serializers.JSONField):
    pass


class TagValueSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject = serializers.IntegerField()
    tag = serializers.IntegerField()
    tag_code = serializers.CharField()
    value = AnyValueField()
    source = serializers.CharField()
    rule_version = serializers.IntegerField(allow_null=True)
    updated_at = serializers.DateTimeField()


@extend_schema_field(
    {"oneOf": [{"type": "integer", "description": "Tag id"}, {"type": "string", "description": "Tag code"}]}
)
class TagRefField(serializers.JSONField):
    pass


class TagValueItemSerializer(serializers.Serializer):
    subject = ReferenceField()
    tag = TagRefField()
    value = AnyValueField(allow_null=True, help_text="null removes the value")


class TagValueBulkRequestSerializer(serializers.Serializer):
    items = TagValueItemSerializer(many=True)


class TagWriteCountsSerializer(serializers.Serializer):
    tag = serializers.IntegerField()
    code = serializers.CharField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    removed = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class TagValueBulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    removed = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    correlation_id = serializers.UUIDField()
    tags = TagWriteCountsSerializer(many=True)


class ValueAtSerializer(serializers.Serializer):
    tag = serializers.IntegerField()
    tag_code = serializers.CharField()
    subject = serializers.IntegerField()
    at = serializers.DateTimeField()
    value = AnyValueField(allow_null=True, help_text="null: no value at that time")


class SubjectAtSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    display_name = serializers.CharField()
    source = serializers.CharField()
    external_id = serializers.CharField()


class SubjectsAtPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Subjects that had the value")
    next = serializers.URLField(allow_null=True)
    results = SubjectAtSerializer(many=True)
