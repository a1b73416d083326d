"""The HTTP API's routes: the stack creates exactly these, and the local gateway answers only these."""
from __future__ import annotations

# (CloudFormation logical name, method, path)
ROUTES = (("Classify", "POST", "/classify"), ("Health", "GET", "/health"))


def route_key(method: str, path: str) -> str | None:
    """API Gateway's route key for a request ("POST /classify"), or None where no route matches (it answers 404)."""
    for _, m, p in ROUTES:
        if (m, p) == (method.upper(), path.split("?", 1)[0]):
            return f"{m} {p}"
    return None
