"""A file system that behaves like EFS for import-time purposes: a read-only
FUSE passthrough of a folder that waits a fixed latency on every metadata
operation and read (EFS: about 1 ms a round trip) and caps read throughput,
and counts what it served. Mounted fresh for each measured run, so every cache
starts cold. Like the NFS client Lambda mounts EFS with, the kernel may then
keep what it learned (attributes, lookups, pages) for the rest of the run:
caching is what an NFS mount does too, and without it every path component of
every stat would be a round trip, which EFS does not cost.

    python3 bench/latencyfs.py SOURCE MOUNTPOINT --latency-ms 1 --mbps 300 --stats stats.json
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import threading
import time
from collections import Counter

from fuse import FUSE, FuseOSError, Operations


class LatencyFS(Operations):
    def __init__(self, root: str, latency_s: float, bytes_per_s: float, stats_path: str):
        self.root = os.path.realpath(root)
        self.latency = latency_s
        self.bytes_per_s = bytes_per_s
        self.stats_path = stats_path
        self.ops: Counter[str] = Counter()
        self.bytes_read = 0
        self._mutex = threading.Lock()  # not `lock`: fusepy dispatches FUSE's lock operation by name

    def _wait(self, op: str, size: int = 0) -> None:
        with self._mutex:
            self.ops[op] += 1
            self.bytes_read += size
        delay = self.latency + (size / self.bytes_per_s if self.bytes_per_s else 0)
        if delay:
            time.sleep(delay)

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _dump(self) -> None:
        # not pipeline.files.atomic_write_json: this script runs alone (python3 bench/latencyfs.py), the project is not on its path
        with open(self.stats_path + ".tmp", "w") as fh:
            json.dump({"ops": dict(self.ops), "bytes_read": self.bytes_read, "total_ops": sum(self.ops.values())}, fh)
        os.replace(self.stats_path + ".tmp", self.stats_path)

    # metadata
    def getattr(self, path, fh=None):
        self._wait("getattr")
        try:
            st = os.lstat(self._path(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from None
        return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")}

    def readdir(self, path, fh):
        self._wait("readdir")
        return [".", "..", *os.listdir(self._path(path))]

    def readlink(self, path):
        self._wait("readlink")
        return os.readlink(self._path(path))

    def access(self, path, mode):
        self._wait("access")
        if not os.access(self._path(path), mode):
            raise FuseOSError(errno.EACCES)

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    # data
    def open(self, path, flags):
        self._wait("open")
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise FuseOSError(errno.EROFS)
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        data = os.pread(fh, size, offset)
        self._wait("read", len(data))
        return data

    def release(self, path, fh):
        os.close(fh)
        self._dump()

    def destroy(self, path):
        self._dump()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--latency-ms", type=float, default=1.0)
    parser.add_argument("--mbps", type=float, default=300.0, help="read throughput cap, MB/s (0: none)")
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    fs = LatencyFS(args.source, args.latency_ms / 1000, args.mbps * 1e6, args.stats)
    fs._dump()
    # cache like an NFS mount (acregmax/acdirmax 60 s): a fresh mount starts cold, then remembers
    FUSE(fs, args.mountpoint, foreground=True, ro=True, nothreads=False, entry_timeout=60, attr_timeout=60,
         negative_timeout=60, max_read=131072, kernel_cache=True, allow_other=False)


if __name__ == "__main__":
    main()
