from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.console import Progress
from tests.docker_support import lambda_standin  # noqa: F401 - a session fixture
from tests.emulation_support import emulated_arm64  # noqa: F401 - a session fixture
from tests.wheels import compile_extension, local_abi, make_wheel

# builds in tests use an emulation root when one is prepared, and prepare none
# themselves (the emulated_arm64 fixture does, once per machine)
os.environ.setdefault("HOIST_EMULATION", "use")
# the build cache (builder/cache.py) of this session, not the user's; removed when the session ends
if "HOIST_BUILD_CACHE" not in os.environ:
    os.environ["HOIST_BUILD_CACHE"] = tempfile.mkdtemp(prefix="hoist-test-build-cache-")
    atexit.register(shutil.rmtree, os.environ["HOIST_BUILD_CACHE"], True)

REPO = Path(__file__).resolve().parent.parent

PIPELINE = """\
version = 1
default_target = "local"
no_index = true
find_links = [{find_links}]

[targets.local]
kind = "local"
python = "{python}"

[targets.arm]
kind = "lambda"
runtime = "python3.13"
arch = "arm64"

[sets.efs]
requirements = "requirements/efs.in"

[sets.layer]
requirements = "requirements/layer.in"

[build]
output = "dist"
handler_dir = "handler"

[efs]
file_system_name = "test-fs"
mount_path = "/mnt/test"

[function]
name = "test-fn"

[api]
name = "test-api"
"""


LOCAL_TORCH = "torch-2.13.0+cpu-cp311-cp311-"


def local_torch_wheel() -> str | None:
    """Where pip's configuration offers the local CPU torch wheel, or None.

    This project's machines carry a torch==2.13.0+cpu wheel for CPython 3.11 on
    x86_64 and name its folder in pip's configuration (find-links); GitHub's
    hosted runners and most laptops do not. PyPI's x86_64 torch is a CUDA build
    of several GB, so the tests that need a torch that imports here use that one."""
    import platform

    from builder.lock import pip_config_find_links

    if platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11):
        return None
    for link in pip_config_find_links():
        folder = Path(link.removeprefix("file://"))
        if folder.is_dir():
            for wheel in folder.glob(LOCAL_TORCH + "*.whl"):
                return str(wheel)
    return None


# Markers a run skips, each with its reason, one "marker: reason" a line: what a CI that cannot run some
# tests leaves out (.github/workflows/ci.yml). They show as skipped with that reason, not as deselected.
SKIP_ENV = "HOIST_CI_SKIP"


def marker_skips(text: str, known: set[str]) -> dict[str, str]:
    """marker -> reason from ``text`` ("marker: reason" lines); a line that is not one, an unknown
    marker or a missing reason is a usage error naming the line."""
    skips = {}
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        marker, sep, reason = line.partition(":")
        marker, reason = marker.strip(), reason.strip()
        if not sep or not reason or marker not in known:
            raise pytest.UsageError(f"{SKIP_ENV}: {line!r} is not `marker: reason` with a registered marker ({', '.join(sorted(known))}); "
                                    "fix the line, one `marker: reason` a line")
        skips[marker] = reason
    return skips


def pytest_collection_modifyitems(config, items):
    """Tests marked `local_torch` are skipped, with the reason, where the wheel is absent;
    where it is there (this project's machines, so CI) they run. Tests that run
    aarch64 code (the `emulated_arm64` fixture) are marked `emulated`. Tests of a
    marker HOIST_CI_SKIP names are skipped with its reason."""
    for item in items:
        if "emulated_arm64" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.emulated)
    known = {re.match(r"\w+", line).group() for line in config.getini("markers")}  # "name(args): help" or "name: help"
    skips = marker_skips(os.environ.get(SKIP_ENV, ""), known)
    for item in items:
        for marker, reason in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason} ({SKIP_ENV})"))
                break
    marked = [item for item in items if item.get_closest_marker("local_torch")]
    if not marked or local_torch_wheel():
        return
    skip = pytest.mark.skip(reason="local_torch: pip's configuration offers no torch==2.13.0+cpu cp311 x86_64 wheel on this machine "
                                   "(this project's machines have one; PyPI's x86_64 torch is a CUDA build)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def moto_server():
    """moto's server on 127.0.0.1, the AWS endpoint of the tests that set AWS_ENDPOINT_URL to it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def stubbed(monkeypatch):
    """``stubbed(service)``: a client made by pipeline.aws (fake credentials, no endpoint) behind botocore's
    Stubber, and the Stubber; every response a test queues must have been asked for by its end."""
    from botocore.stub import Stubber

    from pipeline import aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    stubs: list[Stubber] = []

    def make(service: str, region: str = "eu-west-1"):
        client = aws.client(aws.session(region), service)
        stub = Stubber(client)
        stub.activate()
        stubs.append(stub)
        return client, stub

    yield make
    for stub in stubs:
        stub.deactivate()
        stub.assert_no_pending_responses()


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory):
    """A Docker daemon answering on the default socket: started here when none runs."""
    from tests.docker_support import start_daemon

    proc = start_daemon(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(60)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels these tests resolve against, built here: no index, no network."""
    house = tmp_path_factory.mktemp("wheelhouse")
    abi = local_abi()
    ext_name = "_fast" + __import__("sysconfig").get_config_var("EXT_SUFFIX")
    make_wheel(house, "nativepkg", "1.0", f"{abi}-{abi}-manylinux_2_17_x86_64", {
        "nativepkg/__init__.py": "from ._fast import hypot2\nfrom . import helpers\n",
        "nativepkg/helpers.py": "def double(x):\n    return 2 * x\n",
        f"nativepkg/{ext_name}": compile_extension(tmp_path_factory.mktemp("ext")),
        "nativepkg/include/nativepkg.h": "int nothing;\n",
        "nativepkg/tests/__init__.py": "",
        "nativepkg/tests/test_fast.py": "def test_it():\n    pass\n",
    }, requires=["purepkg"])
    make_wheel(house, "purepkg", "2.0", "py3-none-any", {
        "purepkg/__init__.py": "from purepkg.util.tests.fixtures import DATA\n",
        "purepkg/util/__init__.py": "",
        "purepkg/util/tests/__init__.py": "",
        "purepkg/util/tests/fixtures.py": "DATA = 7\n",
        "purepkg/core.pyi": "x: int\n",
    })
    make_wheel(house, "layerpkg", "0.5", "py3-none-any", {"layerpkg/__init__.py": "VALUE = 'layer'\n"})
    # imports fine where its undeclared dependency happens to be installed, nowhere else
    make_wheel(house, "brokenpkg", "1.0", "py3-none-any", {"brokenpkg/__init__.py": "import undeclared_dependency_xyz\n"})
    make_wheel(house, "armonly", "1.0", "cp313-cp313-manylinux_2_28_aarch64", {"armonly/__init__.py": ""})
    (house / "sdistonly-1.0.tar.gz").write_bytes(b"")  # an sdist and nothing else
    return house


@pytest.fixture
def project(tmp_path, wheelhouse) -> Path:
    """A pipeline project in tmp_path: local target, the wheelhouse, no index."""
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("nativepkg==1.0\n")
    (tmp_path / "requirements" / "layer.in").write_text("layerpkg\n")
    __import__("shutil").copytree(REPO / "handler", tmp_path / "handler", ignore=__import__("shutil").ignore_patterns("__pycache__"))  # app.py and hoist_lambda/
    write_pipeline(tmp_path, wheelhouse)
    return tmp_path


class Recorded(Progress):
    """A build's Progress that keeps what it was told: ``steps`` (the step lines) and ``lines`` (a tool's own output)."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.steps.append(text)

    def line(self, text: str) -> None:
        self.lines.append(text)


def without_model(path: Path) -> str:
    """The text of a pipeline.toml (the shipped one) without [model] dir: a project that has no model folder, where the
    tasks run without one (a dir that is written must be there)."""
    text = path.read_text()
    assert 'dir = "model/artifacts"\n' in text
    return text.replace('dir = "model/artifacts"\n', "")


def write_pipeline(root: Path, wheelhouse: Path, replace: dict[str, str] | None = None) -> Path:
    text = PIPELINE.format(find_links=f'"{wheelhouse}"', python="{}.{}".format(*sys.version_info[:2]))
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = root / "pipeline.toml"
    path.write_text(text)
    return path


def lock_and_build(project: Path, efs_requirements: str | None = None, target: str | None = None):
    """Write the EFS set's requirements (when given), then lock and build the project; its config."""
    from builder.build import build
    from builder.lock import lock
    from pipeline import config

    if efs_requirements is not None:
        (project / "requirements" / "efs.in").write_text(efs_requirements)
    cfg = config.load(project / "pipeline.toml")
    lock(cfg, target)
    build(cfg, target)
    return cfg


def rebuild_archives_only(cfg, opened: list[str] | None, drop_check: bool = False) -> tuple[str, str]:
    """What a rebuild that changes only the EFS set's archives leaves in dist/ (a hot set recorded at last, a new
    index format): the same tree, new archives and index, the manifest naming them. (content hash, index sha256)."""
    from dataclasses import replace as _replace

    from builder.archives import write_archives
    from pipeline.files import sha256_file
    from pipeline.records import ArchiveEntry, load_build_record, load_manifest, write_manifest

    record = load_build_record(cfg.build_json(cfg.target(None).target.name), cfg.root)
    efs = record.sets["efs"]
    index = write_archives(efs.tree, efs.tree.parent / "archives", opened=opened)
    index_sha = sha256_file(efs.tree.parent / "archives" / "index.json")
    made = _replace(load_manifest(efs.manifest), archives=tuple(ArchiveEntry(a["name"], a["sha256"], a["bytes"], a["raw"]) for a in index["archives"]), archive_index=index_sha)
    if drop_check:  # as a build with build.import_check = false records it: no check, so no hot set
        made = _replace(made, slim=_replace(made.slim, import_check=None))
    write_manifest(made, efs.manifest)
    return made.content_hash, index_sha
