"""The operator's admin for subject types, subjects, relationship types and relationships.

Every write goes through ``subjects.services`` (forms in ``admin_forms``, deletes
in ``admin_base``, CSV imports in ``imports``). Lists are built for large tables:
no full counts, scope filters that list only scope subjects, raw-id or
autocomplete widgets instead of selects of the whole table.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from import_export.admin import ExportMixin, ImportMixin
from import_export.formats import base_formats

from tags.admin.subject_panel import may_set_values, set_tag_value, subject_tags_context

from .access import visible_subject_filter, visible_subjects
from .admin_base import ScopedAdminMixin, ServiceAdmin, delete_selected
from .admin_forms import RelationshipForm, RelationshipTypeForm, SubjectForm, SubjectTypeForm
from .imports import RelationshipResource, SubjectResource
from .models import Relationship, RelationshipType, ScopeGrant, ScopeRole, Subject, SubjectType
from .pii import PiiAdminMixin, RelationshipPiiAdminMixin
from .querysets import region_subtree_sql
from .schemas import MAX_ID
from .services import (
    relationship_delete,
    relationship_type_delete,
    subject_delete,
    subject_type_delete,
)

RELATIONSHIPS_PER_PAGE = 20
SCOPE_FIELDS = ("business_line", "brand", "region")


@admin.register(SubjectType)
class SubjectTypeAdmin(ServiceAdmin):
    form = SubjectTypeForm
    list_display = ("code", "name", "category", "scope_role", "updated_at")
    list_filter = ("category", "scope_role")
    search_fields = ("code", "name")
    readonly_fields = ("created_at", "updated_at")

    def service_delete(self, actor, obj) -> None:
        subject_type_delete(actor=actor, subject_type=obj)


@admin.register(RelationshipType)
class RelationshipTypeAdmin(ServiceAdmin):
    form = RelationshipTypeForm
    list_display = ("code", "name", "from_type", "to_type", "cardinality", "taggable")
    list_filter = ("cardinality", "taggable")
    list_select_related = ("from_type", "to_type")
    search_fields = ("code", "name")
    readonly_fields = ("subject_type", "created_at", "updated_at")

    def service_delete(self, actor, obj) -> None:
        relationship_type_delete(actor=actor, relationship_type=obj)


class ScopeFilter(admin.SimpleListFilter):
    """Choices are the subjects of the scope role's types only, not the whole table."""

    role = ""

    def lookups(self, request, model_admin):
        rows = visible_subjects(request.user, Subject.objects.filter(subject_type__scope_role=self.role))
        rows = rows.order_by("display_name", "id")
        return [
            (str(id_), name or f"{source}:{ext}")
            for id_, name, source, ext in rows.values_list("id", "display_name", "source", "external_id")
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not (value.isascii() and value.isdigit() and 0 < int(value) < MAX_ID):
            raise IncorrectLookupParameters(f"{self.parameter_name} must be a subject id.")
        return self.narrow(queryset, int(value))

    def narrow(self, queryset, scope_id: int):
        return queryset.filter(**{f"{self.parameter_name}_id": scope_id})


class BrandFilter(ScopeFilter):
    title = "brand"
    parameter_name = "brand"
    role = ScopeRole.BRAND


class BusinessLineFilter(ScopeFilter):
    title = "business line"
    parameter_name = "business_line"
    role = ScopeRole.BUSINESS_LINE


class RegionFilter(ScopeFilter):
    """A region covers its subtree: China lists the subjects of Shanghai and Beijing."""

    title = "region (with sub-regions)"
    parameter_name = "region"
    role = ScopeRole.REGION

    def narrow(self, queryset, scope_id: int):
        return queryset.filter(Q(region_id__in=region_subtree_sql(scope_id)))


def relationship_page(request, queryset, param: str, title: str, other_end: str) -> dict:
    """One page of a subject's relationships without a COUNT: one query of ``per_page + 1`` rows."""
    try:
        number = max(1, int(request.GET.get(param, "1")))
    except ValueError:
        number = 1
    offset = (number - 1) * RELATIONSHIPS_PER_PAGE
    rows = list(queryset[offset : offset + RELATIONSHIPS_PER_PAGE + 1])
    has_next = len(rows) > RELATIONSHIPS_PER_PAGE

    def url(page: int) -> str:
        query = request.GET.copy()
        query[param] = str(page)
        return "?" + query.urlencode()

    return {
        "title": title,
        "param": param,
        "other_end": other_end,
        "rows": [(rel, getattr(rel, other_end)) for rel in rows[:RELATIONSHIPS_PER_PAGE]],
        "number": number,
        "previous_url": url(number - 1) if number > 1 else None,
        "next_url": url(number + 1) if has_next else None,
    }


def relationship_panels(request, subject: Subject) -> list[dict]:
    """The subject's relationships whose other end the user sees too (a relationship is visible
    when both its ends are; the subject itself is, or its change page would not open)."""
    base = Relationship.objects.select_related("relationship_type").order_by("relationship_type_id", "id")
    outgoing = base.filter(visible_subject_filter(request.user, "to_subject"), from_subject_id=subject.pk)
    incoming = base.filter(visible_subject_filter(request.user, "from_subject"), to_subject_id=subject.pk)
    outgoing = outgoing.select_related("to_subject__subject_type")
    incoming = incoming.select_related("from_subject__subject_type")
    return [
        relationship_page(request, outgoing, "out_page", "Outgoing relationships", "to_subject"),
        relationship_page(request, incoming, "in_page", "Incoming relationships", "from_subject"),
    ]


class ImportServiceMixin(ImportMixin):
    """Imports run the bulk service (see ``imports``); the service writes the audit event."""

    import_formats = [base_formats.CSV]
    skip_admin_log = True

    def has_import_permission(self, request) -> bool:
        """An import creates and updates rows, so it needs both permissions."""
        return self.has_add_permission(request) and self.has_change_permission(request)

    def add_success_message(self, result, request):
        totals = result.totals
        self.message_user(
            request,
            f"Import finished: {totals['new']} created, {totals['update']} updated, "
            f"{totals['skip']} unchanged {self.opts.verbose_name_plural}.",
            messages.SUCCESS,
        )

    def process_result(self, result, request):
        """The confirm step can still fail if data changed since the preview; then nothing was written."""
        if not result.has_validation_errors():
            return super().process_result(result, request)
        for row in result.invalid_rows[:10]:
            for field, errors in row.error_dict.items():
                self.message_user(request, f"Row {row.number}, {field}: {'; '.join(errors)}", messages.ERROR)
        self.message_user(request, "The import failed; nothing was written.", messages.ERROR)
        return HttpResponseRedirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_import"))


@admin.register(Subject)
class SubjectAdmin(ScopedAdminMixin, PiiAdminMixin, ImportServiceMixin, ExportMixin, ServiceAdmin):
    scope_field = ""
    form = SubjectForm
    resource_classes = [SubjectResource]
    export_formats = [base_formats.CSV]
    list_display = ("id", "display_name", "subject_type", "source", "external_id", "brand", "region", "business_line")
    list_filter = ("subject_type", BrandFilter, RegionFilter, BusinessLineFilter)
    list_select_related = ("subject_type", "brand", "region", "business_line")
    search_fields = ("=external_id", "display_name")
    search_help_text = "Exact external id, or part of the display name."
    show_full_result_count = False
    autocomplete_fields = ("business_line", "brand", "region", "parent")
    readonly_fields = ("created_at", "updated_at")
    change_form_template = "admin/subjects/subject/change_form.html"
    actions = [delete_selected, set_tag_value]

    def has_export_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_set_tag_values_permission(self, request) -> bool:
        """The "set a tag value" action writes tag values, not subjects."""
        return may_set_values(request)

    def get_readonly_fields(self, request, obj=None):
        identity = ("subject_type", "source", "external_id") if obj is not None else ()
        return (*identity, *super().get_readonly_fields(request, obj))

    def get_search_results(self, request, queryset, search_term):
        """Autocomplete for a scope field offers only subjects of that scope role."""
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if request.GET.get("model_name") == "subject":
            field_name = request.GET.get("field_name")
            if field_name in SCOPE_FIELDS:
                queryset = queryset.filter(subject_type__scope_role=field_name)
            elif field_name == "parent":
                queryset = queryset.exclude(subject_type__scope_role="")
        return queryset, may_have_duplicates

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context["relationship_panels"] = relationship_panels(request, obj)
            if request.user.has_perm("tags.view_tagvalue"):
                context.update(subject_tags_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def related_delete_counts(self, objs) -> dict[str, int]:
        ids = [obj.pk for obj in objs[:1000]]
        count = Relationship.objects.filter(Q(from_subject_id__in=ids) | Q(to_subject_id__in=ids)).count()
        return {"relationships (deleted with them)": count}

    def service_delete(self, actor, obj) -> None:
        subject_delete(actor=actor, subject=obj)


@admin.register(Relationship)
class RelationshipAdmin(ScopedAdminMixin, RelationshipPiiAdminMixin, ImportServiceMixin, ServiceAdmin):
    scope_field = ("from_subject", "to_subject")  # visible when both ends are
    form = RelationshipForm
    resource_classes = [RelationshipResource]
    list_display = ("id", "relationship_type", "from_subject", "to_subject", "weight", "valid_from", "valid_to")
    list_filter = ("relationship_type",)
    list_select_related = ("relationship_type", "from_subject", "to_subject")
    raw_id_fields = ("from_subject", "to_subject")
    search_fields = ("=external_id",)
    show_full_result_count = False
    readonly_fields = ("subject", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        identity = ("relationship_type", "source", "external_id") if obj is not None else ()
        return (*identity, *super().get_readonly_fields(request, obj))

    def service_delete(self, actor, obj) -> None:
        relationship_delete(actor=actor, relationship=obj)


@admin.register(ScopeGrant)
class ScopeGrantAdmin(admin.ModelAdmin):
    """Who holds which scope. Changes are audited (django-auditlog; the admin's middleware knows
    the actor) and take effect on the holder's next request (access is computed per request)."""

    list_display = ("id", "user", "group", "business_line", "brand", "region", "created_at")
    list_filter = ("group",)
    list_select_related = ("user", "group", "business_line", "brand", "region")
    autocomplete_fields = ("user", "group", "business_line", "brand", "region")
    search_fields = ("user__username", "group__name")
    show_full_result_count = False


class ScopeGrantInline(admin.TabularInline):
    model = ScopeGrant
    extra = 1
    autocomplete_fields = ("business_line", "brand", "region")
    verbose_name = "scope grant"
    verbose_name_plural = "scope grants (business line × brand × region; empty = any)"


class UserScopeGrantInline(ScopeGrantInline):
    fk_name = "user"
    exclude = ("group",)


class GroupScopeGrantInline(ScopeGrantInline):
    fk_name = "group"
    exclude = ("user",)


class ScopedUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserScopeGrantInline]


class ScopedGroupAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, GroupScopeGrantInline]


admin.site.unregister(User)
admin.site.register(User, ScopedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, ScopedGroupAdmin)
