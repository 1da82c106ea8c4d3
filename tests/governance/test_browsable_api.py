"""The browsable API (HTML) of the subjects endpoints: a writer's edit forms render, masked.

DRF's HTML renderer fills the PUT forms of a detail page by serializing the object through the
view's serializer for ``update``: ours is the write serializer, which describes a request body
and does not pass through the PII masking.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _html(client, url):
    return client.get(url, HTTP_ACCEPT="text/html")


def test_a_writers_subject_detail_renders_with_the_name_masked(gov):
    response = _html(gov.client("brand_operator"), f"/api/v1/subjects/{gov.member_in.pk}/")
    assert response.status_code == 200
    assert "Member in" not in response.content.decode()


def test_a_writers_relationship_detail_renders(gov):
    response = _html(gov.client("brand_operator"), f"/api/v1/relationships/{gov.rel_in.pk}/")
    assert response.status_code == 200
    assert "Member in" not in response.content.decode()


def test_out_of_scope_is_still_404_in_html(gov):
    assert _html(gov.client("brand_operator"), f"/api/v1/subjects/{gov.member_out.pk}/").status_code == 404
