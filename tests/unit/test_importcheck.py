"""The import check's bookkeeping with a scripted runtime: which rule broke an import, what goes back, what stays removed."""
from __future__ import annotations

import os
from pathlib import Path

from builder import importcheck, slim
from pipeline.records import SlimRecord


class FileRunner(importcheck.Runner):
    """A runtime whose imports need files: module -> files it reads at import."""

    def __init__(self, tree: Path, needs: dict[str, list[str]], broken: set[str] = frozenset()):
        super().__init__("native", "scripted")
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "needs", needs)
        object.__setattr__(self, "broken", broken)
        object.__setattr__(self, "calls", [])

    def imports(self, paths, modules):
        self.calls.append(list(modules))
        failed = {m: "ImportError: broken either way" for m in modules if m in self.broken}
        for m in modules:
            missing = [f for f in self.needs.get(m, []) if not (self.tree / f).exists()]
            if missing and m not in failed:
                failed[m] = f"FileNotFoundError: {missing[0]}"
        return failed

    def imports_noting(self, paths, modules, hot):
        return importcheck.Noted(self.imports(paths, modules), None, None)


def _tree(root: Path) -> Path:
    files = {
        "reader/__init__.py": "", "reader/__init__.pyi": "x\n", "reader/tests/test_a.py": "", "reader/include/r.h": "",
        "plain/__init__.py": "", "plain/tests/test_b.py": "",
        "bad/__init__.py": "", "bad/x.pyi": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_only_the_rule_whose_removal_breaks_the_import_is_put_back(tmp_path):
    tree, aside = _tree(tmp_path / "t"), tmp_path / "aside"
    report = slim.slim(tree, aside=aside)
    runner = FileRunner(tree, {"reader": ["reader/__init__.pyi"]}, broken={"bad"})
    check = importcheck.verify(tree, aside, report, None, [], runner=runner)  # type: ignore[arg-type]
    assert check["verified"] and check["modules"] == 3
    [restored] = check["restored"]
    assert (restored["module"], restored["rule"], restored["paths"]) == ("reader", "type-stubs", ["reader/__init__.pyi"])
    assert restored["line"] == '[slim] keep = ["reader/**/*.pyi"]'  # no RECORD names a package here
    assert (tree / "reader/__init__.pyi").is_file()
    assert not (tree / "reader/tests").exists() and not (tree / "reader/include").exists()  # their rules broke nothing
    assert check["failing"] == {"bad": "ImportError: broken either way"} and not (tree / "bad/x.pyi").exists()  # not slimming's doing
    doc = importcheck.record(report.as_json(), check, tree)
    by_rule = {r["name"]: r for r in doc["rules"]}
    assert "reader/__init__.pyi" not in doc["removed_files"]["(not in any RECORD)"]["type-stubs"]
    assert by_rule["type-stubs"]["files"] == report.as_json()["rules"][[r["name"] for r in report.as_json()["rules"]].index("type-stubs")]["files"] - 1


def test_no_runtime_means_not_verified_and_slimming_off_needs_no_check(tmp_path):
    tree, aside = _tree(tmp_path / "t"), tmp_path / "aside"
    report = slim.slim(tree, aside=aside)
    check = importcheck.verify(tree, aside, report, None, [], runner=None, why_none="emulated: HOIST_EMULATION=off")  # type: ignore[arg-type]
    assert check == {"verified": False, "why": "emulated: HOIST_EMULATION=off", "modules": 3, "restored": [], "failing": {}}
    warnings = importcheck.warnings({"efs": type("S", (), {"slim": SlimRecord.from_json({"import_check": check})})()})
    assert warnings and "not import-verified" in warnings[0] and "HOIST_EMULATION=off" in warnings[0]


def test_the_check_runs_in_the_configured_base_image_when_it_is_here(monkeypatch):
    """build.base_image (a digest or a custom image) is the image the build used: the check looks for it, not the runtime's default."""
    import platform

    from pipeline.targets import lambda_target

    target = lambda_target("arm", "python3.13", "arm64")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(importcheck.docker, "daemon_problem", lambda: None)
    monkeypatch.setattr(importcheck.emulation, "binfmt_problem", lambda machine: None)
    here = {"registry.example/lambda-python@sha256:" + "a" * 64}
    monkeypatch.setattr(importcheck.docker, "inspect", lambda ref, fmt="{{.Id}}": "sha256:" + "b" * 64 if ref in here else None)
    runner, why = importcheck.runner_for(target, base_image=next(iter(here)))
    assert runner is not None and runner.kind == "docker" and runner.image == next(iter(here)), why
    assert "sha256:" + "b" * 64 in runner.identity  # the image's id: another image under the same tag is another runtime (build key)
    monkeypatch.setenv("HOIST_EMULATION", "off")
    runner, why = importcheck.runner_for(target)  # the runtime's default image is not here
    assert runner is None and f"the Lambda image {target.base_image()} is not here" in why


def test_the_metadata_rules_are_the_standard_librarys(tmp_path):
    """What the signature keeps of importlib.metadata's queries mirrors how this CPython's importlib.metadata finds a
    distribution by name, names one for entry_points()'s _unique, and reads an entry_points.txt."""
    import importlib.metadata as md

    entries = ["foo-1.0.dist-info", "Foo_Bar-2.0.dist-info", "foo.bar-3.0.egg-info", "FOO-4.0.DIST-INFO", "foobar-1.0.dist-info",
               "foo", "foo.py", "-1.0.dist-info", "Baz.egg-info", "zap-1.0.data"]
    for name in entries:
        (tmp_path / name).mkdir()
        (tmp_path / name / "METADATA").write_text("Name: Told-By-Metadata\n")
    state = importcheck._State([{f"{e}/METADATA": "0" for e in entries}])
    infos = importcheck._infos(state, "0:")
    for name in ["foo", "Foo", "foo-bar", "foo_bar", "Foo.Bar", "baz", "foobar", "nothing"]:
        found = sorted(os.path.basename(p) for p in md.MetadataPathFinder._search_paths(name, [str(tmp_path)]))
        assert found == sorted(n for n in infos if importcheck._named(n, name, "3.10")), name
    for path in md.MetadataPathFinder._search_paths(None, [str(tmp_path)]):
        told = importcheck._dist_name(os.path.basename(path))
        assert md.PathDistribution(path)._normalized_name == (told or "told_by_metadata"), path

    for text in ["[g]\na = b:c\n", "# c\n[g]\n\n  a=b  \n[h]\n", "a = b\n[g]\nx = y\n", "\ufeff[g]\na = b\n", "[g]\nno equals\n",
                 "[g] \n a = b \r\n[h]\r\nc = d\r\n", "[[g]]\na = b\n", "[]\na = b\n", "[g]\n#x\n;y\n"]:
        try:
            groups: set[str] | None = {ep.group for ep in md.EntryPoints._from_text(text)}
        except (ValueError, TypeError):
            groups = None
        assert importcheck._ep_groups(text.encode()) == groups, text
    assert importcheck._ep_groups(b"[g]\na = \xff\n") is None  # not UTF-8: read_text fails


def test_what_changed_in_a_runs_signature_is_said_in_words_with_each_sets_name():
    from builder.importcheck import signature_changes

    old = {"f 0:numpy/__init__.py": "a" * 64, "n requests": [], "n yaml": ["1:yaml"], "l 0:": ["numpy", "torch"], "f 0:gone.py": "b" * 64}
    new = {"f 0:numpy/__init__.py": "c" * 64, "n requests": ["1:requests"], "n yaml": [], "l 0:": ["attrs", "numpy", "torch"], "f 0:new.py": "d" * 64}
    said = signature_changes(old, new, ["efs", "layer"], most=10)
    assert said.split(", ") == ["efs/gone.py removed", "efs/new.py added", "efs/numpy/__init__.py changed", "the listing of efs changed",
                                "`import requests` now finds layer/requests", "`import yaml` no longer finds anything"]
    assert signature_changes(old, new, ["efs", "layer"], most=2) == "efs/gone.py removed, efs/new.py added and 4 more"
    assert signature_changes(old, old, ["efs"]) == ""


def test_the_latest_runs_of_a_kind_are_kept_newest_first_and_a_reused_one_moves_to_the_front(tmp_path):
    from builder import cache
    from builder.importcheck import FAMILY_KEEP, _remember

    store = cache.Store(tmp_path / "cache")
    for k in "abcdef":
        _remember(store, "f" * 64, k * 64)
    assert store.get_json("unit", "f" * 64, count=False) == {"recent": [k * 64 for k in "fedc"][:FAMILY_KEEP]}
    _remember(store, "f" * 64, "d" * 64)  # a run used again
    assert store.get_json("unit", "f" * 64, count=False)["recent"][:2] == ["d" * 64, "f" * 64]
