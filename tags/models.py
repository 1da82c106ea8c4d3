"""Tags: groups and definitions per subject type, their values, history, rules and events.

A tag value is one row per (tag, subject) whatever produced it — a manual edit, an
import, a rule or a propagation (``source``) — so readers and the engine need no
special cases. "No value" is no row. Every change appends a ``TagValueChange``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from subjects.models import Subject, SubjectType, code_validator


class ValueType(models.TextChoices):
    ENUM = "enum", "Enum"
    MULTI_ENUM = "multi_enum", "Multi-enum"
    NUMBER = "number", "Number"
    BOOLEAN = "boolean", "Boolean"
    TEXT = "text", "Text"
    DATE = "date", "Date"


class TagStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    ARCHIVED = "archived", "Archived"


class Computation(models.TextChoices):
    ASSIGNED = "assigned", "Assigned (manual and imported)"
    RULE = "rule", "Rule"
    PROPAGATED = "propagated", "Propagated"


class ValueSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    IMPORTED = "imported", "Imported"
    RULE = "rule", "Rule"
    PROPAGATED = "propagated", "Propagated"


class DependencyKind(models.TextChoices):
    RULE = "rule", "Rule"
    PROPAGATION = "propagation", "Propagation"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class AccessPolicy(models.TextChoices):
    """Who reaches a tag group's tags for one action (view, use, edit) besides HQ and explicit grants."""

    SCOPE = "scope", "Everyone whose scope covers the group's brand (with the model permission)"
    GRANTED = "granted", "Only users and groups granted it on the group or the tag"


class TagGroup(models.Model):
    """A group of tags; its brand and policies decide who sees, uses and edits its tags (``tags.access``)."""

    subject_type = models.ForeignKey(SubjectType, on_delete=models.PROTECT, related_name="tag_groups")
    code = models.CharField(max_length=64, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    position = models.IntegerField(default=0, help_text="Display order within the subject type.")
    brand = models.ForeignKey(
        Subject,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        limit_choices_to={"subject_type__scope_role": "brand"},
        help_text="The brand owning the group; empty: group-wide (HQ).",
    )
    view_policy = models.CharField(max_length=10, choices=AccessPolicy.choices, default=AccessPolicy.SCOPE)
    use_policy = models.CharField(
        max_length=10,
        choices=AccessPolicy.choices,
        default=AccessPolicy.SCOPE,
        help_text="Reading the tags in rules, propagations, previews and exports.",
    )
    edit_policy = models.CharField(
        max_length=10,
        choices=AccessPolicy.choices,
        default=AccessPolicy.SCOPE,
        help_text="Changing the tags' definitions and values.",
    )

    class Meta:
        ordering = ["subject_type", "position", "code"]
        constraints = [models.UniqueConstraint(fields=["subject_type", "code"], name="tag_group_unique_code")]
        permissions = [("use_taggroup", "Can use the group's tags in rules, propagations, previews and exports")]

    def __str__(self) -> str:
        return self.name


class TagDefinition(models.Model):
    """A tag of one subject type. ``subject_type`` copies ``group.subject_type`` for set-based joins."""

    group = models.ForeignKey(TagGroup, on_delete=models.PROTECT, related_name="tags")
    subject_type = models.ForeignKey(SubjectType, on_delete=models.PROTECT, related_name="tag_definitions")
    code = models.CharField(max_length=64, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    value_type = models.CharField(max_length=20, choices=ValueType.choices)
    unit = models.CharField(max_length=32, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_tags"
    )
    status = models.CharField(max_length=20, choices=TagStatus.choices, default=TagStatus.DRAFT)
    computation = models.CharField(max_length=20, choices=Computation.choices, default=Computation.ASSIGNED)
    version = models.IntegerField(default=0, help_text="The active rule version; 0 if none.")
    rule = models.ForeignKey(
        "TagRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="The active rule."
    )
    last_computed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["subject_type", "group", "code"]
        constraints = [models.UniqueConstraint(fields=["subject_type", "code"], name="tag_definition_unique_code")]
        permissions = [("use_tagdefinition", "Can use the tag in rules, propagations, previews and exports")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.group_id and self.subject_type_id and self.group.subject_type_id != self.subject_type_id:
            raise ValidationError({"group": "The group belongs to another subject type."})


class TagGroupUserObjectPermission(UserObjectPermissionBase):
    """Guardian grants on tag groups with a real foreign key: set-based joins, deleted with the group."""

    content_object = models.ForeignKey(TagGroup, on_delete=models.CASCADE)


class TagGroupGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(TagGroup, on_delete=models.CASCADE)


class TagDefinitionUserObjectPermission(UserObjectPermissionBase):
    """Definition-level grants refine a group's: they reach one tag without the rest of its group."""

    content_object = models.ForeignKey(TagDefinition, on_delete=models.CASCADE)


class TagDefinitionGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(TagDefinition, on_delete=models.CASCADE)


class TagOption(models.Model):
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="options")
    value = models.CharField(max_length=64, help_text="The stored code.")
    label = models.CharField(max_length=200)
    position = models.IntegerField(default=0)

    class Meta:
        ordering = ["tag", "position", "value"]
        constraints = [models.UniqueConstraint(fields=["tag", "value"], name="tag_option_unique_value")]

    def __str__(self) -> str:
        return self.label


class TagRule(models.Model):
    """One version of a tag's rule document; ``activated_at`` null means a draft."""

    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="rules")
    version = models.IntegerField()
    document = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tag", "-version"]
        constraints = [models.UniqueConstraint(fields=["tag", "version"], name="tag_rule_unique_version")]

    def __str__(self) -> str:
        return f"{self.tag_id} v{self.version}"


class TagDependency(models.Model):
    """``tag`` reads ``depends_on``: recompute ``depends_on`` first, then ``tag``."""

    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="dependencies")
    depends_on = models.ForeignKey(TagDefinition, on_delete=models.PROTECT, related_name="dependents")
    kind = models.CharField(max_length=20, choices=DependencyKind.choices, default=DependencyKind.RULE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tag", "depends_on"], name="tag_dependency_unique")]

    def __str__(self) -> str:
        return f"{self.tag_id} → {self.depends_on_id}"


class TagValue(models.Model):
    id = models.BigAutoField(primary_key=True)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="tag_values", db_index=False)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="values", db_index=False)
    value = models.JSONField()
    source = models.CharField(max_length=20, choices=ValueSource.choices)
    rule_version = models.IntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(help_text="When the value last changed.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tag", "subject"], name="tag_value_unique")]
        indexes = [models.Index(fields=["subject"], name="tag_value_subject_idx")]

    def __str__(self) -> str:
        return f"{self.tag_id}/{self.subject_id}={self.value!r}"


class TagValueChange(models.Model):
    """Append-only history; ``old_value``/``new_value`` null mean absent (added / removed)."""

    id = models.BigAutoField(primary_key=True)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="tag_value_changes", db_index=False)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="value_changes", db_index=False)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=ValueSource.choices)
    rule_version = models.IntegerField(null=True, blank=True)
    changed_at = models.DateTimeField()
    correlation_id = models.UUIDField(default=uuid.uuid4)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["tag", "subject", "changed_at"], name="tag_change_subject_idx"),
            models.Index(fields=["tag", "changed_at"], name="tag_change_time_idx"),
            models.Index(fields=["correlation_id"], name="tag_change_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tag_id}/{self.subject_id}: {self.old_value!r} → {self.new_value!r}"


class Event(models.Model):
    """A behaviour event of a subject (a purchase, a visit); rules aggregate over windows of them."""

    id = models.BigAutoField(primary_key=True)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="events", db_index=False)
    type = models.CharField(max_length=64, validators=[code_validator])
    occurred_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=64)
    event_id = models.CharField(max_length=128, help_text="The external idempotency key.")
    received_at = models.DateTimeField(auto_now_add=True)
    # The source record (identity) the event was attributed through when it came in by identifier:
    # a OneID split gives the event to the part holding that record. An id, no foreign key: tags
    # works without the identity app, and records are never deleted (a merge or split moves them).
    # Not indexed: a split reads events by subject (the subject index) and only then by record.
    source_record_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["source", "event_id"], name="event_unique_external_id")]
        indexes = [models.Index(fields=["subject", "type", "occurred_at"], name="event_subject_type_time_idx")]

    def __str__(self) -> str:
        return f"{self.type}@{self.occurred_at:%Y-%m-%d} ({self.subject_id})"


class MergedValue(models.Model):
    """A manual or imported value of OneIDs that merged, with the records its OneID held then.

    Written by ``tags.identity_follow`` when OneIDs merge: one row per explicit value of the
    merged OneIDs, the survivor's own included. A split gives each value back to the part
    holding most of those records (exact split of manual tags). ``held``: the value is
    ``subject``'s value of ``tag`` now; not held: it lost to the survivor's own value at the
    merge and is kept here only so that a split can give it back. Rows are data of the
    merged person, not history: the value history (``TagValueChange``) records every move.
    """

    id = models.BigAutoField(primary_key=True)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="+", db_index=False)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+", db_index=False)
    origin = models.ForeignKey(
        Subject, on_delete=models.CASCADE, related_name="+", help_text="The OneID the value was set on."
    )
    records = models.JSONField(help_text="Ids of the source records that OneID held when it merged.")
    value = models.JSONField()
    source = models.CharField(max_length=20, choices=ValueSource.choices)
    held = models.BooleanField(default=True)
    correlation_id = models.UUIDField(help_text="The merge that moved or set aside the value.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tag", "subject"], condition=models.Q(held=True), name="merged_value_one_held"
            )
        ]
        indexes = [models.Index(fields=["subject", "tag"], name="merged_value_subject_idx")]

    def __str__(self) -> str:
        return f"{self.tag_id}/{self.subject_id} from {self.origin_id}: {self.value!r}"


class RecomputeJob(models.Model):
    id = models.BigAutoField(primary_key=True)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="recompute_jobs")
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    subject_count = models.IntegerField(default=0)
    chunks_total = models.IntegerField(default=0)
    chunks_done = models.IntegerField(default=0)
    rows_changed = models.IntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    correlation_id = models.UUIDField(default=uuid.uuid4)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"recompute {self.tag_id} ({self.status})"


class ExactNumber(models.DecimalField):
    """Unconstrained ``numeric`` (exact sums of any size); only the engine's SQL reads and writes it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("max_digits", 1000)
        kwargs.setdefault("decimal_places", 0)
        super().__init__(*args, **kwargs)

    def db_type(self, connection) -> str:
        return "numeric"


class PropagationState(models.Model):
    """Per-target aggregate state of a decomposable propagation (PostgreSQL), so a change is a delta.

    Key ``""`` holds the totals over the target's valued sources: ``c`` (how many),
    ``n`` (their summed path weight) and ``s`` (the aggregate's running sum: Σ w·v,
    Σ w·match, or the count of matches). Any other key is one source value (one
    element of a multi-enum) with its ``c`` and ``n``. Exact ``numeric`` sums, so a
    value derived from deltas equals one derived from a full rebuild. Derived data,
    not audited: a full recompute rebuilds it; the tag values it yields are audited.
    """

    id = models.BigAutoField(primary_key=True)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="+", db_index=False)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.TextField(blank=True)
    c = models.BigIntegerField(default=0)
    n = ExactNumber(default=0)
    s = ExactNumber(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tag", "subject", "key"], name="propagation_state_unique")]
        indexes = [models.Index(fields=["subject"], name="propagation_state_subject_idx")]

    def __str__(self) -> str:
        return f"{self.tag_id}/{self.subject_id}[{self.key}]: c={self.c} n={self.n} s={self.s}"


class RefreshRequest(models.Model):
    """A plan waiting for the engine, written in the transaction of the write that caused it.

    ``tags.refresh`` drains these in id order (``FOR UPDATE SKIP LOCKED``) and runs
    many as one plan, so a worker behind a burst catches up instead of redoing the
    same high fan-in targets once per message; a committed write's request cannot be
    lost with its message (the next refresh drains it).
    """

    id = models.BigAutoField(primary_key=True)
    payload = models.JSONField()
    correlation_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"refresh request {self.pk}"


class PropagationStateBuilt(models.Model):
    """The rule version whose full recompute built a tag's whole ``PropagationState``.

    Deltas are applied only while the tag's active rule is this one: before the first
    full recompute of a version (or during it) the engine rebuilds the affected
    targets' state from their inputs instead, which is always right.
    """

    tag = models.OneToOneField(TagDefinition, on_delete=models.CASCADE, primary_key=True, related_name="+")
    rule = models.ForeignKey(TagRule, on_delete=models.CASCADE, related_name="+")
    built_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"state of {self.tag_id} built for rule {self.rule_id}"
