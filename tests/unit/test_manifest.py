"""Manifest and zips: the content hash names the content, zips are byte-for-byte reproducible."""
from __future__ import annotations

import os
import zipfile

from builder import manifest as mf
from builder.package import make_zip
from tests.trees import write_tree


def test_content_hash_covers_path_mode_and_bytes(tmp_path):
    tree = write_tree(tmp_path / "t", {"a/x.py": "x = 1\n", "b.py": "y = 2\n"})
    base = mf.content_hash(mf.scan(tree))
    os.utime(tree / "b.py", (1, 1))
    assert mf.content_hash(mf.scan(tree)) == base  # times are not content
    (tree / "b.py").chmod(0o755)
    assert mf.content_hash(mf.scan(tree)) != base
    (tree / "b.py").chmod(0o644)
    assert mf.content_hash(mf.scan(tree)) == base
    (tree / "b.py").write_text("y = 3\n")
    assert mf.content_hash(mf.scan(tree)) != base
    (tree / "b.py").write_text("y = 2\n")
    (tree / "b.py").rename(tree / "c.py")
    assert mf.content_hash(mf.scan(tree)) != base


def test_normalize_modes_ignores_the_umask(tmp_path):
    tree = write_tree(tmp_path / "t", {"run.sh": "#!/bin/sh\n", "data.txt": "x"})
    (tree / "run.sh").chmod(0o700)
    (tree / "data.txt").chmod(0o600)
    mf.normalize_modes(tree)
    modes = {e.path: e.mode for e in mf.scan(tree)}
    assert modes == {"data.txt": 0o644, "run.sh": 0o755}


def test_zips_are_reproducible_and_carry_modes(tmp_path):
    tree = write_tree(tmp_path / "t", {"pkg/__init__.py": "", "pkg/tool": "#!/bin/sh\n", "pkg/__pycache__/x.pyc": "junk"})
    (tree / "pkg/tool").chmod(0o755)
    one = make_zip(tree, tmp_path / "one.zip", prefix="python/")
    for p in tree.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    two = make_zip(tree, tmp_path / "two.zip", prefix="python/")
    assert one.sha256 == two.sha256 and (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert sorted(infos) == ["python/pkg/__init__.py", "python/pkg/tool"]  # __pycache__ of a source folder is not shipped
    assert infos["python/pkg/tool"].external_attr >> 16 & 0o777 == 0o755
    assert infos["python/pkg/__init__.py"].date_time == (1980, 1, 1, 0, 0, 0)
    assert one.entries == 2 and one.unzipped_bytes == len("#!/bin/sh\n")


def test_package_sizes_count_bytecode_with_its_source(tmp_path):
    tree = write_tree(tmp_path / "t", {
        "pkg/__init__.py": "x" * 10,
        "pkg/__pycache__/__init__.cpython-313.pyc": "y" * 5,
        "pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: Pkg\nVersion: 1.0\n",
        "pkg-1.0.dist-info/RECORD": "pkg/__init__.py,,\npkg-1.0.dist-info/METADATA,,\npkg-1.0.dist-info/RECORD,,\n",
    })
    sizes = dict((n, (b, c)) for n, b, c in mf.package_sizes(tree, mf.scan(tree)))
    meta = len("Metadata-Version: 2.1\nName: Pkg\nVersion: 1.0\n") + len("pkg/__init__.py,,\npkg-1.0.dist-info/METADATA,,\npkg-1.0.dist-info/RECORD,,\n")
    assert sizes == {"pkg": (15 + meta, 4)}
