"""The operator's OneID admin: rules, source records (with CSV import), OneIDs, history, suggestions.

Every write goes through ``identity.services``: rules through ``config_save``, a
split through ``oneid_split`` (the OneID page), a merge through ``oneid_merge``
(an action on two selected OneIDs), suggestions through accept / reject actions.
"""

from __future__ import annotations

import contextlib

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from import_export.admin import ImportExportMixin
from import_export.formats import base_formats

from common.errors import ServiceError

from .imports import SourceRecordResource
from .models import (
    BlockedValue,
    CompositeKey,
    IdentifierType,
    MatchSuggestion,
    MergeEvent,
    OneId,
    SourceRecord,
    SourceSystem,
    SurvivorshipRule,
)
from .selectors import oneid_detail
from .services import oneid_merge, oneid_split
from .services.config import check_rules, config_delete, config_save
from .services.suggestions import suggestion_accept, suggestion_reject


class ConfigForm(forms.ModelForm):
    """Shows the service's rule checks as form errors before anything is saved."""

    def _post_clean(self) -> None:
        super()._post_clean()
        try:
            check_rules(self.instance)
        except ServiceError as exc:
            for error in exc.errors:
                self.add_error(error.field if error.field in self.fields else None, error.message)


class ConfigAdmin(admin.ModelAdmin):
    """Rules are saved and deleted by the config service (validation, auditlog with the actor)."""

    form = ConfigForm

    def save_model(self, request, obj, form, change) -> None:
        config_save(actor=request.user, model=type(obj), data={}, instance=obj)

    def delete_model(self, request, obj) -> None:
        config_delete(actor=request.user, instance=obj)


@admin.register(SourceSystem)
class SourceSystemAdmin(ConfigAdmin):
    list_display = ("code", "name", "kind", "brand", "trust_rank", "app_id", "open_platform_id", "subject_type")
    list_filter = ("kind",)
    search_fields = ("code", "name")
    raw_id_fields = ("brand",)


@admin.register(IdentifierType)
class IdentifierTypeAdmin(ConfigAdmin):
    list_display = (
        "code",
        "normalizer",
        "linking",
        "priority",
        "max_per_oneid",
        "max_shared_records",
        "scoping",
        "active",
    )
    list_filter = ("linking", "scoping", "active")


@admin.register(CompositeKey)
class CompositeKeyAdmin(ConfigAdmin):
    list_display = ("code", "name", "parts", "priority", "max_shared_records", "active")


@admin.register(BlockedValue)
class BlockedValueAdmin(ConfigAdmin):
    list_display = ("identifier_type", "value", "pattern", "reason")
    list_filter = ("identifier_type",)


@admin.register(SurvivorshipRule)
class SurvivorshipRuleAdmin(ConfigAdmin):
    list_display = ("attribute", "strategy")


@admin.register(SourceRecord)
class SourceRecordAdmin(ImportExportMixin, admin.ModelAdmin):
    """Read-only: records arrive through the API or the CSV import, both through the service."""

    resource_classes = [SourceRecordResource]
    skip_admin_log = True  # audited by the service's domain events, not one admin LogEntry per row
    import_formats = [base_formats.CSV]
    export_formats = [base_formats.CSV]
    list_display = ("id", "source", "external_id", "brand", "oneid", "updated_at")
    list_filter = ("source",)
    list_select_related = ("source", "brand", "oneid")
    search_fields = ("=external_id",)
    show_full_result_count = False
    readonly_fields = ("source", "external_id", "raw", "content_hash", "brand", "oneid", "created_at", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_import_permission(self, request) -> bool:
        return request.user.has_perms(["identity.add_sourcerecord", "identity.change_sourcerecord"])


@admin.action(description="Merge the two selected OneIDs (manual merge)", permissions=["change"])
def merge_selected(modeladmin, request, queryset):
    ids = sorted(queryset.values_list("subject_id", flat=True))
    if len(ids) != 2:
        modeladmin.message_user(request, "Select exactly two OneIDs to merge.", messages.ERROR)
        return None
    try:
        survivor = oneid_merge(actor=request.user, oneids=ids, reason="admin")
    except ServiceError as exc:
        modeladmin.message_user(request, f"Not merged: {exc.message}", messages.ERROR)
        return None
    modeladmin.message_user(request, f"Merged into OneID {survivor}.", messages.SUCCESS)
    return None


@admin.register(OneId)
class OneIdAdmin(admin.ModelAdmin):
    list_display = ("subject", "status", "merged_into", "updated_at")
    list_filter = ("status",)
    list_select_related = ("subject", "merged_into")
    search_fields = ("=subject__id", "subject__display_name")
    show_full_result_count = False
    actions = [merge_selected]
    readonly_fields = ("subject", "status", "merged_into", "created_at", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        """Nothing on the page is editable; changes are splits and merges, through the services."""

    def get_urls(self):
        split = path("<int:pk>/split/", self.admin_site.admin_view(self.split_view), name="identity_oneid_split")
        return [split, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        with contextlib.suppress(ValueError, ServiceError):
            extra_context["detail"] = oneid_detail(
                int(object_id), include_records=request.user.has_perm("identity.view_sourcerecord")
            )
        extra_context["can_split"] = self.has_change_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def split_view(self, request, pk: int):
        oneid = get_object_or_404(OneId, subject_id=pk)
        if request.method != "POST" or not self.has_change_permission(request, oneid):
            raise PermissionDenied
        records = [int(r) for r in request.POST.getlist("records") if r.isdigit()]
        try:
            kept, new = oneid_split(
                actor=request.user, oneid=pk, records=records, reason=request.POST.get("reason", "")
            )
        except ServiceError as exc:
            self.message_user(request, f"Not split: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, f"Split: OneID {kept} kept the rest, the selected records are OneID {new}.")
        return HttpResponseRedirect(reverse("admin:identity_oneid_change", args=[pk]))


@admin.register(MergeEvent)
class MergeEventAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "oneid", "rule", "others", "actor", "created_at")
    list_filter = ("kind",)
    show_full_result_count = False
    raw_id_fields = ("oneid",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.action(description="Accept: merge the pair", permissions=["accept"])
def accept_selected(modeladmin, request, queryset):
    for suggestion in queryset.filter(status="open"):
        try:
            suggestion_accept(actor=request.user, suggestion_id=suggestion.id)
        except ServiceError as exc:
            modeladmin.message_user(request, f"Suggestion {suggestion.id}: {exc.message}", messages.ERROR)


@admin.action(description="Reject: never propose the pair again", permissions=["change"])
def reject_selected(modeladmin, request, queryset):
    for suggestion in queryset.filter(status="open"):
        suggestion_reject(actor=request.user, suggestion_id=suggestion.id)


@admin.register(MatchSuggestion)
class MatchSuggestionAdmin(admin.ModelAdmin):
    list_display = ("id", "oneid_a", "oneid_b", "score", "evidence", "status", "decided_by")
    list_filter = ("status",)
    raw_id_fields = ("oneid_a", "oneid_b")
    actions = [accept_selected, reject_selected]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("identity.change_matchsuggestion") and obj is None

    def has_accept_permission(self, request) -> bool:
        """Accepting merges two OneIDs: it needs what a manual merge needs (as the API does)."""
        return request.user.has_perms(["identity.change_matchsuggestion", "identity.change_oneid"])
