"""A PEP 503 simple index on 127.0.0.1 and torch look-alikes, for lock tests without the network.

``torch_wheels`` writes what PyPI and the PyTorch CPU index serve for Linux, in
miniature: a plain ``torch`` whose metadata pulls ``nvidia-*`` and ``triton`` on
Linux (the CUDA build), and a ``+cpu`` torch without them.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.wheels import make_wheel

CUDA_DEPS = ['nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux"', 'triton==3.5.0; platform_system == "Linux"']


def torch_wheels(gpu: Path, cpu: Path, version: str = "2.10.0", abi: str = "cp313") -> None:
    """``gpu``: PyPI's shape (torch + CUDA dependencies); ``cpu``: the CPU index's (torch+cpu)."""
    for machine in ("x86_64", "aarch64"):
        tag = f"{abi}-{abi}-manylinux_2_28_{machine}"
        make_wheel(gpu, "torch", version, tag, {"torch/__init__.py": "CUDA = True\n"}, requires=CUDA_DEPS)
        make_wheel(gpu, "nvidia-cublas-cu12", "12.8.4.1", f"py3-none-manylinux_2_27_{machine}", {"nvidia/cublas/__init__.py": ""})
        make_wheel(gpu, "triton", "3.5.0", f"{abi}-{abi}-manylinux_2_27_{machine}", {"triton/__init__.py": ""})
        make_wheel(cpu, "torch", f"{version}+cpu", tag, {"torch/__init__.py": "CUDA = False\n"})


def simple_index(wheels: Path, root: Path) -> Path:
    """Lay ``wheels`` out as a PEP 503 index under ``root``: simple/<project>/index.html."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        shutil.copy2(wheel, files / wheel.name)
        projects.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel.name)
    simple = root / "simple"
    simple.mkdir(exist_ok=True)
    (simple / "index.html").write_text("".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(projects)))
    for project, names in projects.items():
        (simple / project).mkdir(exist_ok=True)
        links = []
        for name in names:
            digest = hashlib.sha256((files / name).read_bytes()).hexdigest()
            links.append(f'<a href="../../files/{html.escape(name)}#sha256={digest}">{html.escape(name)}</a>')
        (simple / project / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return root


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port); yields the index URL (…/simple)."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
