"""The `local` target: this machine's torch (2.13.0+cpu, CPython 3.11, found through
pip's own find-links), slimmed and stripped, really imports and computes.

This is the run-time proof for the stripping that test_demo_tree checks
statically on aarch64: the same code cut the symbol tables of libtorch_cpu.so.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest

from builder.build import build
from builder.lock import lock, pip_config_find_links
from pipeline import config
from pipeline.interpreters import find_python
from tests.conftest import REPO, without_model

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.local_torch]


def test_local_torch_tree_imports_after_slimming_and_stripping(tmp_path):
    links = pip_config_find_links()
    assert links, "pip's configuration names no find-links; the local target's torch 2.13.0+cpu comes from there on this machine"
    (tmp_path / "pipeline.toml").write_text(without_model(REPO / "pipeline.toml"))
    shutil.copytree(REPO / "requirements", tmp_path / "requirements", ignore=shutil.ignore_patterns("*.local.lock"))
    shutil.copytree(REPO / "handler", tmp_path / "handler")
    cfg = config.load(tmp_path / "pipeline.toml")
    locked = lock(cfg, "local")
    torch_lock = next(p for p in locked.locks["efs"].packages if p.name == "torch")
    assert torch_lock.version == "2.13.0+cpu" and "torchvision" not in {p.name for p in locked.locks["efs"].packages}
    result = build(cfg, "local")
    efs, layer = result.sets["efs"].tree, result.sets["layer"].tree

    assert result.sets["efs"].slim.strip.bytes > 10_000_000
    wheel = torch_lock.url.removeprefix("file://")
    with zipfile.ZipFile(wheel.replace("%2B", "+")) as zf:
        raw_size = zf.getinfo("torch/lib/libtorch_cpu.so").file_size
    assert (efs / "torch" / "lib" / "libtorch_cpu.so").stat().st_size < raw_size
    assert not (efs / "torch" / "include").exists()

    code = (
        f"import sys; sys.path[:0] = [{str(layer)!r}, {str(efs)!r}]\n"
        "import torch, PIL.Image\n"
        "x = torch.arange(6.0).reshape(2, 3)\n"
        f"print(torch.__version__, float((x @ x.T).sum()), torch.__file__.startswith({str(efs)!r}), PIL.Image.new('L', (2, 2)).size)\n"
    )
    out = subprocess.run([find_python(cfg.target("local").target.python).path, "-I", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    version, total, from_tree, size = out.stdout.split(maxsplit=3)
    assert version == "2.13.0+cpu" and float(total) == 83.0 and from_tree == "True" and size.strip() == "(2, 2)"


def test_a_hydrated_tree_keeps_sources_scripting_tracebacks_and_metadata(tmp_path):
    """The cold-start path (the hot set imported from memory, everything else
    from the tree) must keep what torch and users rely on."""
    (tmp_path / "pipeline.toml").write_text(without_model(REPO / "pipeline.toml"))
    shutil.copytree(REPO / "requirements", tmp_path / "requirements", ignore=shutil.ignore_patterns("*.local.lock"))
    shutil.copytree(REPO / "handler", tmp_path / "handler")
    cfg = config.load(tmp_path / "pipeline.toml")
    lock(cfg, "local")
    tree = build(cfg, "local").sets["efs"].tree
    index = json.loads((tree.parent / "archives" / "index.json").read_text())
    assert index["hot"]["recorded"] and index["hot"]["files"] < index["hot"]["of"] / 2  # the import check saw what `import torch` opens
    assert any(rel.startswith("torch/lib/libtorch_cpu") for rel in index["touched_ranges"])  # and the library pages it mapped
    code = (
        "import sys, inspect, traceback, importlib.metadata\n"
        f"sys.path.insert(0, {str(REPO / 'handler')!r})\n"
        "from hoist_lambda.activate import activate\n"
        f"env = activate({str(tree)!r})\n"
        "assert env.hydrated and env.hot_files > 500, env  # torch's opened files; the sources of its bytecode travel as sizes\n"
        "import torch\n"
        f"assert torch.__file__ == {str(tree / 'torch' / '__init__.py')!r}, torch.__file__\n"
        "assert type(torch.__loader__).__name__ == 'HotSourceLoader', torch.__loader__\n"
        "src = inspect.getsource(torch.nn.Linear.forward)\n"
        "assert 'def forward' in src\n"
        "@torch.jit.script\n"
        "def twice(x: torch.Tensor) -> torch.Tensor:\n"
        "    return x * 2\n"
        "assert float(twice(torch.ones(1))[0]) == 2.0\n"
        "try:\n"
        "    torch.nn.functional.softmax(None, dim=0)\n"
        "except Exception:\n"
        "    text = traceback.format_exc()\n"
        "assert 'functional.py' in text and 'softmax' in text, text\n"
        "print(importlib.metadata.version('torch'))\n"
    )
    script = tmp_path / "check.py"  # a file: TorchScript reads the scripted function's source
    script.write_text(code)
    out = subprocess.run([find_python("3.11").path, "-I", str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "2.13.0+cpu"  # after the activation's log line
