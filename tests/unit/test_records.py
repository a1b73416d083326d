"""pipeline/records.py: the build record and the manifest, written and read in one module, in the JSON format dist/ holds."""
from __future__ import annotations

import dataclasses
import json

import pytest

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


def _manifest(tree):
    files = mf.scan(tree)
    return mf.manifest(set_name="efs", target={"name": "arm", "machine": "aarch64"}, build_key="k" * 64, files=files, packages=[],
                       bytecode=BytecodeReport.from_json({"compiled": False, "python": None, "invalidation_mode": None, "files": 0, "failed": [], "reason": "none here"}),
                       slim=SlimRecord.from_json({"enabled": True, "rules": []}), builder="native", archives=[{"name": "a.zip", "sha256": "s" * 64, "bytes": 3, "extra": 1}])


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
                         "files", "archives"]
    assert doc["totals"] == {"bytes": made.bytes, "files": 2} and doc["content_hash"] == mf.content_hash(mf.scan(tree))
    assert {f["path"]: f["mode"] for f in doc["files"]} == {"pkg/__init__.py": "644", "pkg/link.py": "120777"}
    assert doc["archives"] == [{"name": "a.zip", "sha256": "s" * 64, "bytes": 3}]
    assert not list(path.parent.glob(".*tmp*"))  # written through a temp file and a rename


def test_a_build_record_keeps_paths_relative_to_the_project_and_reads_them_back_absolute(tmp_path):
    # GIVEN a record of one set and a function zip inside the project, and a layer zip outside it
    root = tmp_path / "project"
    outside = tmp_path / "elsewhere" / "layer.zip"
    record = BuildRecord(
        target={"name": "arm"}, builder="native", builder_detail="native",
        sets={"efs": SetRecord(content_hash="c" * 64, identity="i" * 64, tree=root / "dist/arm/efs/site-packages", manifest=root / "dist/arm/efs/manifest.json", bytes=10, files=2,
                               bytecode=True, bytecode_python="3.13.1", rebuilt=False)},
        artifacts={"function_zip": Artifact(root / "dist/arm/function.zip", "f" * 64, 5, 9, 1), "layer_zip": Artifact(outside, "l" * 64, 6, 8, 2)},
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


SLIM_DOCS = [  # what builder/slim.py and builder/importcheck.py write, in their key order
    {"enabled": True, "rules": [{"name": "tests", "files": 2, "bytes": 30}], "strip": {"files": 1, "bytes": 9, "reverted": [["a.so", "why"]]},
     "guarded": [["pkg/tests", "pkg/x.py"]], "kept_beside": [["pkg/a.pyi", "pkg"]], "removed_files": {"pkg": {"tests": ["pkg/tests/t.py"]}}},
    {"enabled": False, "rules": [], "strip": {"files": 0, "bytes": 0, "reverted": []}, "guarded": [], "kept_beside": [], "removed_files": {},
     "import_check": {"verified": True, "runtime": None, "why": "slimming is off", "modules": 3, "restored": [], "failing": {}}},
    {"enabled": True, "rules": [], "strip": {"files": 0, "bytes": 0, "reverted": []}, "guarded": [], "kept_beside": [], "removed_files": {},
     "import_check": {"verified": False, "why": "no runtime for the target here", "modules": 3, "restored": [], "failing": {}}},
    {"enabled": True, "rules": [], "strip": {"files": 0, "bytes": 0, "reverted": []}, "guarded": [], "kept_beside": [], "removed_files": {},
     "import_check": {"verified": False, "runtime": "docker", "why": "the import check could not run: boom", "modules": 3, "restored": [], "failing": {}}},
    {"enabled": True, "rules": [{"name": "type-stubs", "files": 0, "bytes": 0}], "strip": {"files": 0, "bytes": 0, "reverted": []}, "guarded": [], "kept_beside": [],
     "removed_files": {"reader": {"type-stubs": []}},
     "import_check": {"verified": True, "runtime": "docker", "modules": 3,
                      "restored": [{"module": "reader", "package": "reader", "rule": "type-stubs", "files": 1, "error": "ImportError: x", "line": "[slim] keep = []",
                                    "paths": ["reader/__init__.pyi"]}],
                      "failing": {"bad": "ImportError: broken"}}},
    {"enabled": True, "rules": [], "strip": {"files": 0, "bytes": 0, "reverted": []}, "guarded": [], "kept_beside": [], "removed_files": {},
     "import_check": {"verified": True, "runtime": "CPython 3.11.7 on this machine", "modules": 2, "restored": [], "failing": {},
                      "hot_modules": ["torch"], "opened": ["torch/__init__.py"], "touched": {"torch/lib/libc10.so": [[0, 8192], [65536, 4096]]}}},
]


@pytest.mark.parametrize("doc", SLIM_DOCS)
def test_the_slim_report_reads_and_writes_the_json_the_builder_wrote(doc):
    record = SlimRecord.from_json(doc)
    assert json.dumps(record.as_json()) == json.dumps(doc)  # same keys, same order
    assert SlimRecord.from_json(json.loads(json.dumps(record.as_json()))) == record


def test_the_bytecode_report_reads_and_writes_the_json_the_builder_wrote():
    doc = {"compiled": True, "python": "3.13.1", "invalidation_mode": "unchecked-hash", "files": 12, "failed": ["a/b.py"], "reason": None}
    report = BytecodeReport.from_json(doc)
    assert json.dumps(report.as_json()) == json.dumps(doc) and report.compiled and report.failed == ("a/b.py",)
