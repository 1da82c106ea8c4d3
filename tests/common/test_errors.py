"""The API's one error shape also covers unexpected failures."""

import logging

from rest_framework.permissions import AllowAny
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView


class Broken(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    def get(self, request):
        raise RuntimeError("secret internal detail")


def test_unhandled_error_is_json_500_without_internals(caplog):
    request = APIRequestFactory().get("/broken/")
    with caplog.at_level(logging.ERROR, logger="tagweave.api"):
        response = Broken.as_view()(request)
    assert response.status_code == 500
    assert response.data == {"error": {"code": "server_error", "message": "Internal server error.", "details": []}}
    assert "secret internal detail" not in str(response.data)
    assert any("Broken" in r.getMessage() and r.exc_info for r in caplog.records)
