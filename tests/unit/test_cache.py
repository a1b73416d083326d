"""The build cache's entries: what is stored comes back; a damaged entry is removed and reported, never used."""
from __future__ import annotations

import json

from builder import cache


def test_a_file_entry_comes_back_with_its_bytes_and_the_mode_of_the_file_it_replaces(tmp_path):
    store = cache.Store(tmp_path / "cache")
    src = tmp_path / "lib.so"
    src.write_bytes(b"\x7fELF stripped" * 1000)
    store.put_file("strip", "a" * 64, src)
    dest = tmp_path / "tree" / "lib.so"
    dest.parent.mkdir()
    dest.write_bytes(b"\x7fELF original, longer" * 2000)
    dest.chmod(0o755)
    assert store.get_file("strip", "a" * 64, dest)
    assert dest.read_bytes() == src.read_bytes() and dest.stat().st_mode & 0o777 == 0o755
    assert not store.get_file("strip", "b" * 64, tmp_path / "other.so") and not (tmp_path / "other.so").exists()
    assert store.counts.hits == {"strip": 1} and store.counts.misses == {"strip": 1}


def test_a_damaged_file_entry_is_detected_removed_and_never_copied_out(tmp_path):
    # GIVEN an entry whose bytes changed after it was stored (a disk error, a hand edit)
    store = cache.Store(tmp_path / "cache")
    src = tmp_path / "m.pyc"
    src.write_bytes(b"bytecode" * 100)
    store.put_file("pyc", "c" * 64, src)
    [entry] = [p for p in (tmp_path / "cache" / "pyc").rglob("*") if p.is_file() and not p.name.endswith(".sha256")]
    entry.write_bytes(b"bytecodf" + entry.read_bytes()[8:])
    dest = tmp_path / "out.pyc"
    dest.write_bytes(b"left as it was")
    # WHEN it is asked for
    found = store.get_file("pyc", "c" * 64, dest)
    # THEN it is refused, reported and gone; the destination is untouched
    assert not found and dest.read_bytes() == b"left as it was"
    assert len(store.counts.damaged) == 1 and "pyc/" in store.counts.damaged[0]
    assert not entry.exists() and not list((tmp_path / "cache" / "pyc").rglob("*.sha256"))
    # a partial entry (no sidecar: the build stopped between the two renames) is a miss, not a hit
    store.put_file("pyc", "d" * 64, src)
    next((tmp_path / "cache" / "pyc").rglob("*.sha256")).unlink()
    assert not store.get_file("pyc", "d" * 64, dest)


def test_a_damaged_document_is_removed_and_a_missing_one_is_a_miss(tmp_path):
    store = cache.Store(tmp_path / "cache")
    body = {"verified": True, "touched": {"z.so": [[0, 4096]], "a.so": [[4096, 8192]]}}
    store.put_json("check", "e" * 64, body)
    again = store.get_json("check", "e" * 64)
    assert again == body and list(again["touched"]) == ["z.so", "a.so"]  # the order it had: manifests hold it as it is
    [path] = (tmp_path / "cache" / "check").rglob("*.json")
    doc = json.loads(path.read_text())
    doc["body"]["verified"] = False
    path.write_text(json.dumps(doc))
    assert store.get_json("check", "e" * 64) is None and not path.exists() and store.counts.damaged
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert store.get_json("check", "e" * 64) is None and not path.exists()
    assert store.get_json("check", "f" * 64) is None


def test_usage_counts_entries_and_bytes_and_clear_empties_it(tmp_path):
    store = cache.Store(tmp_path / "cache")
    src = tmp_path / "x"
    src.write_bytes(b"12345")
    store.put_file("pyc", "1" * 64, src)
    store.put_json("check", "2" * 64, {"a": 1})
    used = cache.usage(tmp_path / "cache")
    assert used.entries == {"pyc": 1, "strip": 0, "check": 1, "unit": 0, "archive": 0} and used.bytes["pyc"] > 5 and used.total == sum(used.bytes.values())
    cache.clear(tmp_path / "cache")
    assert cache.usage(tmp_path / "cache").total == 0 and not (tmp_path / "cache").exists()


def test_prune_removes_what_no_build_used_for_so_many_days_and_keeps_what_one_used(tmp_path):
    import os
    import time

    # GIVEN four entries, all written 40 days ago; then a build uses one file entry and one document
    store = cache.Store(tmp_path / "cache")
    src = tmp_path / "x"
    src.write_bytes(b"bytecode")
    for k in ("1", "2"):
        store.put_file("pyc", k * 64, src)
        store.put_json("unit", k * 64, {"run": k})
    old = time.time() - 40 * 86400
    for folder, _, files in os.walk(tmp_path / "cache"):
        for name in files:
            os.utime(os.path.join(folder, name), (old, old))
    assert store.get_file("pyc", "1" * 64, tmp_path / "out.pyc") and store.get_json("unit", "1" * 64) == {"run": "1"}
    # WHEN the cache is pruned of what was unused for 30 days
    gone = cache.prune(30, tmp_path / "cache")
    # THEN the unused file entry (with its sidecar) and document are gone, the used ones stay and still come back whole
    assert gone.entries == {"pyc": 1, "strip": 0, "check": 0, "unit": 1, "archive": 0} and gone.total > 0
    assert cache.usage(tmp_path / "cache").entries == {"pyc": 1, "strip": 0, "check": 0, "unit": 1, "archive": 0}
    fresh = cache.Store(tmp_path / "cache")
    assert fresh.get_file("pyc", "1" * 64, tmp_path / "again.pyc") and (tmp_path / "again.pyc").read_bytes() == b"bytecode"
    assert not fresh.get_file("pyc", "2" * 64, tmp_path / "gone.pyc") and fresh.get_json("unit", "2" * 64) is None
    assert fresh.counts.damaged == []  # a pruned entry is a plain miss, not a damaged one
    # and a prune of 0 days removes everything not used this very moment
    assert cache.prune(0, tmp_path / "cache", now=time.time() + 1).entries["pyc"] == 1
