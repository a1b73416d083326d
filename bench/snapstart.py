"""The image shape with SnapStart, measured with a real checkpoint/restore engine: CRIU.

`invoke bench coldstart` calls ``measure`` beside its EFS and local-disk cases,
on the same model and trees:

1. a fresh ``python -I -S`` runs the demo handler's init as the image has it
   (its tree on local disk, HOIST_HYDRATE=0, the model folder), then the
   before-snapshot hooks (hoist_lambda.snapstart: one warm-up inference,
   release), says it is ready and waits;
2. CRIU dumps it (the process is gone afterwards): the snapshot;
3. the page cache is dropped, the snapshot's folder is mounted behind the same
   latency instrument as the EFS tree (bench/latencyfs.py, 1 ms), and CRIU
   restores from there while the snapshot's 512 KB chunks are fetched in
   parallel beside it, as Lambda loads a snapshot's chunks lazily rather than
   all before resuming (lambda-facts.md, SnapStart; until 2026-12-06 the
   benchmark fetched them all first, 0.70 s against 0.56 s to the first
   answer): neither side reads from local memory for free;
4. the restored process runs the after-restore hooks (reseed, fresh clients)
   and answers its first request (the model folder's sample through the
   handler); the time from the start of the restore to that answer is the
   figure compared with the EFS cold start.

CRIU: Debian trixie's 4.1.1, from a minimal trixie root (debootstrap, once,
cached under ~/.cache/hoist/criu), run through that root's own dynamic loader
and libraries; bookworm's 3.17 fails its vDSO check on these machines' kernel
(lambda-facts.md, SnapStart).

Lambda's restore is not CRIU's: it loads the snapshot lazily in 512 KB chunks
from caches, and its published figures grow with resident memory. So the
report keeps apart the restore measured here and what the snapshot's size
implies on Lambda, scaled from AWS's published figure (a 327 MB function about
0.7 s), which is an estimate, not a measurement.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.emulation import cache_dir
from pipeline.errors import BenchError

ROOT_NAME = "debian-trixie-amd64-criu"
COMPLETE = ".hoist-root-complete"
MIRROR = "http://deb.debian.org/debian"
# AWS's published restore figure (lambda-facts.md, SnapStart): a 327 MB function restored in about 0.7 s
PUBLISHED_RESTORE = (327e6, 0.7)

SNAP_CHILD = r"""
import json, os, sys, time
handler_dir, layer, ready, go, out, event_path = sys.argv[1:7]
sys.path.insert(0, handler_dir)
if layer != "-":
    sys.path.insert(0, layer)
t0 = time.perf_counter()
import app  # the demo handler's init, as the image runs it; it registers the SnapStart hooks (snapstart.prepare)
from hoist_lambda import snapstart
t1 = time.perf_counter()
snapstart.run_before_snapshot()  # no snapshot_restore_py under -S: the hooks run as the runtime would
t2 = time.perf_counter()
with open(ready + ".tmp", "w") as fh:
    json.dump({"init_seconds": t1 - t0, "before_snapshot_seconds": t2 - t1, "pid": os.getpid()}, fh)
os.rename(ready + ".tmp", ready)
while not os.path.exists(go):
    time.sleep(0.0005)
woke = time.time()
snapstart.run_after_restore()
with open(event_path) as fh:
    event = json.load(fh)
answer = app.handler(event, None)
answered = time.time()
body = json.loads(answer["body"])
with open(out + ".tmp", "w") as fh:
    json.dump({"woke": woke, "answered": answered, "status": answer["statusCode"], "label": body["predictions"][0]["label"],
               "hooks": snapstart.report()}, fh)
os.rename(out + ".tmp", out)
"""


@dataclass(frozen=True)
class Criu:
    root: Path  # the trixie root holding criu and its libraries

    def argv(self, *args: str) -> list[str]:
        libs = f"{self.root}/lib/x86_64-linux-gnu:{self.root}/usr/lib/x86_64-linux-gnu"
        return [str(self.root / "lib64" / "ld-linux-x86-64.so.2"), "--library-path", libs, str(self.root / "usr" / "sbin" / "criu"), *args]

    def version(self) -> str:
        return proc.capture(self.argv("--version")).stdout.strip().splitlines()[0]


def ensure_criu(say) -> Criu:
    """Debian trixie's CRIU in a minimal root, built once (debootstrap, as root), checked with `criu check`."""
    root = cache_dir() / "criu" / ROOT_NAME
    if not (root / COMPLETE).is_file():
        if os.geteuid() != 0 or not shutil.which("debootstrap"):
            raise BenchError("CRIU (Debian trixie's, in a root of its own) is needed for the SnapStart case, and building its root needs root and debootstrap",
                             where="invoke bench coldstart", fix="apt-get install debootstrap, then run the benchmark as root once (it builds the root and reuses it)")
        partial = root.with_name(root.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        say(f"building a Debian trixie amd64 root with CRIU into {root} (debootstrap, once)")
        proc.run(["debootstrap", "--arch=amd64", "--variant=minbase", "--include=criu", "trixie", str(partial), os.environ.get("HOIST_DEBIAN_MIRROR", MIRROR)],
                 what="debootstrap (trixie, criu)", fix="check that the Debian mirror answers (HOIST_DEBIAN_MIRROR overrides it)")
        (partial / COMPLETE).write_text("debian trixie amd64, criu\n")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    criu = Criu(root)
    checked = proc.capture(criu.argv("check"))
    if "Looks good" not in checked.stdout + checked.stderr:
        raise BenchError(f"criu check failed: {(checked.stdout + checked.stderr).strip()[-600:]}", where=str(root),
                         fix="run the benchmark as root on a kernel with checkpoint/restore support (CONFIG_CHECKPOINT_RESTORE)")
    return criu


def _drop_page_cache() -> None:
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _wait_for(path: Path, child: subprocess.Popen | None, limit_s: float, what: str, log: Path) -> dict:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if child is not None and child.poll() is not None:
            raise BenchError(f"{what}: the process exited ({child.returncode}): {log.read_text()[-1500:] if log.exists() else ''}", where="bench snapstart")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: nothing after {limit_s:.0f} s; {log.read_text()[-1500:] if log.exists() else ''}", where="bench snapstart")
        time.sleep(0.0005)
    return json.loads(path.read_text())


def _bytes(folder: Path) -> tuple[int, int]:
    """(all the snapshot's files, its memory pages alone)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in files if p.name.startswith("pages-"))


READ_AHEAD_WORKERS = 16  # the snapshot's files read in parallel chunks, as the handler hydrates the EFS archives (32 reads in flight there)
READ_AHEAD_CHUNK = 512 << 10  # Lambda's own chunk (lambda-facts.md, SnapStart)


def read_ahead(folder: Path, workers: int = READ_AHEAD_WORKERS, chunk: int = READ_AHEAD_CHUNK) -> int:
    """Read the snapshot's files through the mount in parallel chunks, into the page cache CRIU reads from as it
    restores beside this: what Lambda does with a snapshot's chunks (many in flight from its caches) and Hoist's
    hydration with the archives on EFS. Its time is inside the restore's. Returns the bytes read."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(path, offset) for path in sorted(folder.iterdir()) if path.is_file() for offset in range(0, path.stat().st_size, chunk)]

    def one(job: tuple[Path, int]) -> int:
        path, offset = job
        fd = os.open(path, os.O_RDONLY)
        try:
            return len(os.pread(fd, chunk, offset))
        finally:
            os.close(fd)

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, jobs))


def measure(*, python: str, handler_dir: Path, efs_tree: Path, layer: Path | None, model_dir: Path, event: bytes, work: Path, latency_ms: float,
            mbps: float, mount, unmount, say, read_ahead_workers: int = READ_AHEAD_WORKERS) -> dict:
    """One snapshot and one restore behind the latency instrument; what it took and how large it was."""
    criu = ensure_criu(say)
    snap = work / "snapstart"
    images, scratch = snap / "images", work / "snapstart-logs"
    for folder in (snap, scratch):  # a run before this one left its snapshot and its ready/go/answer files: none may be read as this run's
        shutil.rmtree(folder, ignore_errors=True)
    images.mkdir(parents=True)
    scratch.mkdir()
    ready, go, out, event_path, log = scratch / "ready.json", scratch / "go", scratch / "answer.json", scratch / "event.json", scratch / "child.log"
    event_path.write_bytes(event)
    env = {"PATH": os.environ.get("PATH", ""), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008", "HOIST_EFS_TREE": str(efs_tree), "HOIST_HYDRATE": "0",
           "HOIST_MODEL_DIR": str(model_dir), "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    with open(log, "w") as out_fh:  # no terminal: CRIU dumps a session of its own without --shell-job
        child = subprocess.Popen([python, "-I", "-S", "-c", SNAP_CHILD, str(handler_dir), str(layer) if layer else "-", str(ready), str(go), str(out), str(event_path)],
                                 stdin=subprocess.DEVNULL, stdout=out_fh, stderr=subprocess.STDOUT, env=env, cwd=scratch, start_new_session=True)
    try:
        before = _wait_for(ready, child, 600, "init and the before-snapshot hooks", log)
        if before["pid"] != child.pid:
            raise BenchError(f"{ready} names pid {before['pid']}, not the child's {child.pid}: a file of another run", where="bench snapstart")
        rss = int(next(line.split()[1] for line in Path(f"/proc/{child.pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))) * 1024
        say(f"CRIU {criu.version()}: dumping pid {child.pid} ({rss / 1e6:,.0f} MB resident)")
        t = time.monotonic()
        proc.run(criu.argv("dump", "-t", str(child.pid), "-D", str(images), "--log-file", str(scratch / "dump.log"), "-v2"), what="criu dump",
                 fix=f"read {scratch / 'dump.log'}")
        dump_s = time.monotonic() - t
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    total, pages = _bytes(images)
    say(f"snapshot: {total / 1e6:,.0f} MB ({pages / 1e6:,.0f} MB of memory pages), dumped in {dump_s:.2f} s; dropping the page cache, "
        f"restoring through the latency mount ({latency_ms:g} ms)")
    mnt, fs_proc, stats = mount(snap, latency_ms, mbps, work)
    try:
        _drop_page_cache()
        started = time.time()
        t = time.monotonic()
        fetched: dict[str, float] = {"bytes": 0, "seconds": 0.0}
        ahead = None
        if read_ahead_workers:  # the snapshot's chunks fetched in the background while the restore runs, as Lambda's are (lazily)
            def fetch() -> None:
                fetched["bytes"] = read_ahead(mnt / "images", read_ahead_workers)
                fetched["seconds"] = time.monotonic() - t
            ahead = threading.Thread(target=fetch, name="snapshot-read-ahead")
            ahead.start()
        try:
            proc.run(criu.argv("restore", "-D", str(mnt / "images"), "-d", "--work-dir", str(scratch), "--log-file", str(scratch / "restore.log"), "-v2"),
                     what="criu restore", fix=f"read {scratch / 'restore.log'}")
        finally:
            restore_s = time.monotonic() - t
            if ahead is not None:
                ahead.join()
        read_ahead_s = fetched["seconds"]
        go.write_text("")
        answer = _wait_for(out, None, 300, "the first answer after the restore", log)
        if answer["woke"] < started:
            raise BenchError(f"{out} was written before this restore started: a file of another run", where="bench snapstart")
    finally:
        unmount(mnt, fs_proc)
    read = json.loads(stats.read_text()) if stats.exists() else {}
    local_restore_s = restore_s
    implied = PUBLISHED_RESTORE[1] * rss / PUBLISHED_RESTORE[0]
    return {
        "criu": criu.version(),
        "init_seconds": round(before["init_seconds"], 3),
        "before_snapshot_seconds": round(before["before_snapshot_seconds"], 3),
        "resident_bytes": rss,
        "snapshot_bytes": total,
        "snapshot_page_bytes": pages,
        "dump_seconds": round(dump_s, 3),
        "restore_seconds_local": round(local_restore_s, 3),  # the read-ahead included
        "read_ahead": {"workers": read_ahead_workers, "chunk_bytes": READ_AHEAD_CHUNK, "bytes": int(fetched["bytes"]), "seconds": round(read_ahead_s, 3),
                       "beside_the_restore": True},
        "restore_to_first_answer_seconds": round(answer["answered"] - started, 3),
        "after_restore_and_answer_seconds": round(answer["answered"] - answer["woke"], 3),
        "first_answer": {"status": answer["status"], "label": answer["label"]},
        "hooks": answer["hooks"],
        "bytes_read": read.get("bytes_read"),
        "total_ops": read.get("total_ops"),
        "lambda_restore_seconds_implied": round(implied, 2),
        "lambda_restore_basis": f"scaled from AWS's published figure ({PUBLISHED_RESTORE[0] / 1e6:.0f} MB resident, about {PUBLISHED_RESTORE[1]} s) "
                                f"by this process's {rss / 1e6:,.0f} MB resident: an estimate, not a measurement",
    }


def median_run(runs: list[dict]) -> dict:
    """The run whose time to the first answer is the median (its other figures with it), and every run's time."""
    if not runs:
        raise BenchError("no SnapStart run to report", where="bench snapstart")
    ordered = sorted(runs, key=lambda r: r["restore_to_first_answer_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": len(runs),
            "restore_to_first_answer_seconds_all": [r["restore_to_first_answer_seconds"] for r in runs]}


# ---------------------------------------------------------------- what a handler-only change pushes


REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


def _registry(work: Path) -> tuple[str, Path, subprocess.Popen]:
    """Debian's docker-registry on 127.0.0.1 (a free port), storing under ``work``: (host, storage, process)."""
    binary = shutil.which("docker-registry")
    if not binary:
        raise BenchError("no docker-registry: the handler-only push is measured against a real registry on 127.0.0.1", where="invoke bench coldstart",
                         fix="apt-get install docker-registry")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = work / "registry"
    (work / "registry.yml").write_text(REGISTRY_CONFIG.format(root=storage, port=port))
    server = subprocess.Popen([binary, "serve", str(work / "registry.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5).close()
            return f"127.0.0.1:{port}", storage, server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise BenchError("docker-registry did not answer on 127.0.0.1", where="invoke bench coldstart", fix="run `docker-registry serve` by hand to see why")


def _stored(storage: Path) -> int:
    return sum(p.stat().st_size for p in storage.rglob("data")) if storage.exists() else 0


def handler_push(*, sets: dict[str, tuple[Path, str]], handler_dir: Path, model_dir: Path, work: Path, say) -> dict:
    """Build the image of the same trees (FROM a one-file base: the base's layers are pushed once in any case), push it to
    a registry on 127.0.0.1, change the handler only, build and push again: the bytes the second push stored."""
    import tarfile

    from builder import image
    from deploy.image import push
    from pipeline import docker

    if why := docker.daemon_problem():
        raise BenchError(why, where="invoke bench coldstart (handler-only push)", fix="start dockerd (dockerd --bridge=none --iptables=false), then run again")
    base_ref = "hoist-bench/base:1"
    if not docker.image_exists(base_ref):
        root = work / "base-root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "os-release").write_text("ID=hoist-bench\n")
        with tarfile.open(work / "base.tar", "w") as tar:
            tar.add(root / "etc", arcname="etc")
        done = docker.import_tar(work / "base.tar", base_ref, platform="linux/amd64")
        if done.returncode != 0:
            raise BenchError(f"docker import of the bench's base failed: {done.stderr[-400:]}", where="invoke bench coldstart")
    host, storage, server = _registry(work)
    try:
        target = work / "image-build"
        changed = work / "handler-changed"
        shutil.copytree(handler_dir, changed, ignore=shutil.ignore_patterns("__pycache__"))
        build = lambda folder: image.image_record(image.build_for(base_ref=base_ref, platform="linux/amd64", target_dir=target, sets=sets,  # noqa: E731
                                                                    handler_dir=folder, model_dir=model_dir, handler="app.handler", snapstart=True,
                                                                    repository="hoist-bench/fn"), "linux/amd64")
        say("image: building the trees, the model and the handler into an OCI layout, then pushing it to a registry on 127.0.0.1")
        t = time.monotonic()
        first = build(changed)
        first_build_s = time.monotonic() - t
        push(first, f"{host}/hoist-bench/fn")
        before = _stored(storage)
        (changed / "app.py").write_text((changed / "app.py").read_text() + "\n# a handler-only change\n")
        t = time.monotonic()
        second = build(changed)
        rebuild_s = time.monotonic() - t
        t = time.monotonic()
        pushed = push(second, f"{host}/hoist-bench/fn")
        push_s = time.monotonic() - t
        sent = _stored(storage) - before
    finally:
        server.terminate()
        server.wait(30)
    return {"image_bytes": first.bytes, "layers": [{"name": n, "bytes": b} for n, _, b in first.layers], "first_build_seconds": round(first_build_s, 2),
            "handler_change": {"layers_written": list(second.written), "rebuild_seconds": round(rebuild_s, 2), "push_seconds": round(push_s, 2),
                               "bytes_pushed": sent, "digest": pushed.digest}}


# ---------------------------------------------------------------- the priced table


# list prices, us-east-1 (Lambda, EFS and ECR pricing pages; SnapStart's two as AWS's pricing page states them for Python,
# restated by third parties: verify before relying on them, docs/untested.md)
LAMBDA_GB_SECOND = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
PRICES: dict[str, float] = {
    "requests_per_million": 0.20,
    "efs_elastic_read_per_gb": 0.03,
    "efs_standard_gb_month": 0.30,
    "ecr_storage_gb_month": 0.10,
    "snapstart_cache_gb_second": 0.0000015046,
    "snapstart_restore_per_gb": 0.0001397998,
}
MONTH_S = 30 * 24 * 3600


def priced(*, memory_mb: int, arch: str, requests_per_month: int, cold_start_share: float, deploys_per_month: int, versions_cached: int,
           efs: dict, image_local: dict, snap: dict, tree_bytes: int, image_bytes: int) -> dict:
    """Per cold start and per million requests for each shape, from the measured seconds and bytes and the prices above.

    Assumed: ``requests_per_month`` with ``cold_start_share`` of them cold; ``versions_cached`` published versions
    kept (rollback needs them), each cached by SnapStart for its whole life and holding its image in ECR and its tree
    on EFS; ``deploys_per_month`` publishes, each version cached at least 3 h (SnapStart's minimum: covered as long as
    a version lives that long). Warm requests cost the same in every shape and are left out, the request price kept."""
    gb = memory_mb / 1024
    p = PRICES
    second = LAMBDA_GB_SECOND[arch]
    cold = requests_per_month * cold_start_share
    per_cold = {
        "efs": efs["seconds"] * gb * second + efs["bytes_read"] / 1e9 * p["efs_elastic_read_per_gb"],
        "image": image_local["seconds"] * gb * second,
        "image_snapstart": gb * p["snapstart_restore_per_gb"] + snap["after_restore_seconds"] * gb * second,
    }
    monthly = {
        "efs": versions_cached * tree_bytes / 1e9 * p["efs_standard_gb_month"],
        "image": versions_cached * image_bytes / 1e9 * p["ecr_storage_gb_month"],
        "image_snapstart": versions_cached * image_bytes / 1e9 * p["ecr_storage_gb_month"]
        + max(versions_cached, 1) * gb * MONTH_S * p["snapstart_cache_gb_second"],
    }
    millions = requests_per_month / 1e6
    rows = {name: {"per_cold_start_usd": round(per_cold[name], 6), "fixed_per_month_usd": round(monthly[name], 2),
                   "per_million_requests_usd": round(p["requests_per_million"] + cold / millions * per_cold[name] + monthly[name] / millions, 2)}
            for name in per_cold}
    return {"assumed": {"requests_per_month": requests_per_month, "cold_start_share": cold_start_share, "cold_starts_per_month": int(cold),
                        "deploys_per_month": deploys_per_month, "versions_cached": versions_cached, "memory_mb": memory_mb, "arch": arch,
                        "region": "us-east-1 list prices"},
            "prices": {**p, "lambda_gb_second": second}, "shapes": rows}


def bars(values: dict[str, float], unit: str, width: int = 40) -> list[str]:
    """A text bar chart: one line per shape, the longest bar ``width`` wide."""
    top = max(values.values()) or 1
    return [f"{name:<28} {'#' * max(1, round(width * v / top)):<{width}} {v:,.3f} {unit}" for name, v in values.items()]
