"""Write a tree of files for a test: relative path -> text or bytes."""
from __future__ import annotations

from pathlib import Path


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


# A child script's lines that put ``tree`` on sys.path as it is (``mode`` "plain": no Hoist, as activate() leaves the
# path) or activate it with the handler library at ``handler`` (the names the script defines before these lines)
ACTIVATE_OR_PLAIN = """\
if mode == "plain":
    sys.path.append(tree)
else:
    sys.path.insert(0, handler)
    from hoist_lambda import activate as a
    env = a.activate(tree)
    sys.path.remove(handler)
    assert env.hydrated, env.why
"""
