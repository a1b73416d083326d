"""lock + build end to end on wheels built by the tests (no network)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from builder import build as build_mod
from builder.build import build
from builder.lock import lock, read_lock
from pipeline import config
from pipeline.errors import BuildError, LockError
from tests.conftest import Recorded
from tests.schemas import assert_conforms


def _build(project, target=None, **kw):
    cfg = config.load(project / "pipeline.toml")
    lock(cfg, target)
    return cfg, build(cfg, target, **kw)


def _run_in_tree(tree, code):
    return subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); {code}"], capture_output=True, text=True)


def test_sets_are_resolved_together_and_split(project):
    cfg = config.load(project / "pipeline.toml")
    result = lock(cfg)
    efs = {p.name: p for p in result.locks["efs"].packages}
    layer = {p.name for p in result.locks["layer"].packages}
    assert set(efs) == {"nativepkg", "purepkg"} and layer == {"layerpkg"}  # purepkg came in as a dependency
    assert all(len(p.sha256) == 64 for p in efs.values())
    again = lock(cfg)
    assert not again.resolved  # inputs unchanged: the locks stand
    (project / "requirements" / "layer.in").write_text("layerpkg\npurepkg\n")
    cfg = config.load(project / "pipeline.toml")
    result = lock(cfg)
    assert result.resolved
    # purepkg is needed by both sets now: it lands in the layer (always on sys.path), once
    assert {p.name for p in result.locks["layer"].packages} == {"layerpkg", "purepkg"}
    assert {p.name for p in result.locks["efs"].packages} == {"nativepkg"}


def test_build_makes_an_importable_slim_precompiled_tree(project):
    _, result = _build(project)
    efs = result.sets["efs"]
    tree = efs.tree
    # the extension module really loads and runs from the tree
    out = _run_in_tree(tree, "import nativepkg; print(nativepkg.hypot2(3, 4), nativepkg.helpers.double(2))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5.0", "4"]
    # slimmed: tests and headers gone, imported tests folder kept
    assert not (tree / "nativepkg" / "tests").exists() and not (tree / "nativepkg" / "include").exists()
    assert (tree / "purepkg" / "util" / "tests" / "fixtures.py").exists()
    # bytecode for the target version, hash-based and unchecked (PEP 552 flags == 0b01)
    tag = "cpython-{}{}".format(*sys.version_info[:2])
    pyc = tree / "nativepkg" / "__pycache__" / f"__init__.{tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01
    # manifest
    doc = json.loads(efs.manifest.read_text())
    assert doc["version"] == 2 and doc["set"] == "efs" and doc["content_hash"] == efs.content_hash and doc["identity"] == efs.identity != efs.content_hash
    assert {p["name"] for p in doc["packages"]} == {"nativepkg", "purepkg"}
    assert all(p["set"] == "efs" and p["tags"] for p in doc["packages"])
    paths = {f["path"]: f for f in doc["files"]}
    assert pyc.relative_to(tree).as_posix() in paths
    assert doc["totals"] == {"bytes": sum(f["size"] for f in doc["files"]), "files": len(doc["files"])}
    assert doc["bytecode"]["compiled"] and doc["bytecode"]["invalidation_mode"] == "unchecked-hash"
    assert {r["name"]: r["files"] for r in doc["slim"]["rules"]}["tests"] == 2
    assert_conforms("manifest", doc)  # with the import check's hot set, and the archives' index
    assert doc["slim"]["import_check"]["opened"] and doc["archives"]
    # build.json for later stages
    summary = json.loads((project / "dist" / "local" / "build.json").read_text())
    assert summary["sets"]["efs"]["content_hash"] == efs.content_hash and summary["sets"]["efs"]["bytecode"] is True
    assert summary["artifacts"]["layer_zip"]["sha256"] == result.layer_zip.sha256
    assert_conforms("build-record", summary)
    with zipfile.ZipFile(result.layer_zip.path) as zf:
        names = zf.namelist()
    assert "python/layerpkg/__init__.py" in names and any(n.startswith("python/layerpkg/__pycache__/") for n in names)
    with zipfile.ZipFile(result.function_zip.path) as zf:
        names = zf.namelist()
    assert "app.py" in names and "hoist_lambda/activate.py" in names and all(n == "app.py" or n.startswith("hoist_lambda/") for n in names)


def test_two_builds_are_byte_identical_and_unchanged_locks_skip(project, monkeypatch):
    cfg, first = _build(project)
    files_one = {p.relative_to(first.sets["efs"].tree): p.read_bytes() for p in first.sets["efs"].tree.rglob("*") if p.is_file()}
    layer_one = first.layer_zip.path.read_bytes()
    zips = {a.path: a.path.stat().st_mtime_ns for a in (first.layer_zip, first.function_zip)}
    # nothing changed: no install, no zip written again, no interpreter started
    from builder import package
    from pipeline import interpreters

    monkeypatch.setattr(package.zipfile, "ZipFile", lambda *a, **k: pytest.fail("a zip was compressed again"))
    monkeypatch.setattr(interpreters, "capture", lambda *a, **k: pytest.fail(f"an interpreter was probed: {a}"))
    skipped = build(cfg)
    assert not skipped.sets["efs"].rebuilt and skipped.sets["efs"].content_hash == first.sets["efs"].content_hash
    assert {a.path: a.path.stat().st_mtime_ns for a in (skipped.layer_zip, skipped.function_zip)} == zips
    assert (skipped.layer_zip.sha256, skipped.function_zip.sha256) == (first.layer_zip.sha256, first.function_zip.sha256)
    monkeypatch.undo()
    (project / "handler" / "app.py").write_text((project / "handler" / "app.py").read_text() + "\n# changed\n")
    changed = build(cfg)
    assert changed.function_zip.sha256 != first.function_zip.sha256 and changed.layer_zip.path.stat().st_mtime_ns == zips[first.layer_zip.path]
    (project / "handler" / "app.py").write_text((project / "handler" / "app.py").read_text().replace("\n# changed\n", ""))
    forced = build(cfg, force=True)
    assert forced.sets["efs"].rebuilt
    files_two = {p.relative_to(forced.sets["efs"].tree): p.read_bytes() for p in forced.sets["efs"].tree.rglob("*") if p.is_file()}
    assert forced.sets["efs"].content_hash == first.sets["efs"].content_hash
    assert files_two == files_one
    assert forced.layer_zip.path.read_bytes() == layer_one


def test_interrupted_build_leaves_the_previous_tree_and_nothing_that_looks_complete(project, monkeypatch):
    cfg, first = _build(project)
    before = first.sets["efs"].content_hash

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "compile_tree", boom)
    with pytest.raises(KeyboardInterrupt):
        build(cfg, force=True)
    target_dir = project / "dist" / "local"
    # no staging folder left (the zips' stamps remember what each zip was made from)
    assert sorted(p.name for p in target_dir.iterdir() if p.name.startswith(".")) == [".function.zip.json", ".hoist-build.lock", ".layer.zip.json"]
    doc = json.loads((target_dir / "efs" / "manifest.json").read_text())
    assert doc["content_hash"] == before


def test_stale_lock_is_refused_with_the_command_to_fix_it(project):
    _build(project)
    (project / "requirements" / "efs.in").write_text("nativepkg>=1.0\n")
    with pytest.raises(LockError, match="stale") as err:
        build(config.load(project / "pipeline.toml"))
    assert "invoke lock --target local" in str(err.value)
    assert "efs.in" in str(err.value) and "layer.in" in str(err.value)  # one fingerprint: the message names every input it covers


def test_no_wheel_for_the_target_names_package_and_target_and_the_docker_builder_only_for_a_source(project, wheelhouse):
    (project / "requirements" / "efs.in").write_text("armonly==1.0\n")
    with pytest.raises(LockError) as err:
        lock(config.load(project / "pipeline.toml"))
    text = str(err.value)
    assert "armonly" in text and "local" in text and "publishes no source to compile" in text and "docker" not in text
    (project / "requirements" / "efs.in").write_text("sdistonly==1.0\n")
    with pytest.raises(LockError) as err:
        lock(config.load(project / "pipeline.toml"))
    assert "sdistonly" in str(err.value) and 'set builder = "docker" under [build] in pipeline.toml, then `invoke lock --target local`' in str(err.value)


def test_cross_target_arm64_lock_and_build_on_this_machine(project):
    """An aarch64 CPython 3.13 tree built here: wheels chosen for the target, bytecode by 3.13."""
    (project / "requirements" / "efs.in").write_text("armonly==1.0\npurepkg\n")
    cfg = config.load(project / "pipeline.toml")
    result = lock(cfg, "arm")
    assert {p.filename for p in result.locks["efs"].packages} == {"armonly-1.0-cp313-cp313-manylinux_2_28_aarch64.whl", "purepkg-2.0-py3-none-any.whl"}
    built = build(cfg, "arm")
    tree = built.sets["efs"].tree
    assert (tree / "armonly" / "__init__.py").exists()
    assert built.sets["efs"].bytecode.python.startswith("3.13.")
    assert (tree / "purepkg" / "__pycache__" / "__init__.cpython-313.pyc").exists()


def test_wheel_tags_are_checked_after_install(project, tmp_path):
    """A lock edited to carry a wheel the target cannot load is caught after install."""
    cfg, _ = _build(project)
    lf = read_lock(cfg.lock_path("efs", "local"))
    tree = tmp_path / "t"
    (tree / "x-1.0.dist-info").mkdir(parents=True)
    (tree / "x-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: x\nVersion: 1.0\n")
    (tree / "x-1.0.dist-info" / "WHEEL").write_text("Wheel-Version: 1.0\nTag: cp313-cp313-manylinux_2_28_aarch64\n")
    from builder.install import check_wheel_tags

    with pytest.raises(BuildError, match=r"x-1\.0\.dist-info: cp313-cp313-manylinux_2_28_aarch64"):
        check_wheel_tags(tree, cfg.target().target)
    assert lf.packages


def test_no_interpreter_means_no_bytecode_said_clearly(project, monkeypatch):
    from pipeline.errors import InterpreterNotFound

    def none(version, cache=None):
        raise InterpreterNotFound(f"no working CPython {version} found", fix="install it")

    monkeypatch.setattr(build_mod, "find_python", none)
    _, result = _build(project)
    assert result.sets["efs"].bytecode.compiled is False
    assert "no working CPython" in result.sets["efs"].bytecode.reason
    assert any("no bytecode" in w for w in result.warnings)
    assert not list(result.sets["efs"].tree.rglob("*.pyc"))
    summary = json.loads((project / "dist" / "local" / "build.json").read_text())
    assert summary["sets"]["efs"]["bytecode"] is False


def test_docker_builder_without_a_daemon_says_how_to_start_one(project, monkeypatch):
    from builder.docker import DockerUnavailable

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    cfg = config.load(project / "pipeline.toml")
    lock(cfg)
    with pytest.raises(DockerUnavailable) as err:
        build(cfg, builder="docker")
    assert "no Docker daemon answers" in str(err.value) and "dockerd" in str(err.value)
    fallback = build(cfg, builder="auto")  # auto falls back to native and says why
    assert fallback.builder == "native"
    assert json.loads((project / "dist" / "local" / "build.json").read_text())["builder_detail"].startswith("native (Docker not usable: no Docker daemon")


def test_unresolvable_pin_names_the_package_and_the_target(project):
    (project / "requirements" / "efs.in").write_text("nativepkg==9.9\n")
    with pytest.raises(LockError) as err:
        lock(config.load(project / "pipeline.toml"))
    text = str(err.value)
    assert "nativepkg" in text and "9.9" in text and "target local" in text and "fix:" in text


def test_a_second_concurrent_build_of_the_same_target_is_refused(project):
    import fcntl

    cfg = config.load(project / "pipeline.toml")
    lock(cfg)
    target_dir = project / "dist" / "local"
    target_dir.mkdir(parents=True)
    with open(target_dir / ".hoist-build.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BuildError, match="another build of target local is running"):
            build(cfg)
    assert build(cfg).sets["efs"].rebuilt


def test_command_line_lock_and_build_print_the_size_report(project):
    from tests.unit.test_tasks import invoke

    cfg_path = str(project / "pipeline.toml")
    locked = invoke("lock", "--config", cfg_path)
    assert locked.returncode == 0, locked.stderr
    assert "nativepkg" in locked.stdout and "efs.local.lock" in locked.stdout
    built = invoke("build", "--config", cfg_path)
    assert built.returncode == 0, built.stderr
    out = built.stdout
    assert "[efs] installing 2 packages" in out and "[efs] slimming" in out and "compiling bytecode" in out
    assert "content hash" in out and "nativepkg" in out and "summary:" in out and "tests 2 files" in out
    again = invoke("build", "--config", cfg_path)
    assert "up to date" in again.stdout


def test_each_target_has_its_own_build_summary(project):
    """Building one target never stops validate or sync of another (dist/<target>/build.json)."""
    from sync.stage import built_tree
    from validate.stage import from_build

    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = config.load(project / "pipeline.toml")
    lock(cfg, "local")
    local = build(cfg, "local")
    lock(cfg, "arm")
    arm = build(cfg, "arm")
    assert local.build_json == project / "dist" / "local" / "build.json" and arm.build_json == project / "dist" / "arm" / "build.json"
    assert not (project / "dist" / "build.json").exists()
    assert json.loads(local.build_json.read_text())["target"]["name"] == "local"
    # the arm build came last; the local one is still what validate and sync read for local
    assert from_build(cfg, "local", smoke_level="none").ok
    assert built_tree(cfg, "local")[0] == local.sets["efs"].tree
    assert built_tree(cfg, "arm")[0] == arm.sets["efs"].tree


def test_a_relock_keeps_the_pins_that_still_fit_and_force_takes_the_newest(project, wheelhouse, tmp_path):
    """Adding a source or a requirement must not move unrelated pins (each move is a new EFS version)."""
    from tests.conftest import write_pipeline
    from tests.wheels import make_wheel

    first = lock(config.load(project / "pipeline.toml"))
    assert {p.name: p.version for p in first.locks["efs"].packages}["purepkg"] == "2.0"
    # the first lock of a target is new, not "unchanged"
    from rich.console import Console

    from builder.report import print_lock

    shown = Console(record=True, width=200)
    print_lock(shown, first)
    total = sum(len(lf.packages) for lf in first.locks.values())
    assert first.first and f"new lock: {total} packages (no earlier lock of this target)" in shown.export_text() and "changed: nothing" not in shown.export_text()
    newer = tmp_path / "newer"
    newer.mkdir()
    make_wheel(newer, "purepkg", "2.1", "py3-none-any", {"purepkg/__init__.py": "DATA = 8\n"})
    make_wheel(newer, "layerpkg", "0.6", "py3-none-any", {"layerpkg/__init__.py": "VALUE = 'newer'\n"})  # an unrelated package's newer version
    make_wheel(newer, "needsnew", "1.0", "py3-none-any", {"needsnew/__init__.py": ""}, requires=["purepkg>=2.1"])
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{newer}"]'})  # a new source: the inputs changed
    kept = lock(config.load(project / "pipeline.toml"))
    assert kept.resolved and {p.name: p.version for p in kept.locks["efs"].packages}["purepkg"] == "2.0"  # 2.1 is there, 2.0 still fits
    assert kept.changes == () and kept.released == () and not kept.first
    # a requirement that rules out the pinned version: that pin alone is let go, and the lock says what moved
    (project / "requirements" / "efs.in").write_text("nativepkg\npurepkg>=2.1\n")
    moved = lock(config.load(project / "pipeline.toml"))
    assert {p.name: p.version for p in moved.locks["efs"].packages}["purepkg"] == "2.1"
    assert {p.name: p.version for p in moved.locks["layer"].packages}["layerpkg"] == "0.5"  # the unrelated pin did not move
    assert moved.changes == ("purepkg 2.0 -> 2.1",) and moved.released == ("purepkg 2.0: excluded by the requirements now",)
    # a new package that needs a newer version of a pinned one: no requirement line names it, so the previous pins
    # cannot all stay; they are let go, and the lock says so and what moved
    (project / "requirements" / "efs.in").write_text("nativepkg\n")
    lock(config.load(project / "pipeline.toml"))
    lf = project / "requirements" / "efs.local.lock"
    (project / "requirements" / "layer.in").write_text("layerpkg==0.5\n")
    write_pipeline(project, wheelhouse)
    lock(config.load(project / "pipeline.toml"), force=True)  # back to purepkg 2.0, layerpkg 0.5 (no newer source)
    assert "purepkg==2.0" in lf.read_text()
    (project / "requirements" / "layer.in").write_text("layerpkg\n")
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{newer}"]'})
    (project / "requirements" / "efs.in").write_text("nativepkg\nneedsnew\n")
    lines: list[str] = []
    together = lock(config.load(project / "pipeline.toml"), on_line=lines.append)
    assert {p.name: p.version for p in together.locks["efs"].packages}["purepkg"] == "2.1"
    assert any("do not fit the new inputs together" in line for line in lines) and "unrelated pins may move" in together.released[-1]
    assert "purepkg 2.0 -> 2.1" in together.changes and "needsnew 1.0 added" in together.changes
    (project / "requirements" / "efs.in").write_text("nativepkg\n")
    again = lock(config.load(project / "pipeline.toml"))
    assert {p.name: p.version for p in again.locks["efs"].packages}["purepkg"] == "2.1"  # the pin stays where it moved
    write_pipeline(project, wheelhouse)
    lock(config.load(project / "pipeline.toml"))
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{newer}"]'})
    forced = lock(config.load(project / "pipeline.toml"), force=True)
    assert {p.name: p.version for p in forced.locks["efs"].packages}["purepkg"] == "2.1"  # --force: the newest the inputs allow


def test_up_to_date_covers_whether_the_import_check_ran_and_its_runtime(project, monkeypatch, tmp_path):
    """An opted-out build, then the check possible again, or another runtime for it: the next plain build redoes the sets."""
    from rich.console import Console

    from builder.report import print_build
    from pipeline.interpreters import find_python


    cfg = config.load(project / "pipeline.toml")
    lock(cfg)
    skipped = build(cfg, import_check=False)
    assert skipped.sets["efs"].slim.import_check.verified is False
    assert json.loads((project / "dist" / "local" / "efs" / "archives" / "index.json").read_text())["hot"]["recorded"] is False
    shown = Console(record=True, width=400)
    print_build(shown, skipped)
    lines = shown.export_text().splitlines()
    warned = [line for line in lines if line.startswith("warning:")]
    assert [w.split(" not import-checked")[0] for w in warned] == ["warning: [efs]", "warning: [layer]"]  # each names its set
    assert all(w.endswith("not import-checked: opted out (`invoke build --no-import-check`)") for w in warned)  # and how it was opted out
    costs = [line for line in lines if "what it costs" in line]
    assert "hot set" in costs[0] and "hot set" not in costs[1]  # the layer has no hot set to lose (it is on local disk in Lambda)
    said = Recorded()
    checked = build(cfg, progress=said)  # nothing changed but the check, which can run now: not "up to date"
    assert checked.sets["efs"].rebuilt and checked.sets["layer"].rebuilt
    assert "[efs] building: the import check is back on (it was opted out)" in said.steps
    assert checked.sets["efs"].slim.import_check.verified and checked.sets["efs"].slim.import_check.opened is not None
    assert not build(cfg).sets["efs"].rebuilt
    other = tmp_path / "bin" / "python{}.{}".format(*sys.version_info[:2])  # the same CPython by another path: another runtime
    other.parent.mkdir()
    other.symlink_to(find_python("{}.{}".format(*sys.version_info[:2])).path)
    monkeypatch.setenv("HOIST_PYTHON{}_{}".format(*sys.version_info[:2]), str(other))
    again = build(cfg)
    assert again.sets["efs"].rebuilt and again.sets["layer"].rebuilt
    assert again.sets["efs"].content_hash == checked.sets["efs"].content_hash  # the same output: only the key moved


def test_a_build_from_the_cache_equals_a_fresh_build_with_the_cache_empty_and_a_damaged_entry_is_redone(project, tmp_path, monkeypatch):
    from builder import cache
    from tests.unit.test_tasks import invoke

    monkeypatch.setenv("HOIST_BUILD_CACHE", str(tmp_path / "cache"))
    cfg = config.load(project / "pipeline.toml")
    lock(cfg)
    fresh = build(cfg)  # the cache is empty: every step done, and stored
    assert not fresh.cache.hits and fresh.cache.misses["pyc"] and fresh.cache.misses["check"] == 2
    manifests = {name: s.manifest.read_bytes() for name, s in fresh.sets.items()}
    index = (project / "dist" / "local" / "efs" / "archives" / "index.json").read_bytes()
    cached = build(cfg, force=True)
    assert not cached.cache.misses and cached.cache.hits["check"] == 2 and cached.cache.hits["pyc"] == fresh.cache.misses["pyc"]
    # the same manifest (files, hot set, content hash) and the same archives
    assert {name: s.manifest.read_bytes() for name, s in cached.sets.items()} == manifests
    assert (project / "dist" / "local" / "efs" / "archives" / "index.json").read_bytes() == index
    assert cached.sets["efs"].slim.import_check.opened == fresh.sets["efs"].slim.import_check.opened and cached.sets["efs"].content_hash == fresh.sets["efs"].content_hash

    damaged = next(p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.parent.parent.name == "pyc" and not p.name.endswith(".sha256"))
    damaged.write_bytes(damaged.read_bytes()[:-1] + bytes([damaged.read_bytes()[-1] ^ 0xFF]))  # one byte changed, the size the same
    again = build(cfg, force=True)
    assert len(again.cache.damaged) == 1 and again.cache.misses == {"pyc": 1}
    assert {name: s.manifest.read_bytes() for name, s in again.sets.items()} == manifests

    shown = invoke("cache")
    assert shown.returncode == 0 and str(tmp_path / "cache") in shown.stdout and "invoke cache --clear" in " ".join(shown.stdout.split())
    assert invoke("cache", "--clear").returncode == 0 and cache.usage().total == 0


def test_a_check_reused_whole_makes_its_runs_the_start_of_the_next_change(project, wheelhouse, tmp_path, monkeypatch):
    """The latest runs of a kind are few; other builds sharing the cache push a set's own out. A check reused whole
    from the cache remembers its runs again, so the next change to that set (a leaf package) reruns only the new
    module, not every one (the second trial: 22 s after its own experiments had filled the list)."""
    from builder import cache
    from tests.conftest import write_pipeline
    from tests.wheels import make_wheel

    monkeypatch.setenv("HOIST_BUILD_CACHE", str(tmp_path / "cache"))
    (project / "requirements" / "efs.in").write_text("nativepkg\n")
    _build(project)
    store = cache.Store()

    def forget_the_latest() -> None:  # as if other builds had filled every list of the latest runs
        for doc in (tmp_path / "cache").rglob("*.json"):
            if doc.parent.parent.name == "unit" and isinstance(body := store.get_json("unit", doc.name[:-5], count=False), dict) and "recent" in body:
                store.put_json("unit", doc.name[:-5], {"recent": []})

    forget_the_latest()
    shutil.rmtree(project / "dist")
    _, again = _build(project)  # the same set into a fresh output folder: its check comes whole from the cache
    assert again.cache.hits.get("check") == 2
    more = tmp_path / "more"
    more.mkdir()
    make_wheel(more, "leafpkg", "1.0", "py3-none-any", {"leafpkg/__init__.py": ""})
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{more}"]'})
    (project / "requirements" / "efs.in").write_text("nativepkg\nleafpkg\n")


    said = Recorded()
    _build(project, progress=said)  # leafpkg is named in efs.in: a hot module, imported alone beside the hot run kept
    assert any("the hot modules' run reused for the 1 modules it imported" in line and "(leafpkg)" in line for line in said.lines), said.lines
    forget_the_latest()  # and without a list to start from, the hot run is made again whole
    shutil.rmtree(project / "dist")
    make_wheel(more, "leafpkg2", "1.0", "py3-none-any", {"leafpkg2/__init__.py": ""})
    (project / "requirements" / "efs.in").write_text("nativepkg\nleafpkg\nleafpkg2\n")
    said = Recorded()
    _build(project, progress=said)
    assert not any("the hot modules' run reused" in line for line in said.lines), said.lines


def test_validate_refuses_a_build_its_lock_or_requirements_have_outrun_with_fixes_that_work(project):
    """A requirement added after the build: validate says the lock is stale (as build and deploy do); relocked but not
    rebuilt: the trees are not what the lock pins. Each fix, run, makes validate pass again."""
    from compose.validate import validate_build
    from pipeline.errors import LockError, ValidationError

    efs_in = project / "requirements" / "efs.in"
    efs_in.write_text("purepkg\n")
    cfg = config.load(project / "pipeline.toml")
    lock(cfg, "local")
    build(cfg, "local")
    assert validate_build(cfg, "local", smoke_level="none").ok
    assert json.loads((project / "dist" / "local" / "build.json").read_text())["sets"]["efs"]["lock_sha256"]

    efs_in.write_text("purepkg\nnativepkg\n")  # the requirements move on; the next command loads them
    cfg = config.load(project / "pipeline.toml")
    with pytest.raises(LockError) as stale:
        validate_build(cfg, "local", smoke_level="none")
    assert "stale" in stale.value.what and "invoke lock --target local" in (stale.value.fix or "")
    lock(cfg, "local")  # the fix it names; the build is now older than the lock
    with pytest.raises(ValidationError) as older:
        validate_build(cfg, "local", smoke_level="none")
    assert "efs.local.lock" in older.value.what and "invoke build --target local" in (older.value.fix or "")
    build(cfg, "local")  # that fix
    assert validate_build(cfg, "local", smoke_level="none").ok


def test_trees_are_hard_links_into_uvs_cache_and_a_file_changed_there_stops_the_build_with_a_fix_that_works(project, tmp_path, monkeypatch):
    # GIVEN a build whose uv cache is its own (what is changed below must not reach other tests' wheels)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    cfg, first = _build(project)
    helpers = first.sets["efs"].tree / "nativepkg" / "helpers.py"
    # THEN the installed files are uv's cached copies, linked (a rebuild installs in a fraction of a copy's time) ...
    assert helpers.stat().st_nlink >= 2
    # ... and no step wrote into them: a forced rebuild checks every installed file against its wheel's RECORD
    assert build(cfg, force=True).sets["efs"].content_hash == first.sets["efs"].content_hash
    # WHEN a built tree's file is edited in place (which edits uv's cached copy: the same file)
    with open(helpers, "r+") as fh:
        fh.write("# edited in place\n")
    # THEN validate and sync refuse the tree (what they would judge or publish is not what was built), naming the file
    # and the rebuild
    from pipeline.errors import SyncError, ValidationError
    from sync.stage import built_tree
    from validate.stage import from_build

    for refused, check in ((ValidationError, lambda: from_build(cfg, smoke_level="none")), (SyncError, lambda: built_tree(cfg, None))):
        with pytest.raises(refused) as stopped:
            check()
        assert "content differs: nativepkg/helpers.py" in stopped.value.render() and "`invoke build --target local --force`" in stopped.value.render()


    # AND a plain build sees the edited file (not the size and time the build left) and builds the set again; as the
    # forced one, that rebuild stops, naming the package, the file and the command that clears it from uv's cache
    for force in (False, True):
        said = Recorded()
        with pytest.raises(BuildError) as caught:
            build(cfg, force=force, progress=said)
        err = caught.value.render()
        assert "nativepkg 1.0: nativepkg/helpers.py" in err and "`python3 -m uv cache clean nativepkg`, then `invoke build --target local --force`" in err
        assert ("[efs] building: --force" if force else "[efs] building: its tree in dist/ was changed after the build (nativepkg/helpers.py)") in said.steps
    # WHEN the fix is run (the clean, then the build it names) THEN the build gives the first build's tree again
    done = subprocess.run([sys.executable, "-m", "uv", "cache", "clean", "nativepkg"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = build(cfg, force=True)
    assert again.sets["efs"].content_hash == first.sets["efs"].content_hash
    assert (again.sets["efs"].tree / "nativepkg" / "helpers.py").read_text() == "def double(x):\n    return 2 * x\n"
    assert built_tree(cfg, None)[0] == again.sets["efs"].tree


def test_a_change_to_the_layer_rebuilds_the_efs_set_whose_check_imports_from_it(project, wheelhouse, tmp_path):
    """The efs set's import check runs with the layer on its path (what torchvision opens of Pillow, whether slimming
    held): a layer that changed is an input of the efs set, which is not "up to date" against the old one."""
    from tests.conftest import write_pipeline
    from tests.wheels import make_wheel


    (project / "requirements" / "layer.in").write_text("layerpkg==0.5\n")
    _, first = _build(project)
    more = tmp_path / "more"
    more.mkdir()
    make_wheel(more, "layerpkg", "0.6", "py3-none-any", {"layerpkg/__init__.py": "VALUE = 'newer'\n"})
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{more}"]'})
    (project / "requirements" / "layer.in").write_text("layerpkg==0.6\n")
    said = Recorded()
    _, again = _build(project, progress=said)
    assert "[layer] building: layerpkg 0.5 -> 0.6" in said.steps and "[efs] building: the layer set it imports with changed" in said.steps
    assert again.sets["efs"].rebuilt and again.sets["efs"].content_hash == first.sets["efs"].content_hash  # the same efs files, checked again
    said = Recorded()
    build(config.load(project / "pipeline.toml"), progress=said)  # and then nothing to do
    assert not any("building" in s for s in said.steps)


def test_a_package_added_to_one_set_rebuilds_that_set_only(project, wheelhouse, tmp_path):
    """A relock rewrites every set's lock (the inputs' fingerprint in its header); a set whose pins did not move keeps its tree."""
    from tests.conftest import write_pipeline
    from tests.wheels import make_wheel


    said = Recorded()
    _, first = _build(project, progress=said)
    assert "[efs] building: no earlier build" in said.steps
    more = tmp_path / "more"
    more.mkdir()
    make_wheel(more, "leafpkg", "1.0", "py3-none-any", {"leafpkg/__init__.py": ""})
    write_pipeline(project, wheelhouse, {f'"{wheelhouse}"]': f'"{wheelhouse}", "{more}"]'})
    (project / "requirements" / "efs.in").write_text("nativepkg\nleafpkg\n")
    layer_lock = project / "requirements" / "layer.local.lock"
    before = layer_lock.read_text()
    said = Recorded()
    _, again = _build(project, progress=said)
    assert layer_lock.read_text() != before  # its header changed, its pins did not
    assert again.sets["efs"].rebuilt and not again.sets["layer"].rebuilt
    # the build says why the one set is built again, and that the other is not
    assert "[efs] building: leafpkg 1.0 added" in said.steps
    assert not any(s.startswith("[layer] building") for s in said.steps) and any(s.startswith("[layer] up to date") for s in said.steps)
    said = Recorded()
    build(config.load(project / "pipeline.toml"), force=True, progress=said)
    assert "[efs] building: --force" in said.steps
    assert again.sets["layer"].content_hash == first.sets["layer"].content_hash
    assert (again.sets["efs"].tree / "leafpkg" / "__init__.py").is_file()
