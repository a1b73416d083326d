"""sync: every method's apply returns one SyncResult (issue 17, item 4)."""
from __future__ import annotations

from pathlib import Path

from builder import manifest as mf
from pipeline.records import BytecodeReport, SlimRecord, manifest_path, write_manifest
from sync.datasync import DataSyncPlan, apply_datasync
from sync.efs import SyncPlan, SyncResult, apply_sync
from sync.shell import Remote


def _built(tmp_path: Path) -> tuple[Path, Path]:
    tree = tmp_path / "efs" / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    made = mf.manifest(set_name="efs", target={"name": "arm"}, build_key="k" * 64, files=mf.scan(tree), packages=[], bytecode=BytecodeReport(),
                       slim=SlimRecord(), builder="native", archives=[])
    write_manifest(made, manifest_path(tmp_path / "efs"))
    return tree, manifest_path(tmp_path / "efs")


def test_an_up_to_date_version_gives_the_same_result_by_rsync_and_by_datasync(tmp_path):
    # GIVEN a built tree whose version is already on EFS, planned for rsync and for DataSync
    tree, manifest = _built(tmp_path)
    version = mf.content_hash(mf.scan(tree))
    rsync_plan = SyncPlan(kind="envs", version=version, source=tree, manifest=manifest, base="/efs/envs", action="up-to-date", link_dests=(), files=1, bytes=6,
                          where="this machine")
    datasync_plan = DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix="p/envs/x/", efs_dir="/hoist/envs/x", action="up-to-date", where="DataSync")
    # WHEN each is applied
    by_rsync = apply_sync(rsync_plan, Remote())
    by_datasync = apply_datasync(datasync_plan, None, None)  # type: ignore[arg-type]  # up to date: no client is touched
    # THEN both say the same of the version, in one type
    assert isinstance(by_rsync, SyncResult) and isinstance(by_datasync, SyncResult)
    assert (by_rsync.method, by_rsync.where, by_rsync.bytes_sent, by_rsync.repaired) == ("local", f"this machine:/efs/envs/{version}", 0, 0)
    assert (by_datasync.method, by_datasync.where, by_datasync.bytes_sent, by_datasync.uploaded, by_datasync.copied) == ("datasync", "DataSync", 0, 0, 0)
    for r in (by_rsync, by_datasync):
        assert (r.version, r.action, r.files, r.bytes) == (version, "up-to-date", 1, 6)
