"""Subjects, relationships and the types that describe them.

Types are data, not code: operators create subject types and relationship types
with JSON Schemas for their attributes. Scopes (business lines, brands, regions)
are ordinary organisation subjects whose type carries a ``scope_role``; every
subject points at the scope subjects it belongs to.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from .querysets import SubjectQuerySet

code_validator = RegexValidator(
    r"^[a-z][a-z0-9_]*$",
    "Use lower-case letters, digits and underscores, starting with a letter.",
)


class SubjectCategory(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    STAFF = "staff", "Staff"
    ORGANIZATION = "organization", "Organization"
    CONTENT = "content", "Content"
    RELATIONSHIP = "relationship", "Relationship"


class ScopeRole(models.TextChoices):
    """Which scope dimension the subjects of an organisation type stand for."""

    NONE = "", "Not a scope"
    BUSINESS_LINE = "business_line", "Business line"
    BRAND = "brand", "Brand"
    REGION = "region", "Region"


class SubjectType(models.Model):
    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=20, choices=SubjectCategory.choices)
    description = models.TextField(blank=True)
    attribute_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text="JSON Schema that every subject's attributes must satisfy.",
    )
    scope_role = models.CharField(max_length=20, choices=ScopeRole.choices, default="", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope_role="") | Q(category="organization"),
                name="subject_type_scope_is_organization",
                violation_error_message="Only organization subject types can be scopes.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Subject(models.Model):
    """Anything that carries tags: a member, a doctor, a clinic, a brand, a relationship.

    Ids are dense integers so that sets of subjects can later be bitmaps.
    ``(subject_type, source, external_id)`` identifies a subject for idempotent upserts.
    """

    id = models.BigAutoField(primary_key=True)
    subject_type = models.ForeignKey(
        SubjectType,
        on_delete=models.PROTECT,
        related_name="subjects",
        db_index=False,  # subject_type_id_idx (subject_type, id) serves every lookup by type
    )
    display_name = models.CharField(max_length=255, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # Indexed as (column, id) below: the scope filter of every read, in id order for cursor pages.
    business_line = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    brand = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False)
    region = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        db_index=False,  # subject_parent_idx (partial, below)
        help_text="Parent scope subject: the region hierarchy (country → province → city).",
    )
    source = models.CharField(max_length=64)
    external_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SubjectQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_type", "source", "external_id"],
                name="subject_unique_external_key",
            )
        ]
        # The scope and parent columns are NULL for most subjects (every member and OneID) and no
        # query looks a subject up by a NULL scope: partial indexes hold only the set values, so a
        # batch creating 750k OneIDs writes three index entries a row instead of seven (4.5 → 2.5 s).
        # ``column = x`` (a strict operator, parameters included) implies ``IS NOT NULL``: every
        # lookup, the foreign keys' checks among them, still uses them.
        indexes = [
            models.Index(fields=["subject_type", "id"], name="subject_type_id_idx"),
            models.Index(fields=["region", "id"], name="subject_region_id_idx", condition=Q(region__isnull=False)),
            models.Index(fields=["brand", "id"], name="subject_brand_id_idx", condition=Q(brand__isnull=False)),
            models.Index(
                fields=["business_line", "id"], name="subject_line_id_idx", condition=Q(business_line__isnull=False)
            ),
            models.Index(fields=["parent"], name="subject_parent_idx", condition=Q(parent__isnull=False)),
        ]
        permissions = [
            ("all_scopes", "Can see and edit subjects in every scope"),
            ("view_pii", "Can see personal information unmasked"),
            ("integration_rate", "Is throttled at the integration API rate"),
        ]

    def __str__(self) -> str:
        from .pii import subject_label  # customers' and staff's names are masked unless revealed

        return subject_label(self)


class Cardinality(models.TextChoices):
    ONE_TO_ONE = "1:1", "one to one"
    ONE_TO_MANY = "1:n", "one to many"
    MANY_TO_ONE = "n:1", "many to one"
    MANY_TO_MANY = "n:m", "many to many"

    @classmethod
    def from_is_unique(cls, value: str) -> bool:
        """Whether a 'from' subject may hold at most one open relationship of the type."""
        return value in (cls.ONE_TO_ONE, cls.MANY_TO_ONE)

    @classmethod
    def to_is_unique(cls, value: str) -> bool:
        """Whether a 'to' subject may hold at most one open relationship of the type."""
        return value in (cls.ONE_TO_ONE, cls.ONE_TO_MANY)


class RelationshipType(models.Model):
    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    from_type = models.ForeignKey(
        SubjectType,
        on_delete=models.PROTECT,
        related_name="outgoing_relationship_types",
    )
    to_type = models.ForeignKey(
        SubjectType,
        on_delete=models.PROTECT,
        related_name="incoming_relationship_types",
    )
    cardinality = models.CharField(max_length=3, choices=Cardinality.choices, default=Cardinality.MANY_TO_MANY)
    taggable = models.BooleanField(
        default=False,
        help_text="Each relationship of this type is also a subject that can carry tags.",
    )
    subject_type = models.OneToOneField(
        SubjectType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="relationship_type",
        help_text="The subject type of this type's relationship subjects (taggable types only).",
    )
    attribute_schema = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class Relationship(models.Model):
    """A directed, optionally time-bounded link between two subjects.

    ``from_slot`` / ``to_slot`` carry the end's subject id while the relationship is
    open (no ``valid_to``) and its type limits that end to one relationship; unique
    constraints on them enforce cardinality inside PostgreSQL, race-free.
    """

    id = models.BigAutoField(primary_key=True)
    relationship_type = models.ForeignKey(RelationshipType, on_delete=models.PROTECT, related_name="relationships")
    from_subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="outgoing", db_index=False)
    to_subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="incoming", db_index=False)
    weight = models.FloatField(default=1.0)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_to = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=64)
    external_id = models.CharField(max_length=128)
    subject = models.OneToOneField(
        Subject,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="as_relationship",
        help_text="The relationship's own subject, for taggable relationship types.",
    )
    from_slot = models.BigIntegerField(null=True, blank=True, editable=False)
    to_slot = models.BigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["relationship_type", "source", "external_id"],
                name="relationship_unique_external_key",
            ),
            models.UniqueConstraint(
                fields=["relationship_type", "from_slot"],
                name="relationship_from_cardinality",
                deferrable=models.Deferrable.DEFERRED,
            ),
            models.UniqueConstraint(
                fields=["relationship_type", "to_slot"],
                name="relationship_to_cardinality",
                deferrable=models.Deferrable.DEFERRED,
            ),
            models.CheckConstraint(
                condition=Q(valid_to__isnull=True)
                | Q(valid_from__isnull=True)
                | Q(valid_to__gte=models.F("valid_from")),
                name="relationship_valid_period",
            ),
        ]
        indexes = [
            models.Index(
                fields=["from_subject", "relationship_type"],
                name="relationship_from_idx",
            ),
            models.Index(fields=["to_subject", "relationship_type"], name="relationship_to_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.relationship_type_id}: {self.from_subject_id} → {self.to_subject_id}"


class SubjectScope(models.Model):
    """A further scope a subject belongs to, beside its own ``business_line``/``brand``/``region``.

    A OneID whose source records come from two brands is one subject in both brands' scope; the
    identity app writes these rows (set-based) when it resolves. Visibility checks them in the
    same query as the subject's own columns (``SubjectQuerySet.in_scopes``).
    """

    id = models.BigAutoField(primary_key=True)
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="extra_scopes")
    business_line = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    brand = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    region = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(max_length=64, help_text="Who maintains the row, e.g. 'identity'.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subject", "business_line", "brand", "region", "origin"],
                name="subject_scope_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [
            models.Index(fields=["brand", "subject"], name="subject_scope_brand_idx"),
            models.Index(fields=["region", "subject"], name="subject_scope_region_idx"),
            models.Index(fields=["business_line", "subject"], name="subject_scope_line_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_id} in ({self.business_line_id}, {self.brand_id}, {self.region_id})"


class ScopeGrant(models.Model):
    """One scope granted to a user or to a Django group (a role): business line × brand × region.

    Dimensions left empty are unrestricted; a region covers its sub-regions. Grants live on
    scopes, never on single subjects, so that visibility is one filter on the subject query
    whatever the number of subjects (see ``subjects.access``).
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.CASCADE, related_name="scope_grants")
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="scope_grants"
    )
    business_line = models.ForeignKey(
        Subject,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        limit_choices_to={"subject_type__scope_role": "business_line"},
    )
    brand = models.ForeignKey(
        Subject,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        limit_choices_to={"subject_type__scope_role": "brand"},
    )
    region = models.ForeignKey(
        Subject,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        limit_choices_to={"subject_type__scope_role": "region"},
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="scope_grant_user_xor_group",
                violation_error_message="A scope grant is given either to a user or to a group.",
            ),
            models.CheckConstraint(
                condition=Q(business_line__isnull=False) | Q(brand__isnull=False) | Q(region__isnull=False),
                name="scope_grant_not_empty",
                violation_error_message="Name at least one of business line, brand or region; "
                "everything is granted by the 'all scopes' permission instead.",
            ),
        ]

    def __str__(self) -> str:
        holder = f"user {self.user_id}" if self.user_id else f"group {self.group_id}"
        return f"{holder}: line {self.business_line_id}, brand {self.brand_id}, region {self.region_id}"
