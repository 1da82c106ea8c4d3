import django_filters as filters
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import PermissionDenied

from ..access import can_see_pii
from ..models import Relationship, RelationshipType, Subject, SubjectType
from ..querysets import region_subtree_sql
from ..schemas import MAX_ID


class SubjectTypeFilter(filters.FilterSet):
    class Meta:
        model = SubjectType
        fields = {"code": ["exact"], "category": ["exact"], "scope_role": ["exact"]}


class RelationshipTypeFilter(filters.FilterSet):
    from_type = filters.CharFilter(field_name="from_type__code")
    to_type = filters.CharFilter(field_name="to_type__code")

    class Meta:
        model = RelationshipType
        fields = {"code": ["exact"], "cardinality": ["exact"], "taggable": ["exact"]}


class SubjectFilter(filters.FilterSet):
    type = filters.CharFilter(field_name="subject_type__code", help_text="Subject type code")
    within_region = filters.NumberFilter(method="filter_within_region", help_text="Region id; includes sub-regions")
    q = filters.CharFilter(
        method="filter_display_name", help_text="Display name contains (needs the PII permission: names are PII)"
    )
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gt")

    # Plain ids: a model choice filter would list every subject in the browsable API's form.
    business_line = filters.NumberFilter(field_name="business_line_id")
    brand = filters.NumberFilter(field_name="brand_id")
    region = filters.NumberFilter(field_name="region_id", help_text="Region id (exactly; see within_region)")
    parent = filters.NumberFilter(field_name="parent_id")

    class Meta:
        model = Subject
        fields = ["source", "external_id"]

    def filter_display_name(self, queryset, name, value):
        """Without ``view_pii`` a name search would be an oracle for masked names: refused (403)."""
        if not can_see_pii(getattr(self.request, "user", None)):
            raise PermissionDenied("Searching by display name needs the permission to see personal data.")
        return queryset.filter(display_name__icontains=value)

    def filter_within_region(self, queryset, name, value):
        if not 0 < value < MAX_ID:
            return queryset.none()
        subtree = region_subtree_sql(int(value))
        return queryset.filter(Q(region_id__in=subtree) | Q(id__in=subtree))


class RelationshipFilter(filters.FilterSet):
    type = filters.CharFilter(field_name="relationship_type__code", help_text="Relationship type code")
    from_subject = filters.NumberFilter(field_name="from_subject_id")
    to_subject = filters.NumberFilter(field_name="to_subject_id")
    valid_at = filters.IsoDateTimeFilter(method="filter_valid_at", help_text="Only relationships valid at this time")
    valid_now = filters.BooleanFilter(method="filter_valid_now", help_text="Only relationships valid now")

    class Meta:
        model = Relationship
        fields = ["source", "external_id"]

    def filter_valid_at(self, queryset, name, value):
        return queryset.filter(Q(valid_from__isnull=True) | Q(valid_from__lte=value)).filter(
            Q(valid_to__isnull=True) | Q(valid_to__gt=value)
        )

    def filter_valid_now(self, queryset, name, value):
        return self.filter_valid_at(queryset, name, timezone.now()) if value else queryset
