import pytest

from common.errors import ConflictError
from identity.models import MatchSuggestion
from identity.services.suggestions import suggestion_accept, suggestion_reject, suggestions_generate

from .helpers import partition, push

pytestmark = pytest.mark.django_db


def test_fuzzy_suggestions_never_merge_until_accepted(sources, admin_user):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}),
        ("shop", "S1", {"name": "王 芳", "phone": "13812345678"}),
        ("crm_b", "B1", {"name": "李明", "phone": "13812345678"}),
    )
    assert len(partition()) == 3
    assert suggestions_generate(actor=admin_user) == 1
    suggestion = MatchSuggestion.objects.get()
    assert suggestion.score >= 80 and suggestion.evidence["shared"] == ["+8613812345678"]
    assert len(partition()) == 3
    assert suggestions_generate(actor=admin_user) == 0  # not proposed twice
    suggestion_accept(actor=admin_user, suggestion_id=suggestion.id)
    assert len(partition()) == 2
    with pytest.raises(ConflictError):
        suggestion_reject(actor=admin_user, suggestion_id=suggestion.id)


def test_suggestion_endpoints(api, sources):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}),
        ("shop", "S1", {"name": "王 芳", "phone": "13812345678"}),
    )
    suggestions_generate(actor=None)
    listed = api.get("/api/v1/match-suggestions/").json()["results"]
    assert listed, "expected a suggestion"
    response = api.post(f"/api/v1/match-suggestions/{listed[0]['id']}/reject/")
    assert response.status_code == 204
    assert MatchSuggestion.objects.get(id=listed[0]["id"]).status == "rejected"
