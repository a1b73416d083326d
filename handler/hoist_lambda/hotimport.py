"""Import the hot set of an EFS tree from memory (standard library only).

The build's archives hold the files the import check saw opened while it
imported the set's own requirements (builder/archives.py); the index records
the sizes of the sources whose bytecode is among them (the loader stats a
source, it does not read it: unchecked-hash bytecode). activate.py reads the
archives (a few large parallel reads of EFS) into memory, keyed by each file's
path *in the tree*; ``install`` adds a path hook that answers imports for the
tree's hot folders from them and the folder listings the build recorded, and
``release`` gives it all back once init is over. Nothing is written anywhere:
creating ~2,000 files in /tmp had cost more than the reads themselves
(docs/design.md, 7).

Every module keeps its real place: ``__file__``, ``__path__`` and
``__spec__.origin`` name the file on EFS, which exists. So code that looks
beside its module (torch finds ``lib/`` from ``__file__``), tracebacks and
``inspect`` keep working; what is not in memory (a module not imported at init,
a data file, a shared library) is read from EFS as it would be without Hoist.

The path hook claims a folder only when the build listed it; any other folder
(a package nothing hot lives in) gets the standard FileFinder, on EFS. Modules
found through the hook load with importlib's own loaders, with ``get_data``
and ``path_stats`` answered from memory and bytecode never written back. A
module the listing names but neither memory nor the tree holds (a partial
copy, a version collected under a warm environment) is not found, so importing
it raises ModuleNotFoundError, as it would without Hoist.
"""
from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
    SourcelessFileLoader,
)
from importlib.util import cache_from_source, spec_from_file_location

# a folder's entry kinds in the index's "dirs" (builder/archives.py): a file, a folder, a
# folder with an __init__.py (a package whose own listing may not be in the index)
FILE, FOLDER, PACKAGE = "f", "d", "p"


class HotSet:
    """The hot files by path in the tree (views into the archives' unpacked streams), the sizes of the
    sources whose bytecode is hot, and the listing of each hot folder."""

    def __init__(self, tree: str, files: dict[str, memoryview], dirs: dict[str, dict[str, str]], sizes: dict[str, int] | None = None,
                 prefetch: str | None = None):
        self.tree = tree
        self.prefetch = prefetch  # the libraries' read-ahead started with it
        self.files = files  # absolute path -> content
        self.sizes = sizes or {}  # absolute path -> size, for sources the loader only stats
        self.dirs = dirs  # absolute folder -> {name: FILE | FOLDER | PACKAGE}
        streams = {id(getattr(v, "obj", v)): getattr(v, "obj", v) for v in files.values()}
        self.held = sum(len(stream) for stream in streams.values())  # the unpacked streams the views keep alive

    def __len__(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(len(data) for data in self.files.values())

    def has(self, path: str) -> bool:
        """Whether ``path`` exists as far as the hot set knows (in memory, or a source it knows the size of)."""
        return path in self.files or path in self.sizes

    def clear(self) -> None:
        self.files, self.sizes, self.dirs, self.held = {}, {}, {}, 0


# -------------------------------------------------------------------- loaders
class _Memory:
    """Mixed into importlib's file loaders: read from the hot set first, never write into the tree."""

    hot: HotSet  # set on the subclasses made by ``install``

    def get_data(self, path: str) -> bytes:
        data = self.hot.files.get(path)
        return bytes(data) if data is not None else super().get_data(path)  # type: ignore[misc]

    def path_stats(self, path: str) -> dict:
        data = self.hot.files.get(path)
        size = len(data) if data is not None else self.hot.sizes.get(path)
        if size is None:
            return super().path_stats(path)  # type: ignore[misc]
        # the build's bytecode is unchecked-hash: the loader never compares a time; a timestamp
        # .pyc from a wheel does not match 0 and is compiled from the source instead
        return {"mtime": 0, "size": size}

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        return  # the tree on EFS is an immutable version: no bytecode is written into it


def _loaders(hot: HotSet) -> list[tuple[type, list[str]]]:
    source = type("HotSourceLoader", (_Memory, SourceFileLoader), {"hot": hot})
    sourceless = type("HotSourcelessLoader", (_Memory, SourcelessFileLoader), {"hot": hot})
    # FileFinder's order: extension modules, then source, then bytecode
    return [(ExtensionFileLoader, list(EXTENSION_SUFFIXES)), (source, list(SOURCE_SUFFIXES)), (sourceless, list(BYTECODE_SUFFIXES))]


def _module_name(filename: str, suffixes: list[str]) -> str | None:
    for suffix in sorted(suffixes, key=len, reverse=True):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


class HotFinder:
    """A path entry finder for one hot folder, answering from its recorded listing (as FileFinder would from listdir)."""

    def __init__(self, path: str, listing: dict[str, str], hot: HotSet, loaders: list[tuple[type, list[str]]]):
        self.path = path
        self.listing = listing
        self.hot = hot
        self.loaders = loaders
        self._disk: FileFinder | None = None

    def _on_disk(self) -> FileFinder:
        if self._disk is None:
            self._disk = FileFinder(self.path, *[(loader, suffixes) for loader, suffixes in self.loaders])
        return self._disk

    def invalidate_caches(self) -> None:
        if self._disk is not None:
            self._disk.invalidate_caches()

    def _spec(self, fullname: str, path: str, loader_class: type, package: str | None = None) -> ModuleSpec | None:
        if not (self.hot.has(path) or self.hot.has(_bytecode_of(path)) or os.path.isfile(path)):
            return None  # listed by the build, gone from the tree: not found, as FileFinder would say
        return spec_from_file_location(fullname, path, loader=loader_class(fullname, path), submodule_search_locations=[package] if package else None)

    def find_spec(self, fullname: str, target: types.ModuleType | None = None) -> ModuleSpec | None:
        tail = fullname.rpartition(".")[2]
        kind = self.listing.get(tail)
        namespace = None
        if kind in (FOLDER, PACKAGE):
            base = os.path.join(self.path, tail)
            inner = self.hot.dirs.get(base)
            if inner is None:  # a folder nothing hot lives in: what it holds is known on EFS only
                return self._on_disk().find_spec(fullname, target)
            for loader_class, suffixes in self.loaders:
                for suffix in suffixes:
                    if inner.get("__init__" + suffix) == FILE:
                        return self._spec(fullname, os.path.join(base, "__init__" + suffix), loader_class, base)
            namespace = base
        for loader_class, suffixes in self.loaders:
            for suffix in suffixes:
                if self.listing.get(tail + suffix) == FILE:
                    return self._spec(fullname, os.path.join(self.path, tail + suffix), loader_class)
        if namespace:
            spec = ModuleSpec(fullname, None)
            spec.submodule_search_locations = [namespace]
            return spec
        return None

    def iter_modules(self, prefix: str = "") -> Iterator[tuple[str, bool]]:
        """What pkgutil.iter_modules lists for this folder (its FileFinder version, from the listing)."""
        suffixes = [s for _, group in self.loaders for s in group]
        seen = set()
        for name in sorted(self.listing):
            kind = self.listing[name]
            if kind == FILE:
                module, package = _module_name(name, suffixes), False
            else:
                inner = self.hot.dirs.get(os.path.join(self.path, name))
                package = kind == PACKAGE or (inner is not None and any(_module_name(n, suffixes) == "__init__" for n in inner))
                module = name if package else None
            if module and module != "__init__" and "." not in module and module not in seen:
                seen.add(module)
                yield prefix + module, package


def _bytecode_of(path: str) -> str:
    if not path.endswith(".py"):
        return ""
    try:
        return cache_from_source(path)
    except NotImplementedError:  # no cache tag: no bytecode
        return ""


_installed: list = []  # the hook installed, while it is


def install(hot: HotSet) -> None:
    """Answer imports for the hot folders of ``hot.tree`` from memory (a path hook ahead of FileFinder's)."""
    loaders = _loaders(hot)

    def hook(path: str) -> HotFinder:
        listing = hot.dirs.get(path)
        if listing is None:
            raise ImportError("not a hot folder of the tree", path=path)
        return HotFinder(path, listing, hot, loaders)

    sys.path_hooks.insert(0, hook)
    _installed.append((hook, hot))
    for path in hot.dirs:  # a finder cached before this hook would read EFS
        sys.path_importer_cache.pop(path, None)


def release() -> int:
    """Give the hot set back: remove the hook and the finders it made (FileFinder takes the folders over, on EFS),
    drop the files, sizes and listings. Modules already imported keep working (their loaders read EFS from
    now on, for tracebacks and ``inspect``). Returns the bytes given back."""
    freed = 0
    while _installed:
        hook, hot = _installed.pop()
        if hook in sys.path_hooks:
            sys.path_hooks.remove(hook)
        for path in hot.dirs:
            finder = sys.path_importer_cache.get(path)
            if isinstance(finder, HotFinder):
                del sys.path_importer_cache[path]
        freed += hot.held
        hot.clear()
    return freed
