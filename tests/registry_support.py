"""A real OCI registry on 127.0.0.1: Debian's docker-registry (the CNCF distribution registry), started by the tests.

Docker talks plain HTTP to a registry on 127.0.0.0/8 without configuration (an "insecure registry" by default), so
`docker push 127.0.0.1:PORT/name:tag` works against it as against ECR, login aside.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path

    def stored_bytes(self) -> int:
        """Bytes of every blob the registry holds: what pushes have sent, compressed."""
        return sum(p.stat().st_size for p in (self.storage / "docker" / "registry" / "v2" / "blobs").rglob("data")) if self.storage.exists() else 0

    def get(self, path: str, accept: str = "application/vnd.docker.distribution.manifest.v2+json") -> bytes:
        req = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(workdir: Path) -> tuple[Registry, subprocess.Popen]:
    binary = shutil.which("docker-registry")
    if not binary:
        raise RuntimeError("no docker-registry: apt-get install docker-registry (the push tests need a real registry on 127.0.0.1)")
    port = _free_port()
    storage = workdir / "storage"
    config = workdir / "config.yml"
    config.write_text(CONFIG.format(root=storage, port=port))
    log = open(workdir / "registry.log", "w")  # noqa: SIM115 - the registry keeps its own copy
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    registry = Registry(host=f"127.0.0.1:{port}", storage=storage)
    for _ in range(100):
        try:
            registry.get("")
            return registry, proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"docker-registry did not answer on {registry.host}; its log:\n{(workdir / 'registry.log').read_text()[-2000:]}")
