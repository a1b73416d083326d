"""The shape of the code (docs/design.md, "Shape"), read from every module's imports with ast.

- the stages (builder/, validate/, sync/, deploy/, runtime/) import pipeline/ and never each other
  (validate's smoke test may use runtime/, the emulator it runs the handler in);
- pipeline/ imports no stage and no composer: it is the bottom;
- composing stages happens in compose/ only (tasks.py and bench/ sit above, and may call anything);
- handler/ runs in Lambda and imports nothing of the project;
- dist/'s records (build.json, manifest.json) are named, so written and read, in pipeline/records.py only.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

from tests.conftest import REPO

STAGES = ("builder", "validate", "sync", "deploy", "runtime")
PROJECT = {*STAGES, "pipeline", "compose", "bench", "docsite", "tasks", "handler", "model", "tests"}
ALLOWED = {("validate", "runtime")}  # the smoke test runs the handler under runtime/'s Runtime API emulator
RECORDS_MODULE = "pipeline/records.py"
RECORD_FILES = ("build.json", "manifest.json")
CHECKED = sorted(PROJECT - {"tests", "tasks"})  # the folders read (never dist/ or a cache: they hold other code)


def modules(root: Path) -> list[Path]:
    found = [root / "tasks.py"] if (root / "tasks.py").is_file() else []
    for top in CHECKED:
        for folder, dirs, files in os.walk(root / top):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            found += [Path(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def imported(path: Path) -> set[str]:
    """Top-level names of what ``path`` imports anywhere in it (also inside functions); relative imports stay in its own package."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add((node.module or "").split(".")[0])
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def record_names(path: Path) -> list[str]:
    """String constants (not docstrings) that name a record file: a path to it, a key ending in it, an f-string part."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    return sorted({node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and id(node) not in docs and node.value.rstrip("\"'").endswith(RECORD_FILES)})


def violations(root: Path) -> list[str]:
    found = []
    for path in modules(root):
        rel = path.relative_to(root).as_posix()
        top = path.relative_to(root).parts[0]
        names = imported(path) & PROJECT
        if top in STAGES:
            found += [f"{rel} imports {n}: a stage imports pipeline/ only" for n in sorted(names - {top, "pipeline"}) if (top, n) not in ALLOWED]
        elif top == "pipeline":
            found += [f"{rel} imports {n}: pipeline/ imports nothing above it" for n in sorted(names - {"pipeline"})]
        elif top == "handler":
            found += [f"{rel} imports {n}: handler/ imports nothing of the pipeline" for n in sorted(names)]
        if rel != RECORDS_MODULE:
            found += [f"{rel} names {name!r}: build.json and manifest.json are written and read in {RECORDS_MODULE} only" for name in record_names(path)]
    return found


def test_the_stages_import_pipeline_only_and_the_records_live_in_one_module():
    # GIVEN every module of the repository  WHEN its imports and string constants are read  THEN none breaks the shape
    assert violations(REPO) == []


def test_the_check_finds_each_kind_of_break(tmp_path):
    # GIVEN a tree that breaks every rule once
    files = {
        "deploy/stage.py": "from builder.build import build\n",
        "runtime/serve.py": "def f():\n    from sync.efs import plan_sync\n",
        "validate/smoke.py": "from runtime.emulator import RuntimeAPI\nfrom . import checks\n",  # allowed: no finding
        "pipeline/config.py": "import compose.deploy\n",
        "handler/app.py": "from pipeline.errors import PipelineError\nimport json\n",
        "sync/stage.py": 'def f(d):\n    """Reads build.json."""\n    return d / "build.json"\n',
        "bench/x.py": 'P = f"{1}/manifest.json"\nimport builder, deploy\n',  # the import is fine above the stages; the name is not
        "pipeline/records.py": 'MANIFEST = "manifest.json"\n',
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # WHEN the check runs
    found = violations(tmp_path)
    # THEN it names each break and nothing else
    assert found == [
        "bench/x.py names '/manifest.json': build.json and manifest.json are written and read in pipeline/records.py only",
        "deploy/stage.py imports builder: a stage imports pipeline/ only",
        "handler/app.py imports pipeline: handler/ imports nothing of the pipeline",
        "pipeline/config.py imports compose: pipeline/ imports nothing above it",
        "runtime/serve.py imports sync: a stage imports pipeline/ only",
        "sync/stage.py names 'build.json': build.json and manifest.json are written and read in pipeline/records.py only",
    ]


def test_tasks_ask_and_turn_errors_into_exits_in_one_place_each():
    # GIVEN tasks.py  WHEN its functions are read  THEN only _confirm calls input() and only _stage catches PipelineError
    tree = ast.parse((REPO / "tasks.py").read_text())
    asking, catching = set(), set()
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "input":
                asking.add(fn.name)
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "PipelineError":
                catching.add(fn.name)
    assert asking == {"_confirm"} and catching <= {"_stage", "run"}
