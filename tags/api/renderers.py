"""orjson rendering for the hot list endpoints (PERFORMANCE.md: rows from ``values_list`` + orjson)."""

from __future__ import annotations

import orjson
from rest_framework.renderers import JSONRenderer


class ORJSONRenderer(JSONRenderer):
    """The JSON of DRF's renderer (UTC as ``Z``), produced by orjson."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=str, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
