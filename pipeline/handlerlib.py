"""Modules of Hoist's handler library (handler/hoist_lambda/) that the stages share with the
handler, loaded by path: the handler folder is no package of the pipeline, and the handler
imports nothing from it, so what both need lives there (standard library only) and is read from here.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LIBRARY = Path(__file__).resolve().parent.parent / "handler"  # hoist_lambda's parent: Hoist's handler library


@functools.cache
def load(name: str, as_name: str | None = None) -> ModuleType:
    """handler/hoist_lambda/<name>.py as module ``as_name`` (default hoist_lambda_<name>); it must import nothing relative."""
    spec = importlib.util.spec_from_file_location(as_name or f"hoist_lambda_{name}", LIBRARY / "hoist_lambda" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
