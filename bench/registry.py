"""`invoke bench <name>`: every benchmark by name."""
from __future__ import annotations

from . import build_size

BENCHMARKS = {"build": build_size.run}
