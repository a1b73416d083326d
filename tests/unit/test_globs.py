"""pipeline/globs.py: the one glob semantics ([slim] keep, slim rules, libraries.json, [validate] waive)."""
from __future__ import annotations

import fnmatch

import pytest

from pipeline.globs import compile_glob, matches

SEGMENT = [  # (pattern, path, matches?) for [slim] keep patterns, slim rules and library names
    ("*.so", "libx.so", True),
    ("*.so", "a/libx.so", False),  # * stays within one folder
    ("torch/lib/*.so*", "torch/lib/libc10.so.1", True),
    ("torch/lib/*.so*", "torch/lib/sub/libx.so", False),
    ("**/*.h", "z.h", True),  # **/ is zero folders too
    ("**/*.h", "x/y/z.h", True),
    ("*/**/tests", "a/tests", True),
    ("*/**/tests", "a/b/tests", True),
    ("*/**/tests", "tests", False),
    ("mypkg/data/**", "mypkg/data/a/b.bin", True),  # ** at the end: everything below
    ("mypkg/data/**", "mypkg/other", False),
    ("skimage/**/*.pyi", "skimage/__init__.pyi", True),
    ("skimage/**/*.pyi", "skimage/filters/x/__init__.pyi", True),
    ("lib?.so", "libx.so", True),
    ("a?b", "a/b", False),  # ? is not /
    ("libcu[bd]*.so*", "libcudnn.so.9", True),
    ("libcu[!bd]*.so*", "libcudnn.so.9", False),
    ("x[!a]y", "x/y", False),  # a class never matches /
    ("x[+-0]y", "x/y", False),
    ("lib[x.so", "lib[x.so", True),  # [ without ] is itself
    ("a.b", "axb", False),  # regex characters are themselves
    ("nvidia-*", "nvidia-cublas-cu12", True),
]

CROSSING = [  # [validate] waive patterns: fnmatch's meaning, which users' waivers rely on
    ("efs:sk/_openmp*.so", "efs:sk/_openmp_helpers.so", True),
    ("efs:torch/*", "efs:torch/lib/libgomp.so.1", True),  # * crosses folders
    ("efs:sklearn/**/_openmp_helpers*.so", "efs:sklearn/utils/_openmp_helpers.cpython-312-x86_64-linux-gnu.so", True),
    ("efs:sklearn/**/_openmp_helpers*.so", "efs:sklearn/_openmp_helpers.so", False),  # **/ needs a folder, as in fnmatch
    ("layer:layerpkg/_opt*.so", "layer:layerpkg/_optional.so", True),
    ("efs:a?b", "efs:a/b", True),
    ("efs:x[!a]y", "efs:x/y", True),
    ("efs:*.so", "layer:x.so", False),
]


@pytest.mark.parametrize("pattern, path, expected", SEGMENT)
def test_segment_semantics(pattern: str, path: str, expected: bool) -> None:
    assert matches(path, [pattern]) is expected


@pytest.mark.parametrize("pattern, path, expected", CROSSING)
def test_crossing_semantics_is_fnmatch(pattern: str, path: str, expected: bool) -> None:
    assert matches(path, [pattern], crossing=True) is expected
    assert fnmatch.fnmatchcase(path, pattern) is expected  # what the waivers were matched with before


def test_any_of_several_patterns_and_the_compiled_form_is_cached() -> None:
    assert matches("a/b.pyi", ["*.txt", "**/*.pyi"]) and not matches("a/b.py", ["*.txt", "**/*.pyi"])
    assert compile_glob("**/*.pyi") is compile_glob("**/*.pyi")
    assert compile_glob("**/*.pyi") is not compile_glob("**/*.pyi", crossing=True)


def test_the_slim_and_validate_modules_use_it() -> None:
    from builder import slim
    from validate import checks, stage

    assert slim.matches is matches and checks.matches is matches and stage.matches is matches
