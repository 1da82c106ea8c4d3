"""The CSV import button on the tag values list (``tags.imports`` does the work)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from import_export.admin import ImportMixin
from import_export.formats import base_formats

ROWS_REPORTED = 20


class TagValueImportMixin(ImportMixin):
    import_formats = [base_formats.CSV]
    skip_admin_log = True  # the service writes the audit (one domain event per tag)

    def get_resource_classes(self, request=None):
        from tags.imports import TagValueResource

        return [TagValueResource]

    def has_import_permission(self, request) -> bool:
        """The list is read-only, but an import sets and removes values: it needs those permissions."""
        return request.user.has_perms(("tags.add_tagvalue", "tags.change_tagvalue", "tags.delete_tagvalue"))

    def add_success_message(self, result, request):
        totals = result.totals
        self.message_user(
            request,
            f"Import finished: {totals['new']} set, {totals['update']} changed, {totals['delete']} removed, "
            f"{totals['skip']} unchanged tag values.",
            messages.SUCCESS,
        )

    def process_result(self, result, request):
        """The confirm step can still fail if data changed since the preview; then nothing was written."""
        if not result.has_validation_errors():
            return super().process_result(result, request)
        for row in result.invalid_rows[:ROWS_REPORTED]:
            for field, errors in row.error_dict.items():
                self.message_user(request, f"Row {row.number}, {field}: {'; '.join(errors)}", messages.ERROR)
        self.message_user(request, "The import failed; nothing was written.", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:tags_tagvalue_import"))
