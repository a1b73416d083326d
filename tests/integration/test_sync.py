"""sync-efs against a folder (local) and a real sshd + rsync on 127.0.0.1 (bastion):
immutable versions, hard links to the previous version, verification before the
marker, resume after a kill, locks, host keys, and garbage collection."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import SyncError
from sync import stage
from sync.efs import MARKER, holder_gone, list_versions, verify
from tests.conftest import REPO, lock_and_build, rebuild_archives_only, write_pipeline
from tests.wheels import make_wheel


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    from tests.sshd_support import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.proc.terminate()
    server.proc.wait(10)


@pytest.fixture(scope="module")
def bigwheels(tmp_path_factory):
    """Incompressible payloads, so transfers take measurable time and bytes."""
    house = tmp_path_factory.mktemp("bigwheels")
    make_wheel(house, "bigpkg", "1.0", "py3-none-any", {"bigpkg/__init__.py": "", **{f"bigpkg/blob{i}.bin": os.urandom(6_000_000) for i in range(4)}})
    make_wheel(house, "smallpkg", "1.0", "py3-none-any", {"smallpkg/__init__.py": "X = 1\n", "smallpkg/data.bin": os.urandom(200_000)})
    return house


def _configure(project, wheelhouse, bigwheels, method, sshd=None, extra=""):
    sync = f'[sync]\nmethod = "{method}"\nstale_lock_s = 600\n{extra}\n[sync.local]\npath = "efs-mount"\n'
    if sshd:
        sync += (f'\n[sync.bastion]\nhost = "127.0.0.1"\nuser = "{sshd.user}"\nport = {sshd.port}\n'
                 f'identity_file = "{sshd.identity_file}"\nknown_hosts = "{sshd.known_hosts}"\nefs_path = "{project / "bastion-efs"}"\n')
    write_pipeline(project, wheelhouse, {"[efs]": sync + "\n[efs]", f'find_links = ["{wheelhouse}"]': f'find_links = ["{wheelhouse}", "{bigwheels}"]'})


def _efs_base(project, method):
    # the local folder stands in for the file system's root; the bastion mounts the writer access point, whose root is efs.root
    return project / "efs-mount" / "hoist" / "envs" if method == "local" else project / "bastion-efs" / "envs"


@pytest.fixture(params=["local", pytest.param("bastion", marks=pytest.mark.sshd)])
def method(request):
    return request.param


@pytest.fixture
def setup(request, method, project, wheelhouse, bigwheels):
    server = request.getfixturevalue("sshd") if method == "bastion" else None
    _configure(project, wheelhouse, bigwheels, method, server)
    return project, method, server


def test_sync_publishes_a_verified_immutable_version_and_links_unchanged_files(setup):
    project, method, _ = setup
    cfg = lock_and_build(project, "nativepkg==1.0\nbigpkg==1.0\n")
    plan, remote = stage.plan(cfg)
    assert plan.action == "transfer" and plan.link_dests == ()
    first = stage.apply(plan, remote, cfg)
    base = _efs_base(project, method)
    v1 = base / first.version
    assert (v1 / MARKER).is_file() and json.loads((v1 / MARKER).read_text())["version"] == first.version
    assert verify(remote, plan) == []
    assert first.bytes_sent > 24_000_000  # the blobs went over

    again, remote = stage.plan(cfg)
    assert again.action == "up-to-date" and stage.apply(again, remote, cfg).bytes_sent == 0

    cfg = lock_and_build(project, "nativepkg==1.0\nbigpkg==1.0\nsmallpkg==1.0\n")
    plan2, remote = stage.plan(cfg)
    assert plan2.action == "transfer" and plan2.link_dests == (f"{base}/{first.version}/site-packages",)
    second = stage.apply(plan2, remote, cfg)
    v2 = base / second.version
    assert second.bytes_sent < 1_000_000  # smallpkg and metadata, not the blobs again
    blob1, blob2 = v1 / "site-packages/bigpkg/blob0.bin", v2 / "site-packages/bigpkg/blob0.bin"
    assert blob1.stat().st_ino == blob2.stat().st_ino  # a hard link to the previous version
    assert (v1 / MARKER).is_file() and not (v1 / "site-packages/smallpkg").exists()  # the old version is untouched


def test_a_rebuild_that_changes_only_the_archives_publishes_a_new_version(setup):
    # GIVEN a version on EFS whose archives hold every file (no hot set was recorded)
    project, method, _ = setup
    cfg = lock_and_build(project, "nativepkg==1.0\nsmallpkg==1.0\n")
    plan, remote = stage.plan(cfg)
    first = stage.apply(plan, remote, cfg)
    v1 = _efs_base(project, method) / first.version
    old_index = (v1 / "archives" / "index.json").read_text()
    # WHEN a rebuild records the hot set at last: the same tree, other archives and index
    tree_hash = json.loads(plan.manifest.read_text())["content_hash"]
    assert rebuild_archives_only(cfg, ["smallpkg/__init__.py"])[0] == tree_hash
    again, remote = stage.plan(cfg)
    # THEN it is a new version, published whole, and the complete (maybe live) one is not written into
    assert again.action == "transfer" and again.version != first.version
    second = stage.apply(again, remote, cfg)
    v2 = _efs_base(project, method) / second.version
    hot = json.loads((v2 / "archives" / "index.json").read_text())["hot"]
    assert (hot["recorded"], hot["files"], hot["of"]) == (True, 1, json.loads(old_index)["hot"]["of"])
    assert (v1 / "archives" / "index.json").read_text() == old_index and (v1 / MARKER).is_file()
    assert verify(remote, again) == [] and (v2 / MARKER).is_file()
    # and a damaged index on EFS is a verification problem, not a pass
    (v2 / "archives" / "index.json").chmod(0o644)
    (v2 / "archives" / "index.json").write_text("{}\n")
    assert verify(remote, again) == ["archive index differs or is missing: archives/index.json"]


def test_a_tree_without_its_hot_set_is_synced_only_when_the_user_accepts_its_cost(project, wheelhouse, bigwheels):
    # GIVEN a build whose import check did not run (the opt-out): archives of every file, no hot set
    _configure(project, wheelhouse, bigwheels, "local")
    cfg = lock_and_build(project, "nativepkg==1.0\nsmallpkg==1.0\n")
    rebuild_archives_only(cfg, None, drop_check=True)
    # WHEN it is planned for sync-efs (and deploy, which plans through the same job)
    with pytest.raises(SyncError) as err:
        stage.plan_job(cfg)
    # THEN it is refused with what every cold start would pay, and the flag that accepts it
    said = err.value.render()
    assert "built without its hot set" in said and "MB in memory during init" in said and "--no-hot-set" in said, said
    # and the fix, run as written, publishes it
    run = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "sync-efs", "--config", str(project / "pipeline.toml"), "--no-hot-set"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "published" in run.stdout and stage.plan_job(cfg, no_hot_set=True).plan.action == "up-to-date"


def test_a_killed_sync_leaves_no_marker_and_resumes(setup, wheelhouse, bigwheels):
    project, method, server = setup
    _configure(project, wheelhouse, bigwheels, method, server, extra="bwlimit_kbps = 4000")
    cfg = lock_and_build(project, "bigpkg==1.0\n")
    plan, _ = stage.plan(cfg)
    dest = _efs_base(project, method) / plan.version
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), "sync-efs", "--config", str(project / "pipeline.toml")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((dest / "site-packages").rglob("*")) + list(dest.rglob(".rsync-partial/*")):
        time.sleep(0.1)
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the task, its rsync and ssh
    proc.wait()
    assert dest.is_dir() and not (dest / MARKER).exists()
    versions = list_versions(stage.remote_for(cfg)[0], str(dest.parent))
    assert [v.complete for v in versions if v.name == plan.version] == [False]

    _configure(project, wheelhouse, bigwheels, method, server)  # no bandwidth limit now
    cfg = config.load(project / "pipeline.toml")
    resumed, remote = stage.plan(cfg)
    assert resumed.action == "resume"
    # SIGKILL leaves the lock behind; its holder ran on this host and is gone, so the rerun takes it over at once
    lock = dest.parent / f".{plan.version}.lock"
    assert lock.is_dir() and (lock / "owner").read_text().startswith(f"{platform.node()}:{proc.pid}:")
    result = stage.apply(resumed, remote, cfg)
    assert (dest / MARKER).is_file() and verify(remote, resumed) == []
    full = plan.bytes + sum(a["bytes"] for a in json.loads(plan.manifest.read_text()).get("archives", []))
    assert result.bytes_sent < full  # what had arrived (tree files or archives) was not sent again


def test_two_syncs_of_one_version_do_not_corrupt_it(setup, wheelhouse, bigwheels):
    project, method, server = setup
    _configure(project, wheelhouse, bigwheels, method, server, extra="bwlimit_kbps = 8000")
    cfg = lock_and_build(project, "bigpkg==1.0\n")
    outcomes = []

    def run():
        try:
            plan, remote = stage.plan(cfg)
            outcomes.append(("ok", stage.apply(plan, remote, cfg)))
        except SyncError as exc:
            outcomes.append(("error", exc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join(120)
    kinds = sorted(k for k, _ in outcomes)
    assert kinds in (["error", "ok"], ["ok", "ok"])
    for kind, value in outcomes:
        if kind == "error":
            assert "another sync of version" in str(value) and "holds" in str(value)
    plan, remote = stage.plan(cfg)
    assert plan.action == "up-to-date" and verify(remote, plan) == []


def test_gc_keeps_the_newest_and_the_protected(setup):
    project, method, _ = setup
    made = []
    for reqs in ("smallpkg==1.0\n", "smallpkg==1.0\nnativepkg==1.0\n", "nativepkg==1.0\n"):
        cfg = lock_and_build(project, reqs)
        plan, remote = stage.plan(cfg)
        made.append(stage.apply(plan, remote, cfg).version)
        time.sleep(1.1)  # completion times order the versions
    gc, remote = stage.gc_plan(cfg, keep=1, protect={made[0][:12]})
    assert {v.name for v in gc.remove} == {made[1]}
    assert {v.name for v in gc.keep} == {made[0], made[2]}
    assert stage.gc_apply(gc, remote) == [made[1]]
    base = _efs_base(project, method)
    assert not (base / made[1]).exists() and (base / made[0] / MARKER).exists() and (base / made[2] / MARKER).exists()
    assert not [p for p in base.iterdir() if p.name.startswith(".trash-")]


@pytest.mark.sshd
def test_host_key_mismatch_and_unknown_host_are_clear_errors(project, wheelhouse, bigwheels, sshd, tmp_path):
    _configure(project, wheelhouse, bigwheels, "bastion", sshd)
    lock_and_build(project, "smallpkg==1.0\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    text = (project / "pipeline.toml").read_text().replace(f'known_hosts = "{sshd.known_hosts}"', f'known_hosts = "{wrong}"')
    (project / "pipeline.toml").write_text(text)
    with pytest.raises(SyncError) as err:
        stage.plan(config.load(project / "pipeline.toml"))
    assert "host key does not match" in str(err.value) and str(wrong) in str(err.value)

    (project / "pipeline.toml").write_text(text.replace('host = "127.0.0.1"', 'host = "no-such-host.invalid"'))
    with pytest.raises(SyncError) as err:
        stage.plan(config.load(project / "pipeline.toml"))
    assert "unknown host" in str(err.value) and "sync.bastion.host" in str(err.value)
    assert not (project / "bastion-efs").exists() or not list((project / "bastion-efs").rglob(MARKER))


def test_a_lock_on_one_version_does_not_stop_another(setup):
    project, method, _ = setup
    cfg = lock_and_build(project, "smallpkg==1.0\n")
    base = _efs_base(project, method)
    busy = base / ".0000000000000000000000000000000000000000000000000000000000000000.lock"
    busy.mkdir(parents=True)
    (busy / "owner").write_text("elsewhere:1:0\n")
    plan, remote = stage.plan(cfg)
    result = stage.apply(plan, remote, cfg)
    assert (base / result.version / MARKER).is_file() and busy.is_dir()  # the other version's lock is left alone
    held = base / f".{result.version}.lock"
    assert not held.exists()  # released after the sync


def _start_slow_sync(project, wheelhouse, bigwheels, method, server):
    """`invoke sync-efs` of a 24 MB tree at 4 MB/s, as a new user runs it; returns once files arrive."""
    _configure(project, wheelhouse, bigwheels, method, server, extra="bwlimit_kbps = 4000")
    cfg = lock_and_build(project, "bigpkg==1.0\n")
    plan, _ = stage.plan(cfg)
    dest = _efs_base(project, method) / plan.version
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), "sync-efs", "--config", str(project / "pipeline.toml")], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((dest / "site-packages").rglob("*")) + list(dest.rglob(".rsync-partial/*")):
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None, "the sync finished before it could be interrupted"
    return cfg, plan, dest, proc


def _group_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.parametrize("transport", ["local", pytest.param("bastion", marks=pytest.mark.sshd)])
def test_an_interrupted_sync_releases_its_lock_and_the_next_run_completes_at_once(request, project, wheelhouse, bigwheels, transport, sig):
    """Ctrl-C (SIGINT), a cancelled CI job or a container stop (SIGTERM), a closed terminal (SIGHUP): sent to the
    task's process alone, which stops its rsync, releases the version's lock and says how to resume."""
    server = request.getfixturevalue("sshd") if transport == "bastion" else None
    _, plan, dest, proc = _start_slow_sync(project, wheelhouse, bigwheels, transport, server)
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and f"interrupted by {sig.name}" in out and "run the same command again" in out, out
    assert _group_gone(proc.pid), "rsync or ssh outlived the interrupted task"
    assert not (dest.parent / f".{plan.version}.lock").exists() and not (dest / MARKER).exists()
    _configure(project, wheelhouse, bigwheels, transport, server)
    again = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "sync-efs", "--config", str(project / "pipeline.toml")],
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "action: resume" in again.stdout and (dest / MARKER).is_file()
    assert verify(stage.remote_for(config.load(project / "pipeline.toml"))[0], plan) == []


def test_a_lock_is_taken_over_only_when_its_holder_is_provably_gone():
    host = platform.node()
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = int(time.time())
    assert holder_gone(f"{host}:{dead.pid}:{now}")  # this host, no such process
    assert not holder_gone(f"other-host:{dead.pid}:{now}")  # another host: nothing can be proven from here
    assert not holder_gone(f"{host}:{os.getppid()}:{now}")  # alive, started before the lock
    assert holder_gone(f"{host}:{os.getppid()}:0")  # that pid started after the lock was taken: reused, not the holder
    assert not holder_gone(f"{host}:{os.getpid()}:{now}")  # this process (another thread holds it)
    assert not holder_gone("garbage")


WRITER_UID, FUNCTION_UID = 1001, 1000  # [deploy] writer_uid and posix_uid defaults: the two access points' POSIX users


@pytest.fixture
def efs_standin():
    """A new EFS file system as AWS hands it over: its root owned by root, mode 755. Outside pytest's
    0700 temporary folders, so other uids can reach it, as NFS clients of the real one can."""
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="hoist-efs-")
    os.chmod(top, 0o755)
    fs_root = os.path.join(top, "fs")
    os.mkdir(fs_root, 0o755)
    os.chown(fs_root, 0, 0)
    yield top, fs_root
    shutil.rmtree(top, ignore_errors=True)


def _as_uid(uid: int, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c", script], capture_output=True, text=True, check=False)


@pytest.mark.sshd
def test_bastion_as_a_non_root_writer_through_its_access_point_and_the_function_reads_only(project, wheelhouse, bigwheels, sshd, efs_standin):
    """The documented set-up against the semantics EFS enforces: the bastion's user is not root, the file system's
    root belongs to root (755), the writer access point presents <root>/hoist as the mount's / with the writer's
    uid, and the function reads through its own access point as another uid."""
    from tests.sshd_support import writer_account

    top, fs_root = efs_standin
    user = writer_account("hoist-writer", WRITER_UID, Path(top) / "home", (sshd.identity_file.with_suffix(".pub")).read_text())

    # what the old README did: a non-root user writing under the file system's root
    _configure(project, wheelhouse, bigwheels, "bastion", sshd)
    text = (project / "pipeline.toml").read_text().replace(f'user = "{sshd.user}"', f'user = "{user}"')
    (project / "pipeline.toml").write_text(text.replace(f'efs_path = "{project / "bastion-efs"}"', f'efs_path = "{fs_root}"\nthrough_access_point = false'))
    cfg = lock_and_build(project, "nativepkg==1.0\nsmallpkg==1.0\n")
    plan, remote = stage.plan(cfg)
    with pytest.raises(SyncError) as err:
        stage.apply(plan, remote, cfg)
    assert f"{user} cannot create {fs_root}/hoist/envs" in str(err.value) and "Permission denied" in str(err.value)
    assert "writer access point" in str(err.value) and os.listdir(fs_root) == []

    # the documented set-up: the writer access point's CreationInfo makes <root>/hoist owned by the writer (755) on first
    # mount, and the mount shows it as /; the stand-in mount is a link to that folder
    ap_root = os.path.join(fs_root, "hoist")
    os.mkdir(ap_root, 0o755)
    os.chown(ap_root, WRITER_UID, WRITER_UID)
    mount = os.path.join(top, "mnt-efs")
    os.symlink(ap_root, mount)
    (project / "pipeline.toml").write_text(text.replace(f'efs_path = "{project / "bastion-efs"}"', f'efs_path = "{mount}"'))
    cfg = config.load(project / "pipeline.toml")
    plan, remote = stage.plan(cfg)
    assert plan.dest == f"{mount}/envs/{plan.version}"  # never <mount>/hoist/...: the access point's root is the client's /
    stage.apply(plan, remote, cfg)
    version = os.path.join(ap_root, "envs", plan.version)
    assert os.path.isfile(os.path.join(version, MARKER)) and not os.path.exists(os.path.join(ap_root, "hoist"))
    for path in [version, *(str(p) for p in Path(version).rglob("*"))]:
        st = os.lstat(path)
        assert st.st_uid == WRITER_UID and not st.st_mode & 0o022, path  # the writer owns it; group and others only read

    # the function: its access point presents the same folder as /mnt/<name>, as uid 1000
    tree = f"{ap_root}/envs/{plan.version}"
    read = _as_uid(FUNCTION_UID, f"cd {tree}/site-packages && find . -type f -exec sha256sum {{}} + && ls ../archives")
    assert read.returncode == 0, read.stderr
    manifest = json.loads(plan.manifest.read_text())
    sums = {line.split("  ", 1)[1].removeprefix("./"): line.split()[0] for line in read.stdout.splitlines() if "  " in line}
    assert all(sums.get(f["path"]) == f["sha256"] for f in manifest["files"])
    assert "index.json" in read.stdout
    some_file = next(f["path"] for f in manifest["files"] if f["path"].endswith(".py"))
    for attempt in (f"echo x >> {tree}/site-packages/{some_file}", f"touch {tree}/site-packages/new.py", f"mkdir {ap_root}/envs/other",
                    f"rm -f {tree}/{MARKER}", f"touch {fs_root}/x"):
        wrote = _as_uid(FUNCTION_UID, attempt)
        assert wrote.returncode != 0 and "Permission denied" in wrote.stderr, attempt
    assert verify(remote, plan) == []  # the version is as it was written


def test_efs_gc_reads_what_is_live_or_refuses_without_credentials(project, wheelhouse, tmp_path):
    """The record of a CI release lives in the artifact bucket: without credentials efs-gc cannot know what is live."""
    from tests.deploy_support import DEPLOY

    write_pipeline(project, wheelhouse)
    (project / "pipeline.toml").write_text((project / "pipeline.toml").read_text() + DEPLOY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    base = [sys.executable, "-m", "invoke", "-r", str(REPO), "efs-gc", "--config", str(project / "pipeline.toml"), "--dry-run"]
    refused = subprocess.run(base, capture_output=True, text=True, env=env, check=False)
    assert refused.returncode == 1 and "needs AWS credentials" in refused.stderr and "--protect" in refused.stderr
    named = subprocess.run([*base, "--protect", "0123456789ab"], capture_output=True, text=True, env=env, check=False)
    assert named.returncode == 0 and "nothing to remove" in named.stdout, named.stderr
