"""Slimming that never breaks an import: the static guards (lazy_loader stubs,
data files named at import), the import check after slimming with what it puts
back, and the user's [slim] settings. Built natively for this machine's CPython
(the import check's native runtime); the aarch64 runs are in test_emulated.py."""
from __future__ import annotations

import json
import shutil

import pytest

from builder.build import build
from builder.lock import lock
from pipeline import config
from pipeline.errors import BuildError
from tests.conftest import REPO, write_pipeline
from tests.wheels import make_wheel
from validate.stage import from_build

# the stub's name is computed, as lazy_loader does, and no marker names lazy_loader: no static guard sees it
READS_STUB = "import os\nwith open(os.path.splitext(__file__)[0] + '.pyi') as fh:\n    NAMES = fh.read().split()\n"
LAZY = "import lazy_loader_standin as lazy\n__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)\n"
STANDIN = "import os\ndef attach_stub(name, file):\n    stub = os.path.splitext(file)[0] + '.pyi'\n    if not os.path.exists(stub):\n        raise ValueError(f'Cannot load imports from non-existent stub {stub!r}')\n    return (lambda n: n), (lambda: []), []\n"
# the submodule's name is computed: no static guard sees that the tests folder is imported
IMPORTS_TESTS = "import importlib\nVALUE = importlib.import_module(__name__ + '.te' + 'sts.helper').VALUE\n"
READS_DATA = "import os\nTABLE = open(os.path.join(os.path.dirname(__file__), 'tests', 'table.csv')).read()\n"


@pytest.fixture(scope="module")
def house(wheelhouse, tmp_path_factory):
    """The shared wheelhouse plus packages that read files the rules remove."""
    extra = tmp_path_factory.mktemp("slimhouse")
    for whl in wheelhouse.iterdir():
        shutil.copy(whl, extra)
    make_wheel(extra, "stubreader", "1.0", "py3-none-any", {"stubreader/__init__.py": READS_STUB, "stubreader/__init__.pyi": "alpha beta\n",
                                                            "stubreader/tests/__init__.py": "", "stubreader/tests/test_x.py": "def test():\n    pass\n"})
    make_wheel(extra, "lazystub", "1.0", "py3-none-any", {"lazystub/__init__.py": LAZY, "lazystub/__init__.pyi": "from .a import b\n"}, requires=["lazy-loader-standin"])
    make_wheel(extra, "lazy-loader-standin", "1.0", "py3-none-any", {"lazy_loader_standin/__init__.py": STANDIN})
    make_wheel(extra, "dynreader", "1.0", "py3-none-any", {"dynreader/__init__.py": IMPORTS_TESTS, "dynreader/tests/__init__.py": "",
                                                           "dynreader/tests/helper.py": "VALUE = 5\n"})
    make_wheel(extra, "datareader", "1.0", "py3-none-any", {"datareader/__init__.py": READS_DATA, "datareader/tests/table.csv": "1,2\n",
                                                            "datareader/tests/other.csv": "3,4\n"})
    return extra


@pytest.fixture
def slim_project(tmp_path, house):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("stubreader\ndatareader\n")
    (tmp_path / "requirements" / "layer.in").write_text("lazystub\n")
    shutil.copytree(REPO / "handler", tmp_path / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    write_pipeline(tmp_path, house)
    return tmp_path


def _build(root, house, extra: str = "", target: str | None = None):
    if extra:
        write_pipeline(root, house, {"[build]": extra + "\n\n[build]"})
    cfg = config.load(root / "pipeline.toml")
    lock(cfg, target)
    return cfg, build(cfg, target)


def _manifest(result, name):
    return json.loads(result.sets[name].manifest.read_text())


def test_static_guards_keep_a_lazy_loader_stub_and_a_data_file_read_at_import(slim_project, house):
    _, result = _build(slim_project, house)
    layer, efs = result.sets["layer"].tree, result.sets["efs"].tree
    assert (layer / "lazystub" / "__init__.pyi").is_file()  # attach_stub reads it: keep_beside
    assert (efs / "datareader" / "tests" / "table.csv").is_file()  # named in a string literal
    assert not (efs / "datareader" / "tests" / "other.csv").exists()  # nothing names it: removed
    kept = {tuple(x) for x in _manifest(result, "layer")["slim"]["kept_beside"] + _manifest(result, "efs")["slim"]["kept_beside"]}
    assert ("lazystub/__init__.pyi", "lazystub/__init__.py") in kept and ("datareader/tests/table.csv", "datareader/__init__.py") in kept


def test_an_import_slimming_broke_gets_its_files_back_and_the_build_names_the_rule(slim_project, house):
    _, result = _build(slim_project, house)
    efs = result.sets["efs"].tree
    assert (efs / "stubreader" / "__init__.pyi").is_file()  # put back by the import check
    assert not (efs / "stubreader" / "tests").exists()  # the tests rule's removal broke nothing: it stays removed
    check = _manifest(result, "efs")["slim"]["import_check"]
    assert check["verified"] and check["runtime"].startswith("CPython ")
    [restored] = check["restored"]
    assert (restored["module"], restored["package"], restored["rule"], restored["files"]) == ("stubreader", "stubreader", "type-stubs", 1)
    assert restored["line"] == '[slim.packages.stubreader] keep = ["stubreader/**/*.pyi"]'
    assert "FileNotFoundError" in restored["error"]
    slim_doc = _manifest(result, "efs")["slim"]
    assert "stubreader/__init__.pyi" not in slim_doc["removed_files"]["stubreader"]["type-stubs"]
    warning = next(w for w in result.warnings if "stubreader" in w)
    assert "type-stubs" in warning and restored["line"] in warning

    # the line the build printed, added to pipeline.toml: kept by the rules, nothing to put back
    _, again = _build(slim_project, house, '[slim.packages.stubreader]\nkeep = ["stubreader/**/*.pyi"]')
    assert _manifest(again, "efs")["slim"]["import_check"]["restored"] == []
    assert (again.sets["efs"].tree / "stubreader" / "__init__.pyi").is_file()
    report = from_build(config.load(slim_project / "pipeline.toml"), smoke_level="none")
    assert report.ok and not [f for f in report.findings if f.rule.startswith("slim-")]


def test_python_files_put_back_after_the_bytecode_get_their_bytecode_too(slim_project, house):
    """The import check runs on the compiled tree (the .pyc Lambda loads); what it puts back is compiled after it."""
    import sys

    (slim_project / "requirements" / "efs.in").write_text("dynreader\n")
    _, result = _build(slim_project, house)
    efs = result.sets["efs"].tree
    [restored] = _manifest(result, "efs")["slim"]["import_check"]["restored"]
    assert (restored["module"], restored["rule"]) == ("dynreader", "tests")
    tag = "cpython-{}{}".format(*sys.version_info[:2])
    for source in ("dynreader/__init__.py", "dynreader/tests/__init__.py", "dynreader/tests/helper.py"):
        folder, name = source.rsplit("/", 1)
        assert (efs / folder / "__pycache__" / f"{name[:-3]}.{tag}.pyc").is_file(), source
    assert _manifest(result, "efs")["bytecode"]["files"] == sum(1 for _ in efs.rglob(f"*.{tag}.pyc"))


def test_slimming_off_and_a_rule_turned_off(slim_project, house):
    _, off = _build(slim_project, house, "[slim]\nenabled = false")
    assert (off.sets["efs"].tree / "stubreader" / "tests" / "test_x.py").is_file()
    assert (off.sets["efs"].tree / "datareader" / "tests" / "other.csv").is_file()
    assert _manifest(off, "efs")["slim"]["enabled"] is False
    check = _manifest(off, "efs")["slim"]["import_check"]
    assert check["verified"] and check["opened"] and check["runtime"]  # unslimmed, the check still runs: it records the hot set
    assert json.loads((off.sets["efs"].tree.parent / "archives" / "index.json").read_text())["hot"]["recorded"]

    _, no_stubs = _build(slim_project, house, '[slim]\ndisable = ["type-stubs"]')
    assert _manifest(no_stubs, "efs")["slim"]["import_check"]["restored"] == []
    assert not (no_stubs.sets["efs"].tree / "stubreader" / "tests").exists()


def test_an_unknown_rule_is_refused_with_the_rules_listed(slim_project, house):
    with pytest.raises(BuildError) as err:
        _build(slim_project, house, '[slim]\ndisable = ["stubs"]')
    assert "stubs" in err.value.what and "type-stubs" in (err.value.fix or "")


def test_without_a_runtime_the_build_stops_unless_the_user_opts_out_and_then_says_what_it_costs(slim_project, house, monkeypatch):
    monkeypatch.setenv("HOIST_EMULATION", "off")
    (slim_project / "requirements" / "efs.in").write_text("purepkg\n")
    (slim_project / "requirements" / "layer.in").write_text("layerpkg\n")
    with pytest.raises(BuildError) as err:
        _build(slim_project, house, target="arm")
    text = str(err.value)
    assert "import-check" in err.value.what and "HOIST_EMULATION=off" in err.value.what
    assert "--no-import-check" in text and "import_check = false" in text and "hot set" in text and "held" in text  # the opt-out and its cost
    assert not (slim_project / "dist" / "arm" / "efs").exists()
    cfg = config.load(slim_project / "pipeline.toml")
    result = build(cfg, "arm", import_check=False)
    check = _manifest(result, "efs")["slim"]["import_check"]
    assert check["verified"] is False and "opted out" in check["why"]
    assert any("not import-checked" in w and "every file" in w for w in result.warnings)
    monkeypatch.setenv("HOIST_IMPORT_CHECK", "off")  # the same opt-out from the environment (a CI runner's): the same build key
    assert not build(cfg, "arm").sets["efs"].rebuilt
    report = from_build(cfg, "arm", smoke_level="none")
    warned = [f for f in report.findings if f.rule == "slim-unverified"]
    assert {f.file for f in warned} == {"efs", "layer"} and all(f.severity == "warning" for f in warned)
