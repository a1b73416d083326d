"""API Gateway's side of a local endpoint: an HTTP request becomes an HTTP API
(payload 2.0) event, and the handler's proxy response becomes the HTTP reply (pipeline/httpapi.py, shared with
deploy's test of a published version)."""
from __future__ import annotations

from pipeline.httpapi import TEXT_TYPES, http_api_event, http_response

__all__ = ["TEXT_TYPES", "http_api_event", "http_response"]
