"""The moonshot of `invoke bench build` (issue 26): SAM CLI's own warm build of the same requirements.

AWS SAM CLI builds a Python function with its ``python-uv`` build method (a beta
feature: ``sam build --beta-features``): ``uv`` installs the function's
requirements.txt for the function's runtime and architecture into
``.aws-sam/build``. It slims nothing, compiles no bytecode, checks no import and
records no hot set, so its figure is a floor, not a rival: the moonshot asks a
one-package change of Hoist's to take at most twice SAM's full warm build.

SAM CLI is installed on first use, pinned, into a virtual environment in Hoist's
cache (``<cache>/sam-cli-<version>``); where it cannot be installed (no index
reachable), the benchmark says why and reports no moonshot.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.emulation import cache_dir

SAM_VERSION = "1.170.0"  # aws-sam-cli on PyPI; its python-uv build method needs aws-lambda-builders >= 1.5x
COMPLETE = ".hoist-complete"
TEMPLATE = """AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Runtime: {runtime}
      Architectures: [{arch}]
    Metadata:
      BuildMethod: python-uv
"""


def requirements(pins: list[tuple[str, str]]) -> list[str]:
    """``name==version`` of every (name, version) the locks pin, sorted, once each: the same requirements SAM gets,
    without Hoist's URLs and hashes (SAM's requirements.txt is resolved by uv itself)."""
    return sorted({f"{name}=={version}" for name, version in pins})


def ensure_sam(say: Callable[[str], None]) -> Path:
    """The ``sam`` program of a pinned aws-sam-cli in Hoist's cache, installed on first use (a minute or two)."""
    venv = cache_dir() / f"sam-cli-{SAM_VERSION}"
    sam = venv / "bin" / "sam"
    if (venv / COMPLETE).is_file() and sam.is_file():
        return sam
    say(f"installing aws-sam-cli=={SAM_VERSION} into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"aws-sam-cli=={SAM_VERSION}"], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pip could not install aws-sam-cli=={SAM_VERSION}: {(out.stderr or out.stdout).strip()[-400:]}")
    (venv / COMPLETE).write_text(SAM_VERSION + "\n")
    return sam


def warm_build(*, pins: list[tuple[str, str]], runtime: str, arch: str, python_dir: Path, work: Path, runs: int, say: Callable[[str], None]) -> dict[str, Any]:
    """SAM's full build of the same requirements with uv's cache warm: one untimed build first, then ``runs`` timed
    ones, each into an empty ``.aws-sam``. ``python_dir``: the folder of the runtime's CPython (SAM looks for it on PATH)."""
    sam = ensure_sam(say)
    project = work / "sam-project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "fn").mkdir(parents=True)
    lines = requirements(pins)
    (project / "fn" / "requirements.txt").write_text("".join(line + "\n" for line in lines))
    (project / "fn" / "app.py").write_text("def handler(event, context):\n    return None\n")
    (project / "template.yaml").write_text(TEMPLATE.format(runtime=runtime, arch=arch))
    env = {**os.environ, "PATH": f"{python_dir}{os.pathsep}{os.environ.get('PATH', '')}", "SAM_CLI_TELEMETRY": "0"}
    seconds = []
    for i in range(runs + 1):
        shutil.rmtree(project / ".aws-sam", ignore_errors=True)
        started = time.perf_counter()
        out = subprocess.run([str(sam), "build", "--beta-features"], check=False, cwd=project, env=env, capture_output=True, text=True)
        took = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"sam build failed: {(out.stdout + out.stderr).strip()[-600:]}")
        if i:  # the first fills uv's cache
            seconds.append(took)
    built = project / ".aws-sam" / "build" / "Fn"
    size = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
    return {"version": SAM_VERSION, "build_method": "python-uv", "packages": len(lines), "seconds": round(statistics.median(seconds), 2),
            "seconds_all": [round(s, 2) for s in seconds], "bytes": size}
