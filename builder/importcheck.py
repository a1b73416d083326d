"""After slimming, import every top-level module of a set in the target's runtime.

The runtime is, in this order: a local CPython of the target's version when this
machine has the target's CPU (native); the Lambda base image when it is here
(docker); the Debian stand-in image under QEMU (emulated, pipeline/emulation.py).
A module that fails after slimming gets its package's removed files back; when
it then imports, slimming broke it, and the rule responsible is found by
removing each rule's files again in turn. The result goes into the set's
manifest ("import_check"); when no runtime can run here the build says the
slimming was not import-verified. builder/build.py compiles the bytecode
before the check, so the check loads the .pyc that Lambda loads (under QEMU,
compiling every module from source had been most of its time) and the files
it puts back are compiled after it.

Each import run is kept in the build cache with what it depended on (``_runs``,
``signature``; docs/design.md, 3.15): importlib.metadata's searches as queries
whose answer the signature keeps, not as the listings they make; and a run is
reused for a set with modules added, which are then imported in a run of
their own (why that gives what one run gives, and where it may not: ``_runs``).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pipeline import docker, emulation, proc
from pipeline.config import keep_line
from pipeline.console import counted
from pipeline.dists import owners, top_level_modules
from pipeline.errors import InterpreterNotFound
from pipeline.files import Digests
from pipeline.interpreters import find_python
from pipeline.records import MANIFEST_NAME, RecordError, SlimRecord, load_manifest
from pipeline.targets import Target

from . import cache
from . import manifest as mf
from . import slim as slim_mod

# not meant to be imported: setuptools' import hook and a console script module
SKIP_MODULES = {"_distutils_hack", "isympy", "distutils-precedence"}
TIMEOUT_S = 3600  # the demo's torch under QEMU on a busy machine takes minutes
MARK = "HOIST_IMPORTS "
UNOWNED = "(not in any RECORD)"  # builder/slim.py's name for files no RECORD lists
# the build key's import check of a set whose user opted out (build.import_check = false, --no-import-check)
OPTED_OUT = "opted out"
# what opting out costs, in the figures of the demo (docs/cold-start.md)
OPT_OUT_SLIM_COST = "slimming is then not import-verified (an import it breaks shows on Lambda, not here)"
OPT_OUT_COST = (OPT_OUT_SLIM_COST + ", and the efs tree has no hot set: "
                "its archives hold every file and each cold start reads and keeps them all in memory (the demo: 54.8 MB of archives, "
                "160 MB held for the environment's life and 232 MB at peak; 4.21 s against 2.31 s with its hot set)")


def opted_out_why(how: str) -> str:
    """A set's check's ``why`` when the user opted out, naming how (builder/build.py, ``_check_enabled``)."""
    return f"{OPTED_OUT} ({how})"


def ep_groups(text: str) -> set[str] | None:
    """The groups an entry_points.txt defines entry points in, read as importlib.metadata reads it from 3.10 on
    (``Sectioned.section_pairs``, ``Pair.parse``); None when that read fails (a line without "="). Defined once:
    the import script below carries this function's own source."""
    groups, section = set(), None
    for line in filter(lambda line: line and not line.startswith("#"), map(str.strip, text.splitlines())):
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section is not None:
            if "=" not in line:
                return None
            groups.add(section)
    return groups


# argv: the paths (the checked tree first), the modules, the hot modules, and whether to
# record pages. The hot modules are imported first, with an audit hook noting every file
# of the tree they open (the hot set). With pages, the tree's libraries are dropped from
# the page cache before, and the pages of them mapped after are read from /proc/self/pagemap
# (present or swapped; readable without privileges): what the handler reads ahead. pagemap
# is first tried on pages of known state: under QEMU's user-mode emulation it describes the
# guest's memory only when the guest's addresses are the host's (guest_base 0); if not, or
# if a library cannot be dropped from the cache, no pages are recorded.
SCRIPT = f"""\
from __future__ import annotations  # ep_groups's annotations on CPython 3.9
import importlib, json, os, struct, sys
paths = [os.path.abspath(p) for p in sys.argv[1].split(":")]
modules, hot, pages = json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "1"
sys.path[1:1] = paths
sys.dont_write_bytecode = True
root, opened, recording = paths[0] + os.sep, set(), [bool(hot)]
roots, deps, tracing = [p + os.sep for p in paths], {{"open": set(), "names": set(), "lists": set(), "stats": set()}}, [False]
def where(path):
    try:
        path = os.fspath(path)
    except TypeError:
        return None
    if not isinstance(path, str):
        return None
    path = os.path.normpath(os.path.abspath(path))
    for i, r in enumerate(roots):
        if path.startswith(r) or path + os.sep == r:
            return f"{{i}}:{{path[len(r):]}}"
    return None
def note(event, args):
    if recording[0] and event == "open" and args and isinstance(args[0], str):
        path = os.path.normpath(args[0])
        if path.startswith(root):
            opened.add(path[len(root):])
    if not tracing[0]:
        return
    if event == "import":
        deps["names"].add(args[0])
    elif event == "open" and args and (at := where(args[0])):
        deps["open"].add(at)
    elif event in ("os.listdir", "os.scandir") and (caller := sys._getframe(1).f_code).co_name != "_fill_cache" and (at := where(args[0] if args and args[0] is not None else ".")):
        if caller is meta["children"] and at in meta["at"] and sys._getframe(2).f_code in meta["callers"]:
            return  # importlib.metadata's own listing of a path it was queried on: the queries stand for it
        deps["lists"].add(at)
sys.addaudithook(note)
# importlib.metadata's queries: per path of the checked paths searched, the kind (a distribution's name,
# every distribution for entry_points(), or every distribution); the script's host side keeps of a path's
# listing only what the kind can see (signature()). Hooked when the module is imported, not before.
meta = {{"children": None, "callers": (), "at": set(), "queries": set(), "watched": [], "outside": set(), "rules": set()}}
def patch_metadata(md):
    try:
        finder, fast, real_ep = md.MetadataPathFinder, md.FastPath, md.entry_points
        real_search = finder.__dict__["_search_paths"].__func__
        children = fast.children.__code__
        callers = {{fast.search.__code__}} | ({{md.Lookup.__init__.__code__}} if hasattr(md, "Lookup") else set())
        stdlib = {{real_ep.__code__.co_filename, getattr(pf := importlib.machinery.PathFinder.find_distributions, "__func__", pf).__code__.co_filename}}
        if hasattr(md, "unique_everseen"):
            stdlib.add(md.unique_everseen.__code__.co_filename)
    except (AttributeError, KeyError, TypeError):
        return  # not the importlib.metadata this script knows: its listings stay raw listings
    base = getattr(md, "EntryPoints", None)
    watched = None
    if sys.version_info >= (3, 12) and isinstance(base, type) and issubclass(base, tuple):
        # entry_points() without a group, then select(group=G) on its result (fsspec's): it saw what
        # entry_points(group=G) sees (3.12+: the same unique distributions, then the same selection).
        # The result is watched: select(group=...) only narrows the query to those groups; any other use
        # of it (iterated, indexed, counted, compared, names, groups) or none keeps the whole query
        class Watch:
            def __init__(self):
                self.groups, self.other = set(), False
            def modes(self):
                return ["ep"] if self.other or not self.groups else [f"ep:{{g}}" for g in sorted(self.groups)]
        class Watched(base):
            def select(self, **params):
                watch = self.__dict__["hoist_watch"]
                if set(params) == {{"group"}} and isinstance(params["group"], str):
                    watch.groups.add(params["group"])
                else:
                    watch.other = True
                return base(tuple.__iter__(self)).select(**params)
        def used(name, real):
            def method(self, *args, **kwargs):
                self.__dict__["hoist_watch"].other = True
                return real(self, *args, **kwargs)
            method.__name__ = name
            return method
        for name in ("__iter__", "__len__", "__getitem__", "__contains__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__",
                     "__repr__", "__str__", "__format__", "__reversed__", "__add__", "__mul__", "__rmul__", "__reduce__", "__reduce_ex__",
                     "__getnewargs__", "__getstate__", "__sizeof__", "count", "index"):
            if hasattr(base, name):
                setattr(Watched, name, used(name, getattr(base, name)))
        for name in ("names", "groups"):
            if isinstance(prop := getattr(base, name, None), property):
                setattr(Watched, name, property(used(name, prop.fget)))
        Watched.__name__, Watched.__qualname__, Watched.__module__ = base.__name__, base.__qualname__, base.__module__
        watched = (Watch, Watched)
    def entry_points(*args, **kwargs):
        watch = watched[0]() if watched is not None and not args and not kwargs else None
        result = real_ep(*args, **kwargs)
        if watch is None:
            return result
        if type(result) is not base:
            watch.other = True
            return result
        found = watched[1](tuple.__iter__(result))
        found.__dict__["hoist_watch"] = watch
        return found
    def from_entry_points(frame):  # entry_points()'s call, when only the standard library is between it and this search
        while frame is not None:
            if frame.f_code is entry_points.__code__:
                return frame
            if frame.f_code.co_filename not in stdlib:
                return None
            frame = frame.f_back
        return None
    def query(name):
        if name:
            return f"name:{{name}}"
        called = from_entry_points(sys._getframe(2))
        if called is None:
            return "all"
        if called.f_locals.get("watch") is not None:
            return called.f_locals["watch"]  # modes() once its result's use is known
        group = called.f_locals["kwargs"].get("group") if sys.version_info >= (3, 10) else None  # 3.9's takes none
        return f"ep:{{group}}" if isinstance(group, str) else "ep"
    def search(cls, name, paths):
        paths = list(paths)
        if tracing[0]:
            mode = query(name)
            for path in paths:
                if (at := where(path)) is not None:
                    meta["at"].add(at)
                    if isinstance(mode, str):
                        meta["queries"].add(json.dumps([mode, at]))
                    else:
                        meta["watched"].append((mode, at))
                elif (not isinstance(mode, str) or mode.partition(":")[0] == "ep") and isinstance(path, (str, os.PathLike)):
                    meta["outside"].add(os.fsdecode(path))
        return real_search(cls, name, paths)
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(entry_points, attr, getattr(real_ep, attr))
    finder._search_paths = classmethod(search)
    md.entry_points = entry_points
    meta.update(children=children, callers=callers, rules={{"3.9" if sys.version_info < (3, 10) else "3.10"}})
class MetadataHook:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "importlib.metadata":
            return None
        for finder in sys.meta_path:
            if finder is not MetadataHook and hasattr(finder, "find_spec") and (spec := finder.find_spec(fullname, path, target)) is not None:
                break
        else:
            return None
        real = getattr(spec.loader, "exec_module", None)
        if real is None or isinstance(spec.loader, type):  # a loader shared by every module (frozen): left alone
            return spec
        def exec_module(module):
            real(module)
            if MetadataHook in sys.meta_path:
                sys.meta_path.remove(MetadataHook)
            patch_metadata(module)
        spec.loader.exec_module = exec_module
        return spec
def probing(real):
    def probe(path, *args, **kwargs):
        if tracing[0] and (at := where(path)):
            deps["stats"].add(at)
        return real(path, *args, **kwargs)
    return probe
os.stat, os.lstat = probing(os.stat), probing(os.lstat)
import importlib.machinery
def finding(real):
    def find_spec(cls, fullname, path=None, target=None):
        if tracing[0]:
            deps["names"].add(fullname)
        return real(cls, fullname, path, target)
    return classmethod(find_spec)
# importlib.util.find_spec (an optional dependency looked up, not imported) raises no "import" event
importlib.machinery.PathFinder.find_spec = finding(importlib.machinery.PathFinder.find_spec.__func__)
if "importlib.metadata" in sys.modules:
    patch_metadata(sys.modules["importlib.metadata"])
else:
    sys.meta_path.insert(0, MetadataHook)
def is_library(name):
    return name.endswith(".so") or ".so." in name
def pagemap_tells():
    import ctypes, mmap
    size = os.sysconf("SC_PAGE_SIZE")
    area = mmap.mmap(-1, 8 * size)
    for i in (0, 2, 5):
        area[i * size] = 1
    at = ctypes.addressof(ctypes.c_char.from_buffer(area))
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(at // size * 8)
        entries = pagemap.read(64)
    return [struct.unpack_from("<Q", entries, i * 8)[0] >> 63 for i in range(8)] == [1, 0, 1, 0, 0, 1, 0, 0]
def drop_libraries():
    for folder, _, names in os.walk(paths[0]):
        for name in names:
            path = os.path.join(folder, name)
            if is_library(name) and not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
if pages:
    try:
        pages = pagemap_tells()
        if pages:
            drop_libraries()
    except (OSError, ValueError, AttributeError):
        pages = False
def mapped():
    size, found = os.sysconf("SC_PAGE_SIZE"), {{}}
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[5].strip().startswith(root) or not is_library(fields[5].strip()):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            offset, n = int(fields[2], 16), (end - start) // size
            pagemap.seek(start // size * 8)
            entries = pagemap.read(n * 8)
            spans = found.setdefault(fields[5].strip()[len(root):], [])
            for i in range(len(entries) // 8):
                if struct.unpack_from("<Q", entries, i * 8)[0] >> 62:
                    at = offset + i * size
                    if spans and spans[-1][0] + spans[-1][1] == at:
                        spans[-1][1] += size
                    else:
                        spans.append([at, size])
    merged = {{}}
    for rel, spans in found.items():  # a library mapped more than once (its segments) overlaps itself
        for start, length in sorted(spans):
            out = merged.setdefault(rel, [])
            if out and start <= out[-1][0] + out[-1][1]:
                out[-1][1] = max(out[-1][1], start + length - out[-1][0])
            else:
                out.append([start, length])
    return dict(sorted(merged.items()))  # by name, not by where it was mapped: as the union of two runs' (_spans_union)
failed, touched = {{}}, None
tracing[0] = True
for name in hot + [m for m in modules if m not in hot]:
    if name not in hot and recording[0]:
        recording[0] = False
        if pages:
            try:
                touched = mapped()
            except OSError:
                touched = None
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{{type(exc).__name__}}: {{exc}}"
if recording[0] and pages:
    try:
        touched = mapped()
    except OSError:
        touched = None
tracing[0] = False
with open("/proc/self/maps") as maps:
    deps["maps"] = sorted({{at for line in maps if len(fields := line.split(None, 5)) == 6 and (at := where(fields[5].strip()))}})
{inspect.getsource(ep_groups)}def outside_entry_points(root):  # [name, group] of the distributions with entry points in a path outside the checked ones; "?": unknown
    try:
        kids = os.listdir(root or ".")
    except OSError:
        return {{json.dumps(["?", "?"])}} if os.path.exists(root or ".") else set()  # a zip file, say
    found = set()
    for kid in kids:
        stem, ext = os.path.splitext(kid)
        if not (kid.lower().endswith((".dist-info", ".egg-info")) or kid.lower() == "egg-info"):
            continue
        name = stem.partition("-")[0] if ext in (".dist-info", ".egg-info") else ""
        name = re.sub(r"[-_.]+", "-", name).lower().replace("-", "_") if name else "?"
        try:
            with open(os.path.join(root or ".", kid, "entry_points.txt"), encoding="utf-8") as f:
                groups = ep_groups(f.read())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            continue
        except (OSError, ValueError):
            groups = None
        found.update(json.dumps([name, group]) for group in (groups if groups is not None else ["?"]))
    return found
meta["queries"].update(json.dumps([mode, at]) for watch, at in meta["watched"] for mode in watch.modes())
if meta["queries"]:
    import re
    deps["metadata"], deps["metadata_rules"] = meta["queries"], meta["rules"]
    deps["metadata_outside"] = set().union(*map(outside_entry_points, meta["outside"]))
print({MARK!r} + json.dumps({{"failed": failed, "opened": sorted(opened) if hot else None, "touched": touched,
                              "deps": {{k: sorted(v) for k, v in deps.items()}}}}), flush=True)
"""


@dataclass(frozen=True)
class Noted:
    """What one run of the import script reported."""

    failed: dict[str, str]  # module -> error
    opened: list[str] | None  # files of the checked tree the hot modules opened; None: no hot modules
    touched: dict[str, list[list[int]]] | None  # library -> [offset, length] of its pages mapped after them; None: not recorded
    # what the imports depended on ("<path index>:<relative path>"): files opened and libraries mapped, module names
    # whose import was tried (found or not), folders listed other than by the import system, paths stat'ed
    deps: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Runner:
    """Runs the import script for the target: a command prefix, and how paths are seen inside."""

    kind: str  # native | docker | emulated
    describe: str
    python: str | None = None  # native: the interpreter
    image: str | None = None  # docker/emulated: the image
    docker_platform: str | None = None  # None: the image's own (a stand-in imported without a platform)
    entry: str | None = None  # the interpreter inside the image or root
    root: Path | None = None  # emulated without Docker: the root to chroot into
    # what the check's result depends on of the runtime (interpreter, image id, root and emulator):
    # part of the build key, so a different runtime rebuilds what the check decided (builder/build.py)
    identity: str = ""
    qemu: dict[str, str] = field(default_factory=dict)  # QEMU_CPU for a foreign CPU (pipeline/emulation.py)

    def imports(self, paths: list[Path], modules: list[str]) -> dict[str, str]:
        """module -> error, for those that failed. Raises RuntimeError when the interpreter itself died."""
        return self.imports_noting(paths, modules, []).failed

    def imports_noting(self, paths: list[Path], modules: list[str], hot: list[str]) -> Noted:
        """As ``imports``, the ``hot`` modules first; and what they opened of ``paths[0]`` and mapped of its libraries."""
        args = [":".join(map(str, paths)), json.dumps(modules), json.dumps(hot), "1" if hot else "0"]
        with tempfile.TemporaryDirectory(prefix="hoist-imports-") as home:
            if self.kind == "native":
                assert self.python
                cmd = [self.python, "-s", "-B", "-c", SCRIPT, *args]
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}
                out = proc.capture(cmd, env=env, clean_env=True, timeout=TIMEOUT_S)
            elif self.image is None:  # emulated, in a chroot of the root
                assert self.root and self.entry
                inside = [f"/hoist/p{i}" for i in range(len(paths))]
                cmd = emulation.chroot_command(self.root, list(zip(paths, inside, strict=True)), [self.entry, "-s", "-B", "-c", SCRIPT, ":".join(inside), *args[1:]])
                env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", **self.qemu}
                out = proc.capture(cmd, env=env, clean_env=True, timeout=TIMEOUT_S)
            else:
                assert self.image and self.entry
                name = docker.container_name("hoist-imports")
                inside = [f"/hoist/p{i}" for i in range(len(paths))]
                cmd = docker.run_command(self.image, ["-s", "-B", "-c", SCRIPT, ":".join(inside), *args[1:]], name=name, network="none",
                                         platform=self.docker_platform, env={"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", **self.qemu}, entrypoint=self.entry,
                                         mounts=[docker.Mount(host, mount) for host, mount in zip(paths, inside, strict=True)])
                try:
                    out = proc.capture(cmd, timeout=TIMEOUT_S)
                finally:
                    docker.remove(name)
        for line in reversed(out.stdout.splitlines()):
            if line.startswith(MARK):
                doc = json.loads(line[len(MARK):])
                return Noted(doc["failed"], doc["opened"], doc["touched"], doc.get("deps") or {})
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"the interpreter exited with code {out.returncode} before reporting:\n{tail}")


def runner_for(target: Target, on_line: Callable[[str], None] | None = None, base_image: str | None = None,
               cache: Path | None = None) -> tuple[Runner | None, str]:
    """The closest runtime for ``target`` that runs here, or None and why none does (``base_image``: build.base_image, else the runtime's).

    With HOIST_EMULATION=prepare (the default) what the emulated runtime needs is prepared when this
    process can: the apt packages (as root, said through ``on_line``) and the Debian root (minutes, once).
    ``cache``: the interpreters' cache file (pipeline/interpreters.py), so that a no-op build probes none.
    """
    whys = []
    if target.machine == platform.machine():
        try:
            python = find_python(target.python, cache=cache)
            return Runner("native", f"CPython {python.version} on this machine", python=python.path, identity=f"native|CPython {python.version}|{python.path}"), ""
        except InterpreterNotFound as exc:
            whys.append(f"native: no CPython {target.python} here ({exc.what})")
    else:
        whys.append(f"native: the target runs on {target.machine}, this machine is {platform.machine()}")
    mode = os.environ.get("HOIST_EMULATION", "prepare")
    if mode == "prepare":
        try:
            emulation.install_missing(target.machine, on_line)
        except emulation.EmulationUnavailable as exc:
            whys.append(f"emulated: {exc.what} (fix: {exc.fix})")
    problem = docker.daemon_problem() or emulation.binfmt_problem(target.machine)
    if target.kind == "lambda" and not problem:
        image = base_image or target.base_image()
        image_id = docker.inspect(image)
        if image_id is not None:
            how = f" on {target.machine}" + (" (QEMU)" if target.machine != platform.machine() else "")
            return Runner("docker", f"the Lambda image {image}{how}", image=image, docker_platform=target.docker_platform, entry=f"/var/lang/bin/python{target.python}",
                          identity=f"docker|{image}{how}|{image_id}|{emulation.emulator_identity(target.machine)}", qemu=emulation.qemu_env(target.machine)), ""
        whys.append(f"docker: the Lambda image {image} is not here")
    elif problem:
        whys.append(f"docker: {problem}")
    if mode == "off":
        whys.append("emulated: HOIST_EMULATION=off")
        return None, "; ".join(whys)
    prepared = target.python in emulation.DEBIAN_PYTHON and (emulation.root_path(target.python, target.machine) / emulation.COMPLETE).is_file()
    if mode == "use" and not prepared:
        whys.append(f"emulated: no prepared root for CPython {target.python} on {target.machine} (HOIST_EMULATION=use prepares none; `invoke validate` prepares it)")
        return None, "; ".join(whys)
    try:
        em = emulation.emulated_python(target.python, target.machine, on_line)
    except emulation.EmulationUnavailable as exc:
        whys.append(f"emulated: {exc.what} (fix: {exc.fix})")
        return None, "; ".join(whys)
    how = f"QEMU {emulation.qemu_env(em.machine)['QEMU_CPU']}" if emulation.qemu_env(em.machine) else "QEMU" if em.machine != platform.machine() else "native CPU"
    describe = f"Debian {em.suite}'s CPython {em.python} on {em.machine} ({how}, {'Docker' if em.image else 'chroot'})"
    # the description is in the manifest: a check in Docker is not reused as one in a chroot
    return Runner("emulated", describe, image=em.image, docker_platform=emulation.run_platform(em.image, target.machine) if em.image else None,
                  entry=f"/var/lang/bin/python{target.python}", root=em.root,
                  identity=f"emulated|{describe}|{emulation.root_identity(em.root)}|{emulation.emulator_identity(target.machine)}", qemu=emulation.qemu_env(target.machine)), ""


class _State:
    """The files an import check sees: per path (the checked tree first, then the sets before it), relative path -> sha256."""

    def __init__(self, files: list[dict[str, str]], roots: list[Path] | None = None):
        self.files = files
        self.roots = roots  # where the files are, to read one (an entry_points.txt); None: none is read
        self.children: list[dict[str, set[str]]] = []  # folder -> the names in it
        for listed in files:
            kids: dict[str, set[str]] = {"": set()}
            for rel in listed:
                parts = rel.split("/")
                for i in range(len(parts)):
                    kids.setdefault("/".join(parts[:i]), set()).add(parts[i])
            self.children.append(kids)

    @staticmethod
    def _at(at: str) -> tuple[int, str]:
        index, _, rel = at.partition(":")
        return int(index), rel

    def what(self, at: str) -> str | None:
        """A file's sha256, "dir" for a folder, None when nothing is there."""
        i, rel = self._at(at)
        if i >= len(self.files):
            return None
        return self.files[i].get(rel) or ("dir" if rel in self.children[i] else None)

    def read(self, at: str) -> bytes | None:
        """A file's content; None when it is not there or cannot be read."""
        i, rel = self._at(at)
        if self.roots is None or i >= len(self.roots) or rel not in self.files[i]:
            return None
        try:
            return (self.roots[i] / rel).read_bytes()
        except OSError:
            return None

    def listing(self, at: str) -> list[str]:
        i, rel = self._at(at)
        return sorted(self.children[i].get(rel, ())) if i < len(self.children) else []

    def candidates(self, name: str) -> list[str]:
        """What could answer ``import name`` in any path: the names in its folder that are it or start with it and a dot."""
        parts = name.split(".")
        folder, tail = "/".join(parts[:-1]), parts[-1]
        return sorted(f"{i}:{folder + '/' if folder else ''}{entry}" for i, kids in enumerate(self.children)
                      for entry in kids.get(folder, ()) if entry == tail or entry.startswith(tail + "."))


def path_name(folder: Path) -> str:
    """A checked path's name in messages: its set's ("efs", "layer"; a set being built is in ``.<set>.partial-*``)."""
    name = folder.parent.name
    return name[1:].split(".partial-")[0] if name.startswith(".") and ".partial-" in name else name


def _state(paths: list[Path], digests: Digests | None = None) -> _State:
    files = []
    for i, folder in enumerate(paths):
        manifest = folder.parent / MANIFEST_NAME  # a set built before: its manifest lists its files
        listed: dict[str, str] | None = None
        if i and manifest.is_file():
            with contextlib.suppress(OSError, RecordError):
                listed = {e.path: e.sha256 for e in load_manifest(manifest).files}
        files.append(listed if listed is not None else {e.path: e.sha256 for e in mf.scan(folder, digests)})
    return _State(files, paths)


def signature(deps: dict[str, list[str]], state: _State) -> dict[str, Any]:
    """What an import run's result depends on, as ``state`` has it: the same signature, the same result."""
    sig: dict[str, Any] = {}
    for at in deps.get("open", []) + deps.get("maps", []) + deps.get("stats", []):
        sig[f"f {at}"] = state.what(at)
    for name in deps.get("names", []):  # found or not: a new package can turn a failed optional import into a success
        sig[f"n {name}"] = state.candidates(name)
    for at in deps.get("lists", []):
        sig[f"l {at}"] = state.listing(at)
    for at in deps.get("maps", []):  # the loader looks for a library's needed libraries beside it
        folder = at.rpartition("/")[0] if "/" in at else at.partition(":")[0] + ":"
        sig[f"L {folder}"] = [n for n in state.listing(folder) if ".so" in n]
    sig.update(_metadata_signature(deps, state))
    return sig


def signature_changes(old: dict[str, Any], new: dict[str, Any], names: list[str], most: int = 3) -> str:
    """What differs between a run's stored signature and the one the trees give now, in words: the first ``most``
    items ("requests now found", "numpy/__init__.py changed"...). ``names``: each path's name (the set's, "layer")."""
    def where(at: str) -> str:
        index, _, rel = at.partition(":")
        if not (index.isdigit() and int(index) < len(names)):
            return at
        return f"{names[int(index)]}/{rel}" if rel else names[int(index)]

    said = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) == new.get(key):
            continue
        kind, _, at = key.partition(" ")
        if kind == "f":
            said.append(f"{where(at)} {'added' if old.get(key) is None else 'removed' if new.get(key) is None else 'changed'}")
        elif kind == "n":
            was, now = old.get(key) or [], new.get(key) or []
            said.append(f"`import {at}` now finds {', '.join(where(c) for c in now)}" if now and not was else
                        f"`import {at}` no longer finds anything" if was and not now else f"what `import {at}` finds changed")
        elif kind == "l":
            said.append(f"the listing of {where(at)} changed")
        elif kind == "L":
            said.append(f"the libraries beside {where(at)} changed")
        elif kind == "m":
            mode, _, at = at.partition(" ")
            said.append(f"importlib.metadata's {mode} query of {where(at)}")
        else:
            said.append(key)
    return ", ".join(said[:most]) + (f" and {len(said) - most} more" if len(said) > most else "")


_INFO = (".dist-info", ".egg-info")


def _infos(state: _State, at: str) -> list[str]:
    """The entries of a folder importlib.metadata takes for distributions' metadata (its ``Lookup``; an
    ``EGG-INFO`` counts only in a folder named ``*.egg``, here in any: more, never fewer)."""
    return [n for n in state.listing(at) if n.lower().endswith(_INFO) or n.lower() == "egg-info"]


def _normalize(name: str) -> str:
    """importlib.metadata's ``Prepared.normalize`` (3.10 on): PEP 503's, with underscores."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _named(entry: str, name: str, rules: str) -> bool:
    """Whether importlib.metadata's search for the distribution ``name`` finds ``entry`` (an ``EGG-INFO`` always)."""
    low = entry.lower()
    if low == "egg-info":
        return True
    if rules == "3.9":  # FastPath.search with its Prepared: the name lowered, dashes as underscores
        wanted = name.lower().replace("-", "_")
        return low in (wanted + ".dist-info", wanted + ".egg-info") or (low.startswith(wanted + "-") and low.endswith(_INFO))
    return low.endswith(_INFO) and _normalize(low.rpartition(".")[0].partition("-")[0]) == _normalize(name)


def _dist_name(entry: str) -> str | None:
    """The name entry_points() keeps one distribution of (``PathDistribution._normalized_name``) when the folder's
    name tells it; None when it comes from the metadata inside (an extension in other case, no name before the dash)."""
    stem, ext = os.path.splitext(entry)
    name = stem.partition("-")[0]
    return _normalize(name) if ext in _INFO and name else None


def _join(at: str, name: str) -> str:
    return f"{at}/{name}" if not at.endswith(":") else f"{at}{name}"


def _ep_groups(data: bytes | None) -> set[str] | None:
    """``ep_groups`` of an entry_points.txt's bytes; None when it is absent or not UTF-8."""
    if data is None:
        return None
    try:
        return ep_groups(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _metadata_signature(deps: dict[str, list[str]], state: _State) -> dict[str, Any]:
    """What importlib.metadata's queries saw of the paths they searched (the script records them instead of the
    listings they made), kept to what each kind of query can tell apart:

    - a distribution's name (``version()``, ``distribution()``, ``metadata()``...): the entries of the path it finds;
    - every distribution (``distributions()``, ``packages_distributions()``...): every metadata entry's name;
    - every distribution for ``entry_points()`` (``ep``), or for ``entry_points(group=G)`` (``ep:G``): the metadata
      entries with an ``entry_points.txt`` that can add to the result (any; for a group, those that define entry
      points in it or that importlib.metadata fails to read: a file it cannot read fails every call) and its content;
      and, from 3.10 on, where entry_points() keeps the first distribution of a name (``_unique``), the entries whose
      name is that of a distribution whose entry points count (here or, as the script saw them, in a path outside
      the checked ones) or known only from their metadata: any other entry adds nothing and hides nothing that
      counts. On 3.9 every distribution's entry points count, duplicates too: an entry without adds none.
    """
    sig: dict[str, Any] = {}
    queries = [json.loads(q) for q in deps.get("metadata", [])]
    rules = (deps.get("metadata_rules") or ["3.10"])[0]
    infos = {at: _infos(state, at) for _, at in queries}
    ep_at = {at for mode, at in queries if mode == "ep" or mode.startswith("ep:")}
    with_file = {at: [(n, what) for n in infos[at] if (what := state.what(_join(_join(at, n), "entry_points.txt"))) is not None] for at in ep_at}
    groups = {(at, n): _ep_groups(state.read(_join(_join(at, n), "entry_points.txt"))) for at in ep_at for n, _ in with_file[at]}
    outside = [json.loads(o) for o in deps.get("metadata_outside", [])]  # [name, group] ("?": unknown)
    for mode, at in queries:
        if mode == "all":
            sig[f"m all {at}"] = infos[at]
        elif mode.startswith("name:"):
            sig[f"m {mode} {at}"] = [n for n in infos[at] if _named(n, mode[len("name:"):], rules)]
        elif mode == "ep" or mode.startswith("ep:"):
            group = mode[len("ep:"):] if mode.startswith("ep:") and rules != "3.9" else None
            def counts(at: str, n: str, group: str | None = group) -> bool:
                found = groups[(at, n)]
                return group is None or found is None or group in found
            hiding: list[str] = []
            if rules != "3.9":
                names = {_dist_name(n) for where in ep_at for n, _ in with_file[where] if counts(where, n)}
                names |= {name for name, g in outside if group is None or g in (group, "?")}
                unknown = None in names or "?" in names  # a distribution that counts, named by its metadata: any entry may hide it
                hiding = [n for n in infos[at] if unknown or (name := _dist_name(n)) is None or name in names]
            sig[f"m {mode} {at}"] = {"entry_points": [[n, what] for n, what in with_file[at] if counts(at, n)], "hiding": hiding}
        else:  # a kind this builder does not know: the listing, as before
            sig[f"m {mode} {at}"] = state.listing(at)
    return sig


def _runs(paths: list[Path], modules: list[str], first: list[str], runner: Runner, store: cache.Store | None, version: str,
          say: Callable[[str], None], digests: Digests | None = None, used: list[list[str]] | None = None) -> Noted:
    """The import runs of a check: the hot modules, and every other module; each one reused from ``store``
    while its signature holds, else run (both at once) and stored with what it depended on.

    The latest runs of each kind (FAMILY_KEEP) are also remembered under a key without their modules
    (``_family_key``): when modules were only added (a leaf package; one named in the set's requirements
    is a hot module), the newest of them that imported none but wanted modules is reused
    while its signature holds and the new modules are imported in a run of their own, the hot ones
    noting what they open and map (the hot set is then the union of both runs'). Whether that gives
    what one run of them all gives: a module's import can depend on what was imported before it in
    the same process; one that fails alone but imports after the others (it needs another imported
    first without importing it) fails its own run, and then the whole run is made, as with the cache
    empty. Left: a module that imports alone but not after another of the set (two packages
    registering one name in a registry of the process), or whose import changes how a later one
    imports or what it opens; the runs already leave such a pair unseen between the hot modules and
    the others, and Lambda imports what the handler imports, in its order (docs/design.md, 3.15).
    """
    rest = [m for m in modules if m not in first]
    # two runs, side by side: QEMU translates the interpreter again in every process, so a process per
    # module cost the demo twice the time of one for all (49 s against 23 s on 2 CPUs)
    units = [u for u in (first, rest) if u]
    state = _state(paths, digests) if store is not None else None
    names = [path_name(p) for p in paths]
    script = hashlib.sha256(SCRIPT.encode()).hexdigest()
    results: dict[int, Noted] = {}
    todo: list[tuple[int, list[str], list[str], dict | None]] = []
    partly: list[str] = []  # what a reused run's modules became

    # each run's key (its modules) and its kind's (the latest runs of the hot modules, or of the others)
    keys = [(cache.key("unit", version, runner.identity, script, json.dumps(unit), json.dumps(unit if unit is first else [])),
             _family_key(version, runner, script, first, unit is first)) for unit in units]
    if used is not None:  # a check reused whole remembers them again (hook)
        used += [[family, entry] for entry, family in keys]

    def put(n: int, unit: list[str], hot: list[str], noted: Noted) -> None:
        if store is None or state is None:
            return
        doc = {"failed": noted.failed, "opened": noted.opened, "touched": noted.touched, "deps": noted.deps,
               "signature": signature(noted.deps, state), "modules": unit}
        store.put_json("unit", keys[n][0], doc)
        _remember(store, keys[n][1], keys[n][0])

    for n, unit in enumerate(units):
        hot = unit if unit is first else []
        entry, family = keys[n]
        found = store.get_json("unit", entry) if store is not None else None
        if found is not None and state is not None and found["signature"] == signature(found["deps"], state):
            results[n] = Noted(found["failed"], found["opened"], found["touched"], found["deps"])
            if store is not None and isinstance(found.get("modules"), list):  # the latest of its kind again
                _remember(store, family, entry)
            continue
        if found is not None and store is not None:  # there, but what it depended on changed
            store.counts.hits["unit"] -= 1
            store.counts.miss("unit")
            if state is not None:
                changed = signature_changes(found["signature"], signature(found["deps"], state), names)
                partly.append(f"the {'hot modules' if hot else 'other modules'}' run again: {changed}")
        older, why_not = _older(store, family, unit, bool(hot), state, names)
        if why_not and found is None:
            partly.append(f"the {'hot modules' if hot else 'other modules'}' run again: {why_not}")
        if older is not None and not (new := [m for m in unit if m not in older["modules"]]):
            results[n] = Noted(older["failed"], older["opened"], older["touched"], older["deps"])
            put(n, unit, hot, results[n])
            continue
        if older is not None:
            partly.append(f"the {'hot modules' if hot else 'other modules'}' run reused for the {len(older['modules'])} modules it imported "
                          f"(nothing they depended on changed), the {len(new)} new ({', '.join(new[:5])}{', ...' if len(new) > 5 else ''}) "
                          f"imported in a run of their own")
        todo.append((n, unit, hot, older))
    if results or partly:
        said = [f"{len(results)} of {len(units)} import runs reused from the build cache: nothing they depended on changed"] if results else []
        say("; ".join(said + partly))

    def run(job: tuple[int, list[str], list[str], dict | None]) -> tuple[int, Noted]:
        n, unit, hot, older = job
        if older is not None:
            new = [m for m in unit if m not in older["modules"]]
            alone = runner.imports_noting(paths, new, new if hot else [])
            if not alone.failed and (older["touched"] is None) == (alone.touched is None):
                deps = {k: sorted(set(older["deps"].get(k, [])) | set(alone.deps.get(k, []))) for k in {*older["deps"], *alone.deps}}
                opened = sorted(set(older["opened"]) | set(alone.opened or ())) if hot else None
                touched = _spans_union(older["touched"], alone.touched) if hot and older["touched"] is not None and alone.touched is not None else None
                noted = Noted(older["failed"], opened, touched, deps)
                put(n, unit, hot, noted)
                return n, noted
            why = f"{', '.join(sorted(alone.failed))} failed alone" if alone.failed else "pages recorded in one run and not the other"
            say(f"{why}: importing every module of the run again with them, as with the cache empty")
            if store is not None:
                store.counts.hits["unit"] -= 1
        noted = runner.imports_noting(paths, unit, hot)
        put(n, unit, hot, noted)
        return n, noted

    with ThreadPoolExecutor(max_workers=2) as pool:  # the hot run is the longest: it starts first
        results.update(pool.map(run, todo))
    failed: dict[str, str] = {}
    for noted in results.values():
        failed.update(noted.failed)
    hot_run = results.get(0) if first else None
    return Noted(failed, _hot_set(hot_run.opened, hot_run.deps, paths[0]) if hot_run else None, hot_run.touched if hot_run else None)


def _hot_set(opened: list[str] | None, deps: dict[str, list[str]], tree: Path) -> list[str] | None:
    """The files of ``tree`` the hot run opened, as the hot set; when it called entry_points() on the tree, its
    metadata entries' entry_points.txt are those of the tree, whichever the run read: a run reused while an
    entry without entry points that count was added (``signature``) did not read the new one's, and a new run
    would have (or, had it none, tried to)."""
    if opened is None or not any(mode.partition(":")[0] == "ep" and at == "0:" for mode, at in map(json.loads, deps.get("metadata", []))):
        return opened
    def read_by_entry_points(rel: str) -> bool:
        folder, _, name = rel.partition("/")
        return name == "entry_points.txt" and (folder.lower().endswith(_INFO) or folder.lower() == "egg-info")
    tree_has = {f"{n}/entry_points.txt" for n in os.listdir(tree) if (n.lower().endswith(_INFO) or n.lower() == "egg-info") and (tree / n / "entry_points.txt").is_file()}
    return sorted({rel for rel in opened if not read_by_entry_points(rel)} | tree_has)


def _family_key(version: str, runner: Runner, script: str, first: list[str], hot: bool) -> str:
    """The cache key of the latest hot run, or of the latest run of the modules other than ``first``: the exact key's parts but the modules."""
    return cache.key("unit", "the hot modules", version, runner.identity, script) if hot else \
        cache.key("unit", "the others", version, runner.identity, script, json.dumps(first))


UNITS = "_units"  # in a check's cache entry (never in the manifest): [kind's key, run's key] of each of its import runs
FAMILY_KEEP = 4  # the latest runs of a kind a build may start from: another project's or experiment's runs do not push a set's own out


def _remember(store: cache.Store, family: str, entry: str) -> None:
    """Put the run stored under ``entry`` first among the latest of its kind (``family``), keeping FAMILY_KEEP."""
    found = store.get_json("unit", family, count=False)
    recent = [k for k in found.get("recent", []) if isinstance(k, str)] if isinstance(found, dict) else []
    store.put_json("unit", family, {"recent": [entry, *(k for k in recent if k != entry)][:FAMILY_KEEP]})


def _older(store: cache.Store | None, family: str, unit: list[str], hot: bool, state: _State | None, names: list[str]) -> tuple[dict | None, str]:
    """The newest of the latest runs of its kind that imported none but modules of ``unit`` and whose dependencies are
    unchanged; else None and why the newest was not ("" when there is none)."""
    if store is None or state is None:
        return None, ""
    found = store.get_json("unit", family, count=False)
    if not isinstance(found, dict):
        return None, ""
    if isinstance(found.get("modules"), list):  # a family entry of the builder before: the run itself
        runs: list[Any] = [found]
    else:
        runs = [store.get_json("unit", k, count=False) for k in found.get("recent", []) if isinstance(k, str)]
    why = ""
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("modules"), list):
            continue  # pruned, or damaged (then removed)
        if not set(run["modules"]) <= set(unit):
            why = why or "a module it imported is gone"  # what its import did to the others' is not known
            continue
        if hot and run.get("opened") is None:
            continue
        now = signature(run["deps"], state)
        if run["signature"] != now:
            why = why or signature_changes(run["signature"], now, names)
            continue
        store.counts.hit("unit")
        return run, ""
    return None, why


def _spans_union(a: dict[str, list[list[int]]], b: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
    """Two runs' touched pages (library -> [offset, length]) as one: the ranges of either, merged."""
    out: dict[str, list[list[int]]] = {}
    for lib in sorted({*a, *b}):
        merged: list[list[int]] = []
        for start, length in sorted([*a.get(lib, []), *b.get(lib, [])]):
            if merged and start <= merged[-1][0] + merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], start + length - merged[-1][0])
            else:
                merged.append([start, length])
        out[lib] = merged
    return out


def _package_of(tree: Path, module: str, removed: dict[str, dict[str, list[str]]]) -> str | None:
    """The package whose removed files sit under ``module``'s folder (or its .so/.py)."""
    for package, by_rule in removed.items():
        for files in by_rule.values():
            if any(f.split("/", 1)[0].split(".", 1)[0] == module for f in files):
                return package
    return None


def verify(tree: Path, aside: Path, report: slim_mod.SlimReport, target: Target, others: list[Path], *,
           runner: Runner | None = None, why_none: str = "", on_line: Callable[[str], None] | None = None, hot: list[str] | None = None,
           store: cache.Store | None = None, version: str = "", digests: Digests | None = None) -> dict:
    """Import every top-level module of ``tree`` (``others`` on the path after it); put back what slimming broke.

    ``hot``: the modules the handler imports at init (the set's own requirements'), imported
    together in one interpreter; the files of ``tree`` they open are the hot set (``opened``,
    builder/archives.py). Every other module is imported in a second interpreter, beside the
    first. ``store``: the build cache, where each of those runs is kept with what it
    depended on, and reused while none of that changed (``_runs``).

    Returns the manifest's "import_check": verified, runtime, restored (module,
    package, rule, files, the pipeline.toml line), failing (modules that fail
    with nothing removed or with everything put back: not slimming's doing).
    """
    modules = sorted(top_level_modules(tree) - SKIP_MODULES)
    if not report.enabled and (runner is None or not hot):  # with slimming off, the check runs only to record the hot set
        return {"verified": True, "runtime": None, "why": "slimming is off", "modules": len(modules), "restored": [], "failing": {}}
    if runner is None:
        return {"verified": False, "why": why_none or "no runtime for the target here", "modules": len(modules), "restored": [], "failing": {}}
    paths = [tree, *others]
    say = on_line or (lambda line: None)
    first = sorted(set(hot or ()) & set(modules))
    say(f"importing {counted(len(modules), 'module')} in {runner.describe}" + (f", first {', '.join(first)}, noting the files they open" if first else ""))
    used: list[list[str]] = []
    try:
        noted = _runs(paths, modules, first, runner, store, version, say, digests, used)
    except (RuntimeError, proc.TimeoutExpired, OSError) as exc:
        return {"verified": False, "runtime": runner.describe, "why": f"the import check could not run: {exc}", "modules": len(modules), "restored": [], "failing": {}}
    restored: list[dict] = []
    failing: dict[str, str] = {}
    for module, error in sorted(noted.failed.items()):
        package = _package_of(tree, module, report.removed_files)
        by_rule = report.removed_files.get(package or "", {})
        if package == UNOWNED:  # no RECORD to tell packages apart: only what sits under the module
            by_rule = {rule: kept for rule, files in by_rule.items() if (kept := [f for f in files if f.split("/", 1)[0].split(".", 1)[0] == module])}
        if not by_rule:
            failing[module] = error
            continue
        every = [f for files in by_rule.values() for f in files]
        slim_mod.restore(tree, aside, every)
        if runner.imports(paths, [module]):
            slim_mod.remove_again(tree, aside, every)  # fails unslimmed too: not slimming's doing
            failing[module] = error
            continue
        for rule, files in sorted(by_rule.items()):  # which rule's removal breaks it
            slim_mod.remove_again(tree, aside, files)
            if not runner.imports(paths, [module]):
                continue  # not needed
            slim_mod.restore(tree, aside, files)
            line = f"[slim] {keep_line(files)}" if package == UNOWNED else f"[slim.packages.{package}] {keep_line(files)}"
            restored.append({"module": module, "package": package, "rule": rule, "files": len(files), "error": error, "line": line, "paths": files})
            say(f"slimming rule {rule!r} removed files `import {module}` needs ({error}); put back {len(files)} file(s) of {package}; to say so in pipeline.toml: {line}")
    done: dict = {"verified": True, "runtime": runner.describe, "modules": len(modules), "restored": restored, "failing": failing, UNITS: used}
    if noted.opened is not None:
        done.update(hot_modules=first, opened=noted.opened)
    if noted.touched is not None:
        done["touched"] = noted.touched
    return done


def record(slim_doc: dict, check: dict, tree: Path) -> dict:
    """The manifest's slim section after the check: restored files no longer count as removed."""
    doc = {**slim_doc, "import_check": {k: v for k, v in check.items()}}
    removed = {p: {r: list(f) for r, f in by_rule.items()} for p, by_rule in slim_doc.get("removed_files", {}).items()}
    rules = {r["name"]: dict(r) for r in slim_doc.get("rules", [])}
    for item in check.get("restored", []):
        paths = set(item["paths"])
        removed[item["package"]][item["rule"]] = [f for f in removed[item["package"]][item["rule"]] if f not in paths]
        rules[item["rule"]]["files"] -= len(paths)
        rules[item["rule"]]["bytes"] -= sum((tree / f).lstat().st_size for f in paths if (tree / f).exists() or (tree / f).is_symlink())
    doc["removed_files"] = removed
    doc["rules"] = list(rules.values())
    return doc


def hot_modules(tree: Path, requirements: list[str]) -> list[str]:
    """The top-level modules of ``tree`` that the distributions named in ``requirements`` (a set's own
    requirement lines, not what they pull in) provide: torch gives torch, functorch and torchgen."""
    names = set()
    for line in requirements:
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    provided: dict[str, set[str]] = {}  # top-level module -> the distributions with files in it
    for rel, dist in owners(tree).items():
        top = rel.split("/", 1)[0]
        if "/" in rel or top.endswith(".py") or ".so" in top:
            provided.setdefault(top.split(".", 1)[0], set()).add(dist)
    return sorted(m for m in top_level_modules(tree) - SKIP_MODULES if provided.get(m, set()) & names)


def wanted(set_name: str, rules: slim_mod.Rules) -> bool:
    """Whether a set's build imports its modules: to verify slimming, and for the efs set to record its hot set."""
    return bool(rules.rules) or rules.strip_enabled or set_name == "efs"


def hook(target: Target, target_dir: Path, set_names: list[str], progress, runner: Runner | None = None, why: str = "",
         requirements: dict[str, list[str]] | None = None, store: cache.Store | None = None,
         version: str = "", digests: Digests | None = None) -> Callable[[str, Path, Path, slim_mod.SlimReport], SlimRecord]:
    """What builder/build.py calls after slimming a set: verify, and the manifest's slim section.

    ``runner``: the runtime builder/build.py chose before the sets' build keys (their key holds
    its identity); None and ``why`` when the user opted out. ``requirements``: each set's
    requirement lines; the modules they name are imported first and the files they open
    recorded (the hot set the efs archives hold). ``store``: the build cache, which holds a
    set's check under the key ``check_key`` gives (``version``: the builder's). ``digests``: the
    build's remembered sha256s (the key hashes every file of the set).
    """

    def run(name: str, tree: Path, aside: Path, report: slim_mod.SlimReport) -> SlimRecord:
        want = report.enabled or name == "efs"  # unslimmed, the efs set still wants its hot set
        use = runner if want else None
        # the sets built before this one (``set_names`` is the build's order: the layer first), never a
        # later set's tree of the previous build: a fresh build and a rebuild check the same thing
        before = set_names[: set_names.index(name)] if name in set_names else []
        others = [target_dir / other / "site-packages" for other in before if (target_dir / other / "site-packages").is_dir()]
        hot = hot_modules(tree, (requirements or {}).get(name, [])) if name == "efs" else None  # the layer is on local disk in Lambda: no hot set
        entry = check_key(tree, aside, report, others, use, hot, version, digests) if store is not None and use is not None else None
        check = store.get_json("check", entry) if store is not None and entry else None
        if check is not None and store is not None:
            for family, unit_entry in check.pop(UNITS, []):  # its runs are the latest of their kind again: a later change starts from them
                _remember(store, family, unit_entry)
            progress.step(f"[{name}] import check: the same tree, other sets and runtime as a check in the cache; its result reused")
            for item in check.get("restored", []):
                slim_mod.restore(tree, aside, item["paths"])
        else:
            if use:
                heavy = "QEMU" in use.describe and (tree / "torch").is_dir()  # the layer's check takes seconds
                slow = " (under QEMU: the demo's torch and torchvision take about 15 s on 2 CPUs)" if heavy else ""
                progress.step(f"[{name}] importing every top-level module in {use.describe}{slow}")
            with progress.waiting(f"importing the {name} set's modules in {use.describe}") if use else contextlib.nullcontext():
                check = verify(tree, aside, report, target, others, runner=use, why_none=why if want else "", on_line=progress.line, hot=hot,
                               store=store, version=version, digests=digests)
            units = check.pop(UNITS, [])
            if store is not None and entry and check.get("verified"):  # a check that could not run is tried again, never kept
                store.put_json("check", entry, {**check, UNITS: units})
        return SlimRecord.from_json(record(report.as_json(), check, tree))

    return run


def check_key(tree: Path, aside: Path, report: slim_mod.SlimReport, others: list[Path], runner: Runner, hot: list[str] | None, version: str,
              digests: Digests | None = None) -> str:
    """Everything a set's import check can depend on (builder/cache.py): any change to the set reruns it."""
    def tree_hash(folder: Path) -> str:
        manifest = folder.parent / MANIFEST_NAME  # another set, built before: its manifest names its content
        if folder not in (tree, aside) and manifest.is_file():
            with contextlib.suppress(OSError, RecordError):
                return load_manifest(manifest).content_hash
        return mf.content_hash(mf.scan(folder, digests)) if folder.is_dir() else ""

    return cache.key("check", version, runner.identity, hashlib.sha256(SCRIPT.encode()).hexdigest(), json.dumps(hot), tree_hash(tree), tree_hash(aside),
                     json.dumps(report.removed_files, sort_keys=True), json.dumps([tree_hash(o) for o in others]))


def warnings(sets: dict) -> list[str]:
    """The build's warnings about the import check of each set."""
    out = []
    for name, s in sets.items():
        check = s.slim.import_check
        if check is None:
            continue
        if not check.verified and (check.why or "").startswith(f"{OPTED_OUT} ("):
            out.append(f"[{name}] not import-checked: {check.why}\n  what it costs: {OPT_OUT_COST if name == 'efs' else OPT_OUT_SLIM_COST}")
        elif not check.verified:
            out.append(f"[{name}] slimming was not import-verified: {check.why}\n  the manifest records it; the next `invoke build` tries the check again")
        for r in check.restored:
            out.append(f"[{name}] slimming rule {r.rule!r} removed files `import {r.module}` needs ({r.error}); the build put back {r.files} file(s) of {r.package}."
                       f"\n  to keep them without the check, add to pipeline.toml: {r.line}")
        for module, error in check.failing.items():
            out.append(f"[{name}] `import {module}` fails with or without slimming: {error}")
    return out
