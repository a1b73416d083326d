"""`invoke bench <name>`: every benchmark by name."""
from __future__ import annotations

from . import build_size, coldstart, serve_latency, sync_efs

BENCHMARKS = {"build": build_size.run, "sync": sync_efs.run, "serve": serve_latency.run, "coldstart": coldstart.run}
