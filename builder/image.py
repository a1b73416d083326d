"""The image shape's artifact: an OCI image FROM the Lambda base image, written by Hoist itself.

Why not ``docker build``: Debian's dockerd (the classic builder) stamps every
file it copies with the time of the build, so two builds of the same tree give
two layers of different digests, and every push sends torch again. Here each
layer is a tar written in Python: entries sorted, every time fixed
(``LAYER_EPOCH``), owners 0:0 without names, modes as the build normalised
them (builder/manifest.py). Equal inputs give byte-equal layers, so equal
diff_ids, and an equal image config.

Layers, lowest first (each holds one input, so a change to one changes one layer):

1. the base image's layers, as ``docker save`` gives them (uncompressed);
2. the ``efs`` set (torch and the other heavy packages) at /opt/hoist/efs;
3. the ``layer`` set at /opt/python, a layer's place in Lambda;
4. the model folder at /opt/hoist/model;
5. the handler folder at /var/task (LAMBDA_TASK_ROOT).

A handler-only change rewrites layer 5 and the config; the heavy set's layer,
and its digest, stay. The layout is written uncompressed (OCI's
``application/vnd.oci.image.layer.v1.tar``): ``docker push`` compresses what
it sends anyway, and a layer already in the registry is not sent again. The
layout also carries ``manifest.json`` in ``docker save``'s format (its index, records.DOCKER_ARCHIVE_INDEX), so
``docker load`` takes it (pipeline/docker.py).

A set's layer is kept from the previous build when the set's content hash
(its manifest) and this module's ``LAYER_FORMAT`` are unchanged: a
handler-only rebuild writes only the handler's few kilobytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline import docker
from pipeline.errors import BuildError
from pipeline.files import atomic_write_json
from pipeline.records import DOCKER_ARCHIVE_INDEX, ImageRecord
from pipeline.shapes import IMAGE_LIMIT_BYTES, IMAGE_PATHS

LAYER_EPOCH = 0  # every entry's mtime (SOURCE_DATE_EPOCH's idea): bytecode is unchecked-hash, nothing reads these times
LAYER_FORMAT = "1"  # bump when a change here changes the bytes of a layer: every layer is written anew
LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA = "application/vnd.oci.image.index.v1+json"
# AWS's base images for Python 3.12+ allow SnapStart as they are; any other image needs this label, or publishing the
# version fails (lambda-facts.md, SnapStart, container images). Set on every image: it costs nothing on AWS's own.
SNAPSTART_LABEL = "com.amazonaws.lambda.feature.snapstart"
SKIP_NAMES = {"__pycache__"}  # of the handler and model folders only: a set's tree is taken whole, its .pyc included
CHUNK = 1 << 20


@dataclass(frozen=True)
class Layer:
    name: str  # "base-0", ..., "efs", "layer", "model", "handler"
    diff_id: str  # sha256:<hex> of the tar (uncompressed, so also its blob digest here)
    size: int  # bytes of the tar
    key: str = ""  # what it was made from (a set's content hash, a folder's digest); "" for the base's

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "diff_id": self.diff_id, "size": self.size, "key": self.key}


@dataclass(frozen=True)
class BaseImage:
    ref: str  # as the user named it (build.base_image, or the runtime's tag)
    image_id: str  # sha256:<config digest> on this machine: what the build was FROM
    config: dict[str, Any]  # its image config (architecture, config.Env/Entrypoint/Cmd, rootfs.diff_ids)
    layers: tuple[Path, ...]  # its layer tars, lowest first


@dataclass(frozen=True)
class ImageBuild:
    layout: Path  # the OCI layout folder (oci-layout, index.json, blobs/, manifest.json)
    tag: str  # the local name docker load gives it
    config_digest: str  # sha256:... of the config: the image id `docker load` reports
    manifest_digest: str  # sha256:... of the layout's manifest (the registry's may differ: a push compresses)
    base: str  # the base image's reference and id
    layers: tuple[Layer, ...]  # lowest first
    bytes: int  # all layers, uncompressed: what Lambda's 10 GB limit counts
    written: tuple[str, ...]  # the layers this build wrote (the others were kept)

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)


# ---------------------------------------------------------------- layers


class _Digest(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``out``."""

    def __init__(self, out: IO[bytes]):
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.out.write(view)
        self.size += len(view)
        return len(view)


def _info(name: str, st: os.stat_result | None, kind: bytes, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode) if st else 0o755
    info.mtime = LAYER_EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    info.size = size
    return info


def _parents(dest: str) -> list[str]:
    parts = dest.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def entries(src: Path, dest: str, skip: set[str] | None = None) -> Iterator[tuple[str, Path | None]]:
    """(name in the image, path here) for ``src`` placed at ``dest``, sorted by name; folders above ``dest`` have no path."""
    skip = skip or set()
    for parent in _parents(dest)[:-1]:
        yield parent, None
    found: list[tuple[str, Path]] = [(dest.strip("/"), src)]
    for folder, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in skip]
        rel = Path(folder).relative_to(src)
        for name in dirs + [f for f in files if f not in skip]:
            found.append((f"{dest.strip('/')}/{(rel / name).as_posix()}".replace("/./", "/"), Path(folder, name)))
    yield from sorted(found)


def write_tar(items: Iterable[tuple[str, Path | None]], out: IO[bytes]) -> tuple[str, int]:
    """A reproducible tar of ``items`` into ``out``: (sha256:<hex>, bytes)."""
    digest = _Digest(out)
    with tarfile.open(fileobj=digest, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path in items:
            if path is None:
                tar.addfile(_info(name, None, tarfile.DIRTYPE))
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                tar.addfile(_info(name, st, tarfile.SYMTYPE, link=os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                tar.addfile(_info(name, st, tarfile.DIRTYPE))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    tar.addfile(_info(name, st, tarfile.REGTYPE, size=st.st_size), fh)
            else:
                raise BuildError(f"{path}: neither a file, a folder nor a symlink", where="the image's layers", fix="remove it from the folder")
    return f"sha256:{digest.hash.hexdigest()}", digest.size


def folder_key(folder: Path, skip: set[str]) -> str:
    """A digest of a folder's names, modes, link targets and bytes: its layer's key."""
    h = hashlib.sha256(LAYER_FORMAT.encode())
    for name, path in entries(folder, "x", skip):
        if path is None:
            continue
        st = path.lstat()
        h.update(f"{name}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    h.update(block)
        h.update(b"\n")
    return h.hexdigest()


def _blob(blobs: Path, digest: str) -> Path:
    return blobs / "sha256" / digest.split(":", 1)[1]


def _put_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob(blobs, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_bytes(data)
    return digest, len(data)


def layer_from(name: str, src: Path, dest: str, key: str, blobs: Path, kept: dict[str, dict[str, Any]], skip: set[str] | None = None) -> tuple[Layer, bool]:
    """The layer of ``src`` at ``dest``: the previous build's when its key matches and its blob is there, else written; (layer, written)."""
    full_key = hashlib.sha256(f"{LAYER_FORMAT}\0{dest}\0{key}".encode()).hexdigest()
    old = kept.get(name)
    if old and old.get("key") == full_key and _blob(blobs, old["diff_id"]).is_file():
        return Layer(name=name, diff_id=old["diff_id"], size=old["size"], key=full_key), False
    (blobs / "sha256").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=blobs / "sha256", prefix=".partial-", delete=False) as tmp:
        try:
            diff_id, size = write_tar(entries(src, dest, skip), tmp)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, _blob(blobs, diff_id))
    return Layer(name=name, diff_id=diff_id, size=size, key=full_key), True


# ---------------------------------------------------------------- the base


def base_image(ref: str, platform: str, workdir: Path) -> BaseImage:
    """The base image's config and layers, from ``docker save`` (pulled for ``platform`` when it is not here)."""
    if why := docker.daemon_problem():
        raise BuildError(why, where="build (image)", fix="start the Docker daemon: the image is built FROM the base image docker saves")
    if not docker.image_exists(ref):
        pulled = docker.pull(ref, platform)
        if pulled.returncode != 0:
            raise BuildError(f"cannot pull the base image {ref} for {platform}: {(pulled.stderr.strip().splitlines() or ['no output'])[-1]}",
                             where="build.base_image",
                             fix=f"docker pull --platform {platform} {ref} where a registry is reachable and docker save/load it here, "
                                 "or set base_image under [build] to an image that is here")
    image_id = docker.inspect(ref) or ""
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "base.tar"
    docker.save(ref, saved)
    out = workdir / "base"
    with tarfile.open(saved) as tar:
        tar.extractall(out, filter="data")
    saved.unlink()
    [doc] = json.loads((out / DOCKER_ARCHIVE_INDEX).read_text())
    config = json.loads((out / doc["Config"]).read_text())
    layers = tuple(out / name for name in doc["Layers"])
    return BaseImage(ref=ref, image_id=image_id, config=config, layers=layers)


def check_platform(base: BaseImage, platform: str) -> None:
    """The base image is of the target's CPU: an x86_64 base under an arm64 function would fail at its first start."""
    arch = base.config.get("architecture")
    want = platform.split("/")[1]
    if arch != want:
        raise BuildError(f"the base image {base.ref} is for {arch}, the target for {want}", where="build.base_image",
                         fix=f"use the {want} base image (docker pull --platform {platform} ...), or set the target's arch to match")


# ---------------------------------------------------------------- the image


def image_config(base: dict[str, Any], diff_ids: list[str], *, handler: str, env: dict[str, str], snapstart: bool) -> dict[str, Any]:
    """The new image's config: the base's, with Hoist's variables, the handler as CMD, and no times (reproducible)."""
    cfg = dict(base.get("config") or {})
    kept = [e for e in cfg.get("Env") or [] if e.split("=", 1)[0] not in env]
    cfg["Env"] = kept + [f"{k}={v}" for k, v in sorted(env.items())]
    cfg["Cmd"] = [handler]
    cfg["WorkingDir"] = IMAGE_PATHS["handler"]
    labels = dict(cfg.get("Labels") or {})
    if snapstart:
        labels[SNAPSTART_LABEL] = "Allow"
    cfg["Labels"] = labels or None
    doc: dict[str, Any] = {"architecture": base["architecture"], "os": base.get("os", "linux"), "config": cfg,
                           "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
    if base.get("variant"):
        doc["variant"] = base["variant"]
    return doc


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_layout(layout: Path, config: dict[str, Any], layers: list[Layer], tag: str) -> tuple[str, str]:
    """index.json, the manifest and the config into ``layout`` (the layer blobs are there already); (config digest, manifest digest)."""
    blobs = layout / "blobs"
    config_digest, config_size = _put_blob(blobs, _json_bytes(config))
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA,
                "config": {"mediaType": CONFIG_MEDIA, "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": LAYER_MEDIA, "digest": layer.diff_id, "size": layer.size} for layer in layers]}
    manifest_digest, manifest_size = _put_blob(blobs, _json_bytes(manifest))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA,
             "manifests": [{"mediaType": MANIFEST_MEDIA, "digest": manifest_digest, "size": manifest_size,
                            "annotations": {"io.containerd.image.name": tag, "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[-1]}}]}
    (layout / "index.json").write_bytes(_json_bytes(index))
    # docker save's own format beside it: what `docker load` reads on a daemon without the containerd image store
    (layout / DOCKER_ARCHIVE_INDEX).write_bytes(_json_bytes([{"Config": f"blobs/sha256/{config_digest[7:]}", "RepoTags": [tag],
                                                         "Layers": [f"blobs/sha256/{layer.diff_id[7:]}" for layer in layers]}]))
    return config_digest, manifest_digest


def _prune(layout: Path, keep: set[str]) -> None:
    """Blobs no longer named (an older handler's layer, older configs) go: the layout holds one image."""
    for blob in (layout / "blobs" / "sha256").iterdir():
        if f"sha256:{blob.name}" not in keep:
            blob.unlink()


def build_image(*, layout: Path, base: BaseImage, platform: str, sets: dict[str, tuple[Path, str]], handler_dir: Path, model_dir: Path | None,
                handler: str, env: dict[str, str], snapstart: bool, tag_prefix: str) -> ImageBuild:
    """Write the image of ``sets`` (name -> (tree, content hash)), the handler folder and the model folder into ``layout``.

    ``env``: Hoist's variables for the image (the function's own are set by deploy). The tag is ``tag_prefix:<config digest's first 12>``,
    so equal images get equal tags and an immutable repository never sees one tag twice for two images."""
    check_platform(base, platform)
    layout.mkdir(parents=True, exist_ok=True)
    blobs = layout / "blobs"
    record = layout / "hoist-layers.json"
    kept = {layer["name"]: layer for layer in json.loads(record.read_text())["layers"]} if record.is_file() else {}
    layers: list[Layer] = []
    written: list[str] = []
    base_ids = list(base.config["rootfs"]["diff_ids"])
    for i, (path, diff_id) in enumerate(zip(base.layers, base_ids, strict=True)):
        dest = _blob(blobs, diff_id)
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        layers.append(Layer(name=f"base-{i}", diff_id=diff_id, size=dest.stat().st_size))
    order = [("efs", IMAGE_PATHS["efs"]), ("layer", IMAGE_PATHS["layer"])]  # heaviest and least often changed first
    for name, dest_path in order:
        if name in sets:
            tree, content_hash = sets[name]
            layer, new = layer_from(name, tree, dest_path, content_hash, blobs, kept)
            layers.append(layer)
            written += [name] if new else []
    folders = [("model", model_dir, IMAGE_PATHS["model"])] if model_dir else []
    folders.append(("handler", handler_dir, IMAGE_PATHS["handler"]))
    for name, folder, dest_path in folders:
        assert folder is not None
        layer, new = layer_from(name, folder, dest_path, folder_key(folder, SKIP_NAMES), blobs, kept, skip=SKIP_NAMES)
        layers.append(layer)
        written += [name] if new else []
    config = image_config(base.config, [layer.diff_id for layer in layers], handler=handler, env=env, snapstart=snapstart)
    config_digest = "sha256:" + hashlib.sha256(_json_bytes(config)).hexdigest()
    tag = f"{tag_prefix}:{config_digest[7:19]}"
    config_digest, manifest_digest = write_layout(layout, config, layers, tag)
    _prune(layout, {layer.diff_id for layer in layers} | {config_digest, manifest_digest})
    total = sum(layer.size for layer in layers)
    atomic_write_json(record, {"format": LAYER_FORMAT, "layers": [layer.as_json() for layer in layers]})
    if total > IMAGE_LIMIT_BYTES:
        raise BuildError(f"the image is {total:,} bytes unpacked, over Lambda's 10 GB container image limit ({IMAGE_LIMIT_BYTES:,})",
                         where=str(layout), fix="slim the heavy set (docs/build.md, Slimming), or move the model to S3 (HOIST_MODEL_S3) out of the image")
    return ImageBuild(layout=layout, tag=tag, config_digest=config_digest, manifest_digest=manifest_digest, base=f"{base.ref}@{base.image_id}",
                      layers=tuple(layers), bytes=total, written=tuple(written))


# ---------------------------------------------------------------- the build's step


def base_ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not pinned well enough to build FROM: a registry's image needs its digest besides its tag
    (the tag moves with every patch release of the runtime). A name without a registry is an image of this machine
    (a stand-in, loaded or imported here): it is pinned by the id the build records."""
    first = ref.split("/", 1)[0]
    from_registry = "/" in ref and ("." in first or ":" in first or first == "localhost")
    if from_registry and "@sha256:" not in ref:
        return f"the base image {ref} is named by its tag only; a tag moves with every patch of the runtime"
    return None


def image_env(model: bool) -> dict[str, str]:
    """Hoist's variables in the image: the heavy set's tree (on local disk, not hydrated: no archives there) and the model."""
    env = {"HOIST_EFS_TREE": IMAGE_PATHS["efs"], "HOIST_HYDRATE": "0"}
    if model:
        env["HOIST_MODEL_DIR"] = IMAGE_PATHS["model"]
    return env


def build_for(*, base_ref: str, platform: str, target_dir: Path, sets: dict[str, tuple[Path, str]], handler_dir: Path, model_dir: Path | None,
              handler: str, snapstart: bool, repository: str, on_step=None) -> ImageBuild:
    """builder/build.py's image step: the base image (saved once per id), then the layout under ``target_dir``/image."""
    if problem := base_ref_problem(base_ref):
        raise BuildError(problem, where="build.base_image",
                         fix=f'set base_image = "{base_ref}@sha256:<digest>" under [build] (docker buildx imagetools inspect {base_ref} prints the digest)')
    say = on_step or (lambda _line: None)
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".image-base-", dir=target_dir) as work:
        say(f"saving the base image {base_ref} ({platform})")
        base = base_image(base_ref, platform, Path(work))
        say(f"writing the image's layers ({', '.join(sorted(sets))}, {'model, ' if model_dir else ''}handler)")
        return build_image(layout=target_dir / "image", base=base, platform=platform, sets=sets, handler_dir=handler_dir, model_dir=model_dir,
                           handler=handler, env=image_env(model_dir is not None), snapstart=snapstart, tag_prefix=repository)


def image_record(made: ImageBuild, platform: str) -> ImageRecord:
    return ImageRecord(layout=made.layout, tag=made.tag, config_digest=made.config_digest, manifest_digest=made.manifest_digest, base=made.base,
                       platform=platform, bytes=made.bytes, layers=tuple((x.name, x.diff_id, x.size) for x in made.layers), written=made.written)
