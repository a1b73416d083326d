"""The model folder's contract, for the stages: checked at `invoke build`,
`invoke validate`, serve start and deploy, with the handler's own rules.

The rules live in handler/hoist_lambda/contract.py (standard library only, so
the handler runs them at init too); this module loads that file by path, turns
its problems into a ``ModelError`` naming the folder, file, key and fix, and
runs the check that needs torch (labels against the model's output on a dummy
input) in the target's interpreter with its built tree.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from types import ModuleType

from . import handlerlib, proc
from .errors import PipelineError

LIBRARY = handlerlib.LIBRARY


class ModelError(PipelineError):
    stage = "model"


@functools.cache
def contract() -> ModuleType:
    """handler/hoist_lambda/contract.py, loaded by path (the handler folder is no package of the pipeline)."""
    return handlerlib.load("contract", "hoist_model_contract")


def _error(folder: Path, problems: list) -> ModelError:
    first = problems[0]
    if len(problems) == 1:
        if first.file == ".":
            return ModelError(first.what, where=str(folder), fix=first.fix)
        return ModelError(f"{first.file}{': ' + first.key if first.key else ''} {first.what}", where=str(folder / first.file), fix=first.fix)
    lines = "\n".join(f"  {p.render()}" for p in problems)
    return ModelError(f"{len(problems)} problems:\n{lines}", where=str(folder), fix="fix each as shown")


def check(folder: Path):
    """The folder's contract (a ``contract.ModelFolder``), or a ModelError with every problem."""
    c = contract()
    try:
        return c.check(str(folder))
    except c.ModelFolderError as exc:
        raise _error(folder, exc.problems) from None


CHILD = r"""
import json, sys
sys.path[:0] = [sys.argv[1]]
for p in json.loads(sys.argv[3]):
    sys.path.append(p)
from hoist_lambda.contract import ModelFolderError
from hoist_lambda.model import load
try:
    model = load(sys.argv[2])
except ModelFolderError as exc:
    print(json.dumps({"problems": [p.__dict__ for p in exc.problems]}))
else:
    print(json.dumps({"labels": len(model.labels), "input": list(model.folder.pre.input_shape())}))
"""


def check_with_model(folder: Path, python: str, paths: list[Path], timeout_s: float = 600) -> dict:
    """``check`` plus what needs torch, run by ``python`` with ``paths`` (the built trees) on
    sys.path: the model loads as TorchScript and gives one output per label."""
    check(folder)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOIST_EFS_TREE": "", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}
    out = proc.capture([python, "-I", "-c", CHILD, str(LIBRARY), str(folder), json.dumps([str(p) for p in paths])],
                       timeout=timeout_s, env=env, clean_env=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise ModelError(f"the model check could not run: {out.stderr.strip()[-1500:]}", where=str(folder),
                         fix="check that the target's tree holds torch (`invoke build --target local`)")
    doc = json.loads(lines[-1])
    if "problems" in doc:
        c = contract()
        raise _error(folder, [c.Problem(**p) for p in doc["problems"]])
    return doc


def sample(folder: Path) -> tuple[Path, str] | None:
    """The folder's sample image and its expected label (sample.json), if it has one."""
    found = check(folder).sample
    return (Path(found.image), found.label) if found else None
