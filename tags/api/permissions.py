"""Model permissions, with the verbs (``@action``s) naming exactly the permissions they need.

A POST to ``activate/`` is a change, not an add; ``preview/`` only reads. Without
this, DjangoModelPermissions would map every POST to ``add_<model>``.
"""

from __future__ import annotations

from common.api.permissions import ModelPermissions


class ActionPermissions(ModelPermissions):
    """``view.action_perms = {"activate": ["tags.change_tagdefinition"], …}`` overrides per action."""

    def has_permission(self, request, view) -> bool:
        perms = getattr(view, "action_perms", {}).get(getattr(view, "action", None))
        if perms is None:
            return super().has_permission(request, view)
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(perms))
