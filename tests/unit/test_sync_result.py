"""sync: every method's apply returns one SyncResult (issue 17, item 4), which says what the apply did."""
from __future__ import annotations

import json
from pathlib import Path

from builder import manifest as mf
from builder.archives import write_archives
from pipeline.files import sha256_file
from pipeline.records import BytecodeReport, SlimRecord, load_manifest, manifest_path, write_manifest
from sync.datasync import DataSyncPlan, apply_datasync
from sync.efs import MARKER, SyncResult, apply_sync, plan_sync
from sync.shell import Remote


def _built(tmp_path: Path, text: str = "x = 1\n") -> tuple[Path, Path]:
    """A set as the builder leaves it: its tree, the archives beside it and a manifest naming them."""
    set_dir = tmp_path / "dist" / "efs"
    tree = set_dir / "site-packages"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text(text)
    (tree / "pkg" / "data.txt").write_text("d" * 5000)
    mf.normalize_modes(tree)
    files = mf.scan(tree)
    mf.stamp_mtimes(tree, files)  # as the builder does: the same content, the same time, so rsync links it to an earlier version's copy
    index = write_archives(tree, set_dir / "archives", opened=["pkg/__init__.py"])
    made = mf.manifest(set_name="efs", target={"name": "arm"}, build_key="k" * 64, files=files, packages=[], bytecode=BytecodeReport(),
                       slim=SlimRecord(), builder="native", archives=index["archives"], archive_index=sha256_file(set_dir / "archives" / "index.json"))
    write_manifest(made, manifest_path(set_dir))
    return tree, manifest_path(set_dir)


def test_a_local_transfer_reports_the_version_it_published_and_the_bytes_rsync_sent(tmp_path):
    # GIVEN a built set and an empty folder standing for EFS
    tree, manifest = _built(tmp_path)
    efs = tmp_path / "efs-root"
    efs.mkdir()
    remote = Remote()
    plan = plan_sync(remote, str(efs), tree, manifest)
    assert plan.action == "transfer"
    # WHEN the plan is applied (rsync on this machine)
    result = apply_sync(plan, remote)
    # THEN the result names the version by the manifest's identity, where it now is, what it holds and what was sent
    made = load_manifest(manifest)
    version = efs / "envs" / made.identity
    assert isinstance(result, SyncResult)
    assert (result.method, result.version, result.action, result.where) == ("local", made.identity, "transfer", f"this machine:{version}")
    assert (result.files, result.bytes, result.repaired) == (made.files_count, made.bytes, 0) and result.seconds > 0
    published = sum(p.stat().st_size for p in version.rglob("*") if p.is_file() and p.name != MARKER)  # the tree, the archives, the manifest
    assert published > made.bytes and published <= result.bytes_sent < published + 4096, (published, result.bytes_sent)  # all of it, with rsync's own overhead
    assert json.loads((version / MARKER).read_text())["version"] == made.identity
    # WHEN it is planned and applied again THEN nothing is sent, and the result says so in the same type
    again = apply_sync(plan_sync(remote, str(efs), tree, manifest), remote)
    assert (again.action, again.bytes_sent, again.version, again.where) == ("up-to-date", 0, made.identity, result.where)


def test_a_changed_file_sends_about_that_file_to_a_new_version(tmp_path):
    # GIVEN one version published
    tree, manifest = _built(tmp_path)
    efs = tmp_path / "efs-root"
    efs.mkdir()
    remote = Remote()
    first = apply_sync(plan_sync(remote, str(efs), tree, manifest), remote)
    # WHEN a rebuild changes the small module only
    _built(tmp_path / "next", "x = 2\n")
    tree2, manifest2 = tmp_path / "next" / "dist" / "efs" / "site-packages", tmp_path / "next" / "dist" / "efs" / "manifest.json"
    second = apply_sync(plan_sync(remote, str(efs), tree2, manifest2), remote)
    # THEN a new version, and the unchanged 5 KB file is not sent again (a hard link to the first version's)
    assert second.version != first.version and second.action == "transfer"
    assert second.bytes_sent < first.bytes_sent - 4000, (first.bytes_sent, second.bytes_sent)


def test_an_up_to_date_plan_gives_the_same_result_by_datasync(tmp_path):
    # GIVEN a built set whose version is already on EFS, planned for DataSync
    tree, manifest = _built(tmp_path)
    version = load_manifest(manifest).identity
    datasync_plan = DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix="p/envs/x/", efs_dir="/hoist/envs/x", action="up-to-date", where="DataSync")
    # WHEN it is applied
    by_datasync = apply_datasync(datasync_plan, None, None)  # type: ignore[arg-type]  # up to date: no client is touched
    # THEN it says so in the one type, nothing sent
    assert isinstance(by_datasync, SyncResult)
    assert (by_datasync.method, by_datasync.where, by_datasync.bytes_sent, by_datasync.uploaded, by_datasync.copied) == ("datasync", "DataSync", 0, 0, 0)
    assert (by_datasync.version, by_datasync.action, by_datasync.files) == (version, "up-to-date", 2)


def test_rsync_progress_is_thinned_to_one_line_per_interval_and_other_lines_pass(monkeypatch):
    """rsync rewrites its --info=progress2 line many times a second; a fresh-clone trial saw 7,460 lines for one sync."""
    from sync import efs

    now = [100.0]
    monkeypatch.setattr(efs.time, "monotonic", lambda: now[0])
    seen: list[str] = []
    line = efs.progress_every(seen.append, seconds=2.0)
    for i in range(100):  # 100 updates within one second
        now[0] += 0.01
        line(f"    {i * 1000:,}  {i}%  375.82MB/s    0:00:01 (xfr#{i}, to-chk=0/9533)")
    line("Number of files: 9,533 (reg: 8,601, dir: 932)")
    now[0] += 2.5
    line("    99,000  100%  375.82MB/s    0:00:03 (xfr#99, to-chk=0/9533)")
    # the updates of the first seconds (0%...) are not shown: a short transfer shows no progress line at all
    assert len(seen) == 2 and seen[0].startswith("Number of files") and "100%" in seen[1]
    assert efs.progress_every(None) is None


def test_an_unknown_sync_method_is_named_with_the_closest_one_before_anything_is_read(project):
    import pytest

    from pipeline import config
    from pipeline.errors import SyncError
    from sync import stage

    cfg = config.load(project / "pipeline.toml")  # nothing built: the method is refused first
    with pytest.raises(SyncError) as err:
        stage.plan_job(cfg, method="lcoal")
    text = err.value.render()
    assert "unknown sync method 'lcoal'" in text and "did you mean --method local?" in text and "use one of local, bastion, datasync" in text
