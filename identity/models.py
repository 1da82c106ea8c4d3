"""OneID: source systems, source records, typed identifiers and the OneIDs they resolve to.

Rules are data: identifier types (normalizer, strong or composite-only, priority,
limits, scoping), composite keys and blocked values are rows an operator edits.
A OneID is an ordinary customer ``Subject`` (created through ``subjects.services``);
``RecordAssignment`` says which one a record belongs to. Every source record is
kept: a merge moves records, it never deletes a profile, so a split can give each
side back exactly what it brought.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from subjects.models import Subject, SubjectType, code_validator


class SourceKind(models.TextChoices):
    CRM = "crm", "CRM"
    WECOM = "wecom", "WeCom"
    WECHAT_OA = "wechat_oa", "WeChat official account"
    WECHAT_MP = "wechat_mp", "WeChat mini-program"
    ECOMMERCE = "ecommerce", "E-commerce shop"
    POS = "pos", "POS"
    OTHER = "other", "Other"


class SourceSystem(models.Model):
    """A system that sends source records, owned by a brand or (``brand`` null) by the group."""

    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=SourceKind.choices, default=SourceKind.OTHER)
    brand = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="Null: group level."
    )
    trust_rank = models.PositiveSmallIntegerField(
        default=50, help_text="Higher wins in 'most trusted source' survivorship."
    )
    app_id = models.CharField(max_length=128, blank=True, help_text="WeChat app id: the scope of its openids.")
    open_platform_id = models.CharField(
        max_length=128, blank=True, help_text="WeChat open platform account: the scope of unionids."
    )
    subject_type = models.ForeignKey(
        SubjectType,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The subject type of the OneIDs its records feed (a customer type, or a doctor / clinic type).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        permissions = [
            ("push_records", "Can push source records from this source system (granted per source system)"),
        ]

    def __str__(self) -> str:
        return self.name


class Linking(models.TextChoices):
    STRONG = "strong", "Links records on its own"
    COMPOSITE = "composite", "Only inside a composite key"


class Scoping(models.TextChoices):
    NONE = "none", "Global"
    APP = "app", "Per WeChat app (openid)"
    OPEN_PLATFORM = "open_platform", "Per open platform (unionid)"
    SOURCE = "source", "Per source system (CRM member id, order id)"


class IdentifierType(models.Model):
    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    normalizer = models.CharField(max_length=32, help_text="A name from identity.normalize.NORMALIZERS.")
    fields = models.JSONField(default=list, help_text="Raw field names this identifier is read from.")
    linking = models.CharField(max_length=10, choices=Linking.choices, default=Linking.STRONG)
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower links first.")
    max_per_oneid = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many distinct values in one OneID (e.g. 1 unionid)."
    )
    max_shared_records = models.PositiveIntegerField(
        null=True, blank=True, help_text="A value held by more records than this stops linking and is reported."
    )
    scoping = models.CharField(max_length=16, choices=Scoping.choices, default=Scoping.NONE)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.code


class CompositeKey(models.Model):
    """Identifier values that link records only together (name + phone; address + order id)."""

    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    parts = models.JSONField(help_text="Identifier type codes, all required.")
    priority = models.PositiveSmallIntegerField(default=200)
    max_shared_records = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.code


class BlockedValue(models.Model):
    """A value that never links: exact (after normalization) or a regular expression."""

    identifier_type = models.ForeignKey(
        IdentifierType, null=True, blank=True, on_delete=models.CASCADE, help_text="Null: every type."
    )
    value = models.CharField(max_length=255, blank=True)
    pattern = models.CharField(max_length=255, blank=True, help_text="Python regular expression, full match.")
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(value="") & ~Q(pattern="")) | (~Q(value="") & Q(pattern="")),
                name="blocked_value_exact_or_pattern",
            )
        ]

    def __str__(self) -> str:
        return self.value or f"/{self.pattern}/"


class Strategy(models.TextChoices):
    MOST_TRUSTED = "most_trusted", "Most trusted source"
    MOST_RECENT = "most_recent", "Most recent"
    MOST_FREQUENT = "most_frequent", "Most frequent"
    FIRST_NON_EMPTY = "first_non_empty", "First non-empty"


class SurvivorshipRule(models.Model):
    """Which record's value an attribute of the golden record takes; default most trusted."""

    attribute = models.CharField(max_length=64, unique=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices)

    class Meta:
        ordering = ["attribute"]

    def __str__(self) -> str:
        return f"{self.attribute}: {self.strategy}"


class OneIdStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired (its records moved to another OneID)"


class OneId(models.Model):
    """State of a OneID subject. A OneID that loses all its records is retired, not deleted."""

    # No database constraint (as Identifier.record): the batch creates ~750k of these per million records
    # set-based, and a deferred check per row cost more than the insert. The ORM still cascades.
    subject = models.OneToOneField(
        Subject, primary_key=True, on_delete=models.CASCADE, related_name="oneid", db_constraint=False
    )
    status = models.CharField(max_length=10, choices=OneIdStatus.choices, default=OneIdStatus.ACTIVE)
    merged_into = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OneID"
        # Only retired OneIDs have an heir: an active OneID (the batch creates 750k) writes no entry.
        indexes = [
            models.Index(fields=["merged_into"], name="oneid_merged_into_idx", condition=Q(merged_into__isnull=False))
        ]

    def __str__(self) -> str:
        return f"OneID {self.subject_id}"


class SourceRecord(models.Model):
    """A person (or doctor, clinic) as one source system knows them; never deleted by a merge."""

    id = models.BigAutoField(primary_key=True)
    # Indexed by source_record_unique_key (source first): a second index would only slow every write.
    source = models.ForeignKey(SourceSystem, on_delete=models.PROTECT, related_name="records", db_index=False)
    external_id = models.CharField(max_length=128)
    raw = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=32)
    brand = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="source_record_unique_key"),
        ]
        indexes = [models.Index(fields=["brand", "id"], name="source_record_brand_idx")]

    def __str__(self) -> str:  # no external id: it may be an openid (labels reach admin titles and logs)
        return f"record {self.pk} of source {self.source_id}"

    @property
    def assigned_oneid_id(self) -> int | None:
        """The OneID this record belongs to, ``None`` before it is resolved.

        One query per record unless the queryset has ``select_related("assignment")``: lists
        select it, querysets filter on ``assignment__oneid``."""
        try:
            return self.assignment.oneid_id
        except RecordAssignment.DoesNotExist:
            return None


class RecordAssignment(models.Model):
    """Which OneID a source record belongs to: one narrow row per resolved record.

    Not a column of ``SourceRecord``: the batch's first run assigns a million records at once, and
    updating a wide row (raw fields, four indexes, no HOT update possible) cost 19–25 s where
    copying a million narrow rows costs about 3. A record has no row until it is resolved.
    """

    # No database constraints (as Identifier.record): rows are written set-based by the resolvers,
    # and a deferred check per row cost as much as the write. The ORM still cascades on deletes;
    # OneID subjects are retired, never deleted, by the services.
    record = models.OneToOneField(
        SourceRecord, primary_key=True, on_delete=models.CASCADE, related_name="assignment", db_constraint=False
    )
    oneid = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="record_assignments", db_constraint=False)

    class Meta:
        verbose_name = "record assignment"

    def __str__(self) -> str:
        return f"record {self.record_id} → OneID {self.oneid_id}"


class IdentifierStatus(models.TextChoices):
    LINK = "link", "Links"
    PART = "part", "Composite part only"
    BLOCKED = "blocked", "Blocked value"


class Identifier(models.Model):
    """One normalized value of a record. ``key`` is a 64-bit digest of (subject type,
    identifier type or composite key, scope, value): the graph's node for that value."""

    id = models.BigAutoField(primary_key=True)
    # No database-level foreign keys: identifiers are written only by the ingest service
    # (COPY, millions of rows) and a deferred FK check per row tripled its cost. Django
    # still cascades (record) and protects (types) on ORM deletes.
    record = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="identifiers", db_constraint=False)
    identifier_type = models.ForeignKey(
        IdentifierType, null=True, blank=True, on_delete=models.PROTECT, db_constraint=False, db_index=False
    )
    composite_key = models.ForeignKey(
        CompositeKey, null=True, blank=True, on_delete=models.PROTECT, db_constraint=False, db_index=False
    )
    scope = models.CharField(max_length=160, blank=True)
    value = models.CharField(max_length=512)
    key = models.BigIntegerField()
    status = models.CharField(max_length=8, choices=IdentifierStatus.choices)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["key"], name="identifier_key_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(identifier_type__isnull=True) ^ Q(composite_key__isnull=True),
                name="identifier_type_xor_composite",
            )
        ]

    def __str__(self) -> str:  # never the value: it is personal data
        return f"identifier {self.pk} of record {self.record_id}"


class ManualLink(models.Model):
    """An operator's decision that two records are one person (manual merge); links first."""

    record_a = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    record_b = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["record_b"], name="manual_link_b_idx")]

    def __str__(self) -> str:
        return f"{self.record_a_id} = {self.record_b_id}"


class DoNotLink(models.Model):
    """Written by a split: no OneID may hold a record of side A and a record of side B."""

    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"do not link #{self.pk}"


class DoNotLinkSide(models.Model):
    constraint = models.ForeignKey(DoNotLink, on_delete=models.CASCADE, related_name="sides")
    record = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="do_not_link_sides")
    side = models.CharField(max_length=1, choices=[("a", "A"), ("b", "B")])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["constraint", "record"], name="do_not_link_side_unique")]

    def __str__(self) -> str:
        return f"{self.constraint_id}{self.side}: {self.record_id}"


class MergeKind(models.TextChoices):
    MERGE = "merge", "Merge"
    SPLIT = "split", "Split (by the rules)"
    MANUAL_MERGE = "manual_merge", "Manual merge"
    MANUAL_SPLIT = "manual_split", "Manual split"


class MergeEvent(models.Model):
    """Why OneIDs were merged or split: rule, identifier values, records, actor."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=MergeKind.choices)
    oneid = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+", help_text="The surviving OneID.")
    others = models.JSONField(default=list, help_text="OneIDs merged into it, or split off from it.")
    rule = models.CharField(max_length=200, blank=True)
    evidence = models.JSONField(default=list, help_text="[{rule, value, records}] that made the link.")
    records = models.JSONField(default=list)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    correlation_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["oneid", "id"], name="merge_event_oneid_idx")]

    def __str__(self) -> str:
        return f"{self.kind} → {self.oneid_id}"


class SuggestionStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class MatchSuggestion(models.Model):
    """A fuzzy candidate pair for an operator; never merges on its own."""

    oneid_a = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    oneid_b = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    evidence = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=SuggestionStatus.choices, default=SuggestionStatus.OPEN)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-score", "id"]
        constraints = [models.UniqueConstraint(fields=["oneid_a", "oneid_b"], name="suggestion_pair_unique")]

    def __str__(self) -> str:
        return f"{self.oneid_a_id} ~ {self.oneid_b_id} ({self.score:.2f})"


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped (a later run applied it)"
    FAILED = "failed", "Failed"


class ReapplyRun(models.Model):
    """One re-application of the rules to the stored records, requested by a rule change or by hand.

    A run started after this one was requested saw its change, so when it has finished this
    one is skipped (``covered_by``): ten blocked values entered one after the other cost one
    pass over the records, not ten.
    """

    id = models.BigAutoField(primary_key=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(help_text="When the change that asked for it was committed.")
    refresh_golden = models.BooleanField(default=False, help_text="Rebuild every golden record too.")
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    covered_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    records = models.PositiveIntegerField(default=0, help_text="Records read.")
    changed = models.PositiveIntegerField(default=0, help_text="Records whose identifiers were rewritten.")
    added = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    problems = models.PositiveIntegerField(default=0, help_text="Stored values the current rules reject.")
    problem_samples = models.JSONField(default=list, blank=True, help_text="The first 50: record, field, message.")
    resolution = models.JSONField(default=dict, blank=True, help_text="Records moved, OneIDs created, merges, splits.")
    correlation_id = models.UUIDField(default=uuid.uuid4)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "rules re-application"

    def __str__(self) -> str:
        return f"rules re-application {self.pk} ({self.status})"
