"""pipeline/records.py: the build record and the manifest, written and read in one module, in the JSON format dist/ holds."""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from builder import importcheck, slim
from builder import manifest as mf
from pipeline.records import (
    Artifact,
    BuildRecord,
    BytecodeReport,
    RecordError,
    SetRecord,
    SlimRecord,
    load_build_record,
    load_manifest,
    manifest_path,
    write_build_record,
    write_manifest,
)
from pipeline.targets import lambda_target
from tests.schemas import assert_conforms, problems

ARM = lambda_target("arm", "python3.13", "arm64").as_json()


def _manifest(tree, slim: SlimRecord | None = None, target: dict | None = None):
    files = mf.scan(tree)
    return mf.manifest(set_name="efs", target=target or ARM, build_key="b" * 64, files=files, packages=[],
                       bytecode=BytecodeReport.from_json({"compiled": False, "python": None, "invalidation_mode": None, "files": 0, "failed": [], "reason": "none here"}),
                       slim=slim or SlimRecord.from_json({"enabled": True, "rules": []}), builder="native",
                       archives=[{"name": "a.zip", "sha256": "5" * 64, "bytes": 3, "raw": 9, "extra": 1}], archive_index="1" * 64)


def test_a_manifest_comes_back_as_written_in_the_format_dist_holds(tmp_path):
    # GIVEN a tree with a file and a symlink
    tree = tmp_path / "efs" / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    (tree / "pkg" / "link.py").symlink_to("__init__.py")
    made = _manifest(tree)
    # WHEN it is written and read back
    path = manifest_path(tmp_path / "efs")
    write_manifest(made, path)
    doc = json.loads(path.read_text())
    # THEN the record is the same, and the file keeps the keys (and their order) every reader knew
    assert load_manifest(path) == made
    assert list(doc) == ["version", "set", "target", "builder", "build_key", "content_hash", "identity", "archive_index", "totals", "bytecode", "slim", "packages",
                         "files", "archives", "build_inputs"]
    assert doc["totals"] == {"bytes": made.bytes, "files": 2} and doc["content_hash"] == mf.content_hash(mf.scan(tree))
    assert {f["path"]: f["mode"] for f in doc["files"]} == {"pkg/__init__.py": "644", "pkg/link.py": "120777"}
    assert doc["archives"] == [{"name": "a.zip", "sha256": "5" * 64, "bytes": 3, "raw": 9}]
    assert_conforms("manifest", doc)
    assert not list(path.parent.glob(".*tmp*"))  # written through a temp file and a rename


def test_a_build_record_keeps_paths_relative_to_the_project_and_reads_them_back_absolute(tmp_path):
    # GIVEN a record of one set and a function zip inside the project, and a layer zip outside it
    root = tmp_path / "project"
    outside = tmp_path / "elsewhere" / "layer.zip"
    record = BuildRecord(
        target=ARM, builder="native", builder_detail="native",
        sets={"efs": SetRecord(content_hash="c" * 64, identity="d" * 64, tree=root / "dist/arm/efs/site-packages", manifest=root / "dist/arm/efs/manifest.json", bytes=10, files=2,
                               bytecode=True, bytecode_python="3.13.1", rebuilt=False)},
        artifacts={"function_zip": Artifact(root / "dist/arm/function.zip", "f" * 64, 5, 9, 1), "layer_zip": Artifact(outside, "e" * 64, 6, 8, 2)},
        warnings=("a warning",),
    )
    path = root / "dist" / "arm" / "build.json"
    path.parent.mkdir(parents=True)
    # WHEN it is written and read back
    written = write_build_record(record, path, root)
    doc = json.loads(path.read_text())
    loaded = load_build_record(path, root)
    # THEN the file holds project-relative paths (absolute outside it), and the record is what was written
    assert doc["sets"]["efs"]["tree"] == "dist/arm/efs/site-packages" and doc["artifacts"]["layer_zip"]["path"] == str(outside)
    assert doc["sets"]["efs"]["bytecode"] is True and doc["warnings"] == ["a warning"] and doc["version"] == 2
    assert loaded == record and loaded.path == written.path == path and loaded.target_name == "arm"
    # and it conforms to the build record's schema, which refuses what a later stage could not rely on
    assert_conforms("build-record", doc)
    assert problems("build-record", _doc_with(doc, "sets/efs/identity", ...))  # a record of an older Hoist
    assert problems("build-record", _doc_with(doc, "artifacts/other_zip", doc["artifacts"]["layer_zip"]))
    assert problems("build-record", _doc_with(doc, "sets/efs/bytes", -1))


def test_a_file_that_is_not_a_record_is_a_record_error(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="not JSON"):
        load_manifest(bad)
    bad.write_text('{"set": "efs"}')
    with pytest.raises(RecordError, match="not a Hoist manifest"):
        load_manifest(bad)
    bad.write_text("[]")
    with pytest.raises(RecordError, match="not a JSON object"):
        load_build_record(bad, tmp_path)


def test_the_identity_covers_the_tree_and_the_archive_index(tmp_path):
    # GIVEN one tree, its manifest without archives, and two with different archive indexes
    tree = tmp_path / "efs" / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    plain = _manifest(tree)
    one, two = (dataclasses.replace(plain, archive_index=c * 64) for c in "ab")
    # THEN the tree's content hash is one, and each index names another version
    assert plain.content_hash == one.content_hash == two.content_hash
    assert len({plain.identity, one.identity, two.identity, plain.content_hash}) == 4
    # and a changed file changes it too
    (tree / "pkg" / "__init__.py").write_text("x = 2\n")
    assert dataclasses.replace(_manifest(tree), archive_index="a" * 64).identity != one.identity


def test_records_of_an_older_hoist_are_refused_with_the_fix(tmp_path):
    # GIVEN a version-1 manifest (its name covered the tree only) and a version-1 build record
    tree = tmp_path / "efs" / "site-packages"
    tree.mkdir(parents=True)
    doc = _manifest(tree).as_json()
    doc["version"] = 1
    del doc["identity"], doc["archive_index"]
    old = tmp_path / "manifest.json"
    old.write_text(json.dumps(doc))
    # THEN reading either says what to run
    with pytest.raises(RecordError, match=r"older Hoist \(version 1, this one reads 2\); run `invoke build`"):
        load_manifest(old)
    old.write_text(json.dumps({"version": 1, "target": {}, "sets": {}}))
    with pytest.raises(RecordError, match=r"older Hoist .*run `invoke build`"):
        load_build_record(old, tmp_path)


class _Runner(importcheck.Runner):
    """A runtime whose imports fail for the modules named ``broken``, or that cannot run at all."""

    def __init__(self, broken: dict[str, str] | None = None, dies: bool = False):
        super().__init__("native", "scripted")
        object.__setattr__(self, "broken", broken or {})
        object.__setattr__(self, "dies", dies)

    def imports(self, paths, modules):
        if self.dies:
            raise RuntimeError("the interpreter died")
        return {m: e for m, e in self.broken.items() if m in modules}

    def imports_noting(self, paths, modules, hot):
        return importcheck.Noted(self.imports(paths, modules), None, None)


def _slim_records(tmp_path) -> dict[str, SlimRecord]:
    """The manifest's "slim" of every kind the builder writes, each made by builder/slim.py and builder/importcheck.py."""
    out = {}

    def tree(name):
        root = tmp_path / name / "t"
        for rel in ("reader/__init__.py", "reader/__init__.pyi", "reader/tests/test_a.py", "reader/include/r.h", "plain/__init__.py"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("")
        (root / "reader/__init__.pyi").write_text("x: int\n")
        return root, tmp_path / name / "aside"

    t, aside = tree("unchecked")
    out["no import check asked"] = SlimRecord.from_json(slim.slim(t, aside=aside).as_json())
    t, aside = tree("off")
    report = slim.slim(t, rules=dataclasses.replace(slim.load_rules(), rules=(), strip_enabled=False), aside=aside)
    out["slimming off"] = SlimRecord.from_json(importcheck.record(report.as_json(), importcheck.verify(t, aside, report, None, [], runner=None), t))  # type: ignore[arg-type]
    t, aside = tree("none")
    report = slim.slim(t, aside=aside)
    out["no runtime here"] = SlimRecord.from_json(importcheck.record(report.as_json(), importcheck.verify(t, aside, report, None, [], runner=None, why_none="no Docker"), t))  # type: ignore[arg-type]
    t, aside = tree("died")
    report = slim.slim(t, aside=aside)
    check = importcheck.verify(t, aside, report, None, [], runner=_Runner(dies=True))  # type: ignore[arg-type]
    out["the check could not run"] = SlimRecord.from_json(importcheck.record(report.as_json(), check, t))
    t, aside = tree("restored")
    report = slim.slim(t, aside=aside)
    check = importcheck.verify(t, aside, report, None, [], runner=_Runner({"plain": "ImportError: broken either way"}))  # type: ignore[arg-type]
    out["verified, one failing"] = SlimRecord.from_json(importcheck.record(report.as_json(), check, t))
    t, aside = tree("hot")
    report = slim.slim(t, aside=aside)
    runner = importcheck.Runner("native", f"CPython {sys.version.split()[0]} on this machine", python=sys.executable)
    check = importcheck.verify(t, aside, report, None, [], runner=runner, hot=["reader"])  # type: ignore[arg-type]
    out["verified with a hot set"] = SlimRecord.from_json(importcheck.record(report.as_json(), check, t))
    return out


def test_every_slim_report_the_builder_writes_is_a_valid_manifest_and_reads_back(tmp_path):
    # GIVEN a manifest around each kind of slim report the builder's own code makes
    tree = tmp_path / "efs" / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    records = _slim_records(tmp_path / "slim")
    assert "reader/__init__.py" in records["verified with a hot set"].import_check.opened  # the real runtime saw the hot module open its file
    for kind, record in records.items():
        made = _manifest(tree, slim=record)
        # WHEN it is written
        path = manifest_path(tmp_path / kind.replace(" ", "-"))
        path.parent.mkdir()
        write_manifest(made, path)
        # THEN the file conforms to the manifest's schema, and reads back as the same record
        assert_conforms("manifest", json.loads(path.read_text()))
        assert load_manifest(path) == made, kind


def _doc_with(doc: dict, where: str, value) -> dict:
    """A copy of ``doc`` with the key at the /-separated ``where`` set to ``value`` (deleted when value is ...)."""
    doc = json.loads(json.dumps(doc))
    *parents, last = where.split("/")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


BROKEN_MANIFESTS = {  # what a reader of manifest.json could not rely on
    "identity": ...,  # a manifest of an older Hoist
    "totals/files": "2",
    "files/0/sha256": "not a digest",
    "files/0/mode": "rwxr-xr-x",
    "target/kind": "container",
    "archive_index": "",  # archives without their index
    "slim/import_check/why": ...,  # not verified, and no reason
    "slim/import_check/opened": ["x.py"],  # a hot set without the modules that opened it
    "bytecode/surprise": True,
}


@pytest.mark.parametrize("where", BROKEN_MANIFESTS)
def test_the_manifest_schema_refuses_a_broken_manifest(tmp_path, where):
    # GIVEN a manifest the code wrote, which conforms
    tree = tmp_path / "efs" / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    slim_record = SlimRecord.from_json({"enabled": True, "rules": [], "import_check": {"verified": False, "why": "no runtime", "modules": 1, "restored": [], "failing": {}}})
    doc = _manifest(tree, slim=slim_record).as_json()
    assert_conforms("manifest", doc)
    # WHEN one part of it is broken THEN the schema says where
    found = problems("manifest", _doc_with(doc, where, BROKEN_MANIFESTS[where]))
    parent = where.rsplit("/", 1)[0] if "/" in where else "(top)"
    assert any(line.split(": ", 1)[0] in (where, parent) for line in found), found


def test_the_bytecode_report_reads_and_writes_the_json_the_builder_wrote():
    doc = {"compiled": True, "python": "3.13.1", "invalidation_mode": "unchecked-hash", "files": 12, "failed": ["a/b.py"], "reason": None}
    report = BytecodeReport.from_json(doc)
    assert json.dumps(report.as_json()) == json.dumps(doc) and report.compiled and report.failed == ("a/b.py",)


def test_every_schema_in_docs_is_a_valid_json_schema_with_its_own_id():
    import jsonschema

    from tests.schemas import SCHEMAS

    paths = sorted(SCHEMAS.glob("*.schema.json"))
    assert {p.name for p in paths} >= {"manifest.schema.json", "build-record.schema.json", "validation-report.schema.json", "target.schema.json"}
    for path in paths:
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/" + path.name), path


def test_tree_differences_name_every_file_changed_since_the_manifest_and_nothing_else(tmp_path):
    import os

    from pipeline.records import tree_differences

    # GIVEN a tree and its manifest (a module, data, a symlink)
    tree = tmp_path / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    for name, text in (("__init__.py", "x = 1\n"), ("a.py", "a = 1\n"), ("b.py", "b = 1\n"), ("c.py", "c = 1\n"), ("data.txt", "d")):
        (tree / "pkg" / name).write_text(text)
        (tree / "pkg" / name).chmod(0o644)
    (tree / "pkg" / "link.py").symlink_to("__init__.py")
    made = _manifest(tree)
    assert tree_differences(tree, made) == []  # as built: nothing, however often asked
    # WHEN files are written into (same size), grown, re-moded, removed, added and a symlink re-pointed
    (tree / "pkg" / "a.py").write_text("a = 2\n")
    (tree / "pkg" / "b.py").write_text("b = 12\n")
    os.chmod(tree / "pkg" / "c.py", 0o755)
    (tree / "pkg" / "data.txt").unlink()
    (tree / "pkg" / "new.py").write_text("")
    (tree / "pkg" / "link.py").unlink()
    (tree / "pkg" / "link.py").symlink_to("a.py")
    # THEN each is named once, by what differs, in path order
    assert tree_differences(tree, made) == ["content differs: pkg/a.py", "size differs: pkg/b.py", "mode differs: pkg/c.py", "missing: pkg/data.txt",
                                            "another symlink: pkg/link.py", "not in the manifest: pkg/new.py"]
