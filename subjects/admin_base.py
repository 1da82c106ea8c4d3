"""What every subjects ModelAdmin shares: scoped reads; writes and deletes go through the services.

``ScopedAdminMixin`` is the admin's twin of ``common.api.scoping.ScopedQuerysetMixin``: the
changelist, change page, delete page, autocomplete (Django asks the *related* model's admin for
its queryset), CSV export (import-export builds the changelist) and every foreign-key choice
start from the scoped queryset, so an out-of-scope subject is simply absent (Django then says it
does not exist). Full result counts are off: "N of M" would reveal how many subjects exist.

Saving is done by the form (see ``admin_forms``). Deleting calls the service;
its refusal (``ServiceError``) becomes an error message instead of a 500, and the
delete confirmation does not walk the related objects (a subject type can hold
millions of subjects): it shows counts, and the service decides.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import model_ngettext, unquote
from django.contrib.auth import get_permission_codename
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse

from common.api.scoping import scope_queryset
from common.errors import ServiceError

from .access import visible_subjects

MAX_LISTED = 100
MAX_BULK_DELETE = 100


class DeleteRefused(Exception):
    """A service refused a delete inside the admin's delete view; rolls its transaction back."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


@admin.action(permissions=["delete"], description="Delete selected %(verbose_name_plural)s")
def delete_selected(modeladmin, request, queryset):
    """Django's confirmation page, then one service call per object, all or nothing."""
    if not request.POST.get("post"):
        return django_delete_selected(modeladmin, request, queryset)
    count = queryset.count()
    if count > MAX_BULK_DELETE:
        modeladmin.message_user(
            request,
            f"Select at most {MAX_BULK_DELETE} {modeladmin.opts.verbose_name_plural} to delete at once; got {count}.",
            messages.ERROR,
        )
        return None
    objects = list(queryset)
    refusals = modeladmin.delete_all_or_nothing(request, objects)
    if refusals:
        for message in refusals:
            modeladmin.message_user(request, message, messages.ERROR)
        modeladmin.message_user(request, "Nothing was deleted.", messages.WARNING)
        return None
    modeladmin.message_user(
        request,
        f"Successfully deleted {len(objects)} {model_ngettext(modeladmin.opts, len(objects))}.",
        messages.SUCCESS,
    )
    return None


class ScopedAdminMixin:
    """Put before ``admin.ModelAdmin``; ``scope_field`` as in ``ScopedQuerysetMixin``."""

    scope_field: str | tuple[str, ...] | None = None
    show_full_result_count = False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        related = self.get_list_select_related(request)
        if queryset.query.select_related and isinstance(related, (list, tuple)):
            # The changelist skips list_select_related once the queryset selects anything related
            # (a mixin's select_related): add it here, or every row loads its foreign keys.
            queryset = queryset.select_related(*related)
        if self.scope_field is None:
            return queryset
        return scope_queryset(queryset, request.user, self.scope_field)

    def has_view_permission(self, request, obj=None) -> bool:
        """Reading needs the view permission itself.

        Django lets ``change`` imply ``view``; a write-only role (an integration's token holds add
        and change, not view) must not read through the admin what the API does not show it.
        """
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('view', opts)}")

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and self.has_view_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """A subject chosen in a form (select, raw id or autocomplete) must be one the user sees."""
        from .models import Subject

        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and db_field.related_model is Subject:
            field.queryset = visible_subjects(request.user, field.queryset)
        return field


class ServiceAdmin(admin.ModelAdmin):
    """A ModelAdmin whose form saves through a service and whose deletes call one."""

    actions = [delete_selected]

    def service_delete(self, actor, obj) -> None:
        raise NotImplementedError

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def save_model(self, request, obj, form, change) -> None:
        """The form already saved ``obj`` through the service while validating."""

    def save_related(self, request, form, formsets, change) -> None:
        """No inlines and no many-to-many fields: nothing written outside the service."""

    def delete_model(self, request, obj) -> None:
        try:
            self.service_delete(request.user, obj)
        except ServiceError as exc:
            raise DeleteRefused(exc) from exc

    def delete_queryset(self, request, queryset) -> None:
        refusals = self.delete_all_or_nothing(request, list(queryset), log=False)
        if refusals:
            raise DeleteRefused(ServiceError(" ".join(refusals)))

    def delete_all_or_nothing(self, request, objects, log: bool = True) -> list[str]:
        """Delete each object through the service; any refusal rolls all of them back."""
        refusals = []
        with transaction.atomic():
            if log:
                self.log_deletions(request, objects)
            for obj in objects:
                try:
                    with transaction.atomic():
                        self.service_delete(request.user, obj)
                except ServiceError as exc:
                    refusals.append(exc.message)
            if refusals:
                transaction.set_rollback(True)
        return refusals

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DeleteRefused as refused:
            self.message_user(request, refused.error.message, messages.ERROR)
            url = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[unquote(object_id)],
                current_app=self.admin_site.name,
            )
            return HttpResponseRedirect(url)

    def get_deleted_objects(self, objs, request):
        """The objects themselves and counts, never the full graph of related rows."""
        listed = [str(obj) for obj in objs[:MAX_LISTED]]
        total = len(objs) if isinstance(objs, list) else objs.count()
        if total > len(listed):
            listed.append(f"… and {total - len(listed)} more")
        counts = {str(self.opts.verbose_name_plural): total, **self.related_delete_counts(objs)}
        return listed, counts, set(), []

    def related_delete_counts(self, objs) -> dict[str, int]:
        return {}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the system writes (jobs, runs, histories): listed and shown, never added, edited or deleted."""

    actions = []

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
