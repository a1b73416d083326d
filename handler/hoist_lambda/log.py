"""One JSON line per event on stdout: CloudWatch keeps each as one log event,
and `invoke serve` shows them as they come."""
from __future__ import annotations

import json
from typing import Any


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"hoist": event, **fields}, default=str), flush=True)
