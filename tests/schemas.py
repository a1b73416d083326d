"""The JSON Schemas of what Hoist writes (docs/schemas/), as auditwheel checks its `show` output against
its schema: a test checks a document the code wrote against them, not against a copy of the code's branches."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@cache
def _registry() -> Registry:
    """Every schema by its $id, so that one names another (target.schema.json) without any download."""
    resources = [Resource.from_contents(json.loads(path.read_text())) for path in sorted(SCHEMAS.glob("*.schema.json"))]
    return Registry().with_resources((r.id(), r) for r in resources)  # type: ignore[misc]


def validator(name: str) -> Draft202012Validator:
    """The validator of docs/schemas/<name>.schema.json."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, registry=_registry())


def problems(name: str, doc: object) -> list[str]:
    """What is wrong with ``doc`` against schema ``name``: one line per error, [] when it conforms."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator(name).iter_errors(doc)]


def assert_conforms(name: str, doc: object) -> None:
    found = problems(name, doc)
    assert not found, f"not a valid {name} document:\n" + "\n".join(found)
