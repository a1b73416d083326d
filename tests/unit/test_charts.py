"""The benchmarks' charts (bench/charts.py): each is drawn from a small document of the shape its benchmark writes,
as a PNG of a sensible size that is not blank; bench/record.py draws one beside every JSON it writes, and
`invoke bench <name> --chart-only` draws it again without running anything."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from invoke import MockContext
from PIL import Image, ImageStat

import tasks
from bench import charts, record, registry
from pipeline.errors import BenchError

MACHINE = {"platform": "Linux-x86_64", "machine": "x86_64", "cpus": 2, "python": "3.11.7"}


def _point(seconds, bytes_read, prefetch=None, compression=None, archived=None):
    return {"seconds_median": seconds, "seconds_all": [seconds], "prefetch": prefetch, "compression": compression, "archived": archived,
            "bytes_read": bytes_read, "total_ops": 100, "ops": {"read": 50}, "hydrated": prefetch is not None}


def coldstart_doc(memory=True):
    doc = {
        "benchmark": "coldstart", "version": 1, "command": "invoke bench coldstart --runs 1", "date": "2026-12-06T08:28:12+00:00", "machine": MACHINE,
        "default_prefetch": "touched",
        "figures": {
            "seed_1ms": _point(15.6, 91_800_000), "seed_0ms": _point(6.6, 91_700_000),
            "hoist_1ms": _point(1.8, 83_300_000, "touched", "zlib", "hot set"), "hoist_0ms": _point(1.5, 86_900_000, "touched", "zlib", "hot set"),
            "limit_local_disk": {"seconds_median": 1.1, "bytes_read": None, "prefetch": None},
            "curve_zlib_all_1ms": _point(3.8, 377_000_000, "all", "zlib", "hot set"),
            "curve_lzma_touched_1ms": _point(2.6, 86_400_000, "touched", "lzma", "hot set"),
            "curve_none_none_1ms": _point(3.6, 93_200_000, "none", "none", "hot set"),
            "curve_everything_touched_1ms": _point(3.9, 120_000_000, "touched", "zlib", "every file"),
        },
        "curve": {n: {} for n in ("hoist_1ms", "curve_zlib_all_1ms", "curve_lzma_touched_1ms", "curve_none_none_1ms", "curve_everything_touched_1ms")},
    }
    if memory:
        doc["memory"] = {"peak_during_activation": 20_600_000, "held_after_init": 82_000, "hot_set_bytes": 16_600_000, "held_during_init": 16_600_000,
                         "peak_over_hot_set": 1.24}
    return doc


def build_doc(packages=False):
    naive = {"bytes": 660_000_000, "files": 21_078, "seconds": 35.4}
    hoist = {"bytes": 458_000_000, "files": 8_598, "seconds": 40.3}
    if packages:
        naive["packages"] = {"torch": 500_000_000, "numpy": 40_000_000, "pillow": 12_000_000} | {f"small{i}": 1_000_000 for i in range(14)}
        hoist["packages"] = {"torch": 350_000_000, "numpy": 20_000_000, "pillow": 9_000_000} | {f"small{i}": 600_000 for i in range(14)}
    return {"benchmark": "build", "version": 1, "command": "invoke bench build --runs 3", "date": "2026-12-01T11:21:55+00:00", "machine": MACHINE,
            "target": {"name": "lambda"}, "runs": 3,
            "figures": {"naive": naive, "hoist": hoist, "noop": {"list_seconds": 0.45, "build_seconds": 0.73}}}


def sync_doc():
    return {"benchmark": "sync", "version": 1, "command": "invoke bench sync", "date": "2026-11-25T04:54:55+00:00", "machine": MACHINE,
            "figures": {"plain_rsync_naive": {"seconds": 5.47, "bytes_sent": 662_000_000}, "first_sync": {"seconds": 4.4, "bytes_sent": 492_000_000},
                        "unchanged_resync": {"seconds": 0.0, "bytes_sent": 0, "action": "up-to-date"},
                        "one_package_changed": {"numpy": {"package_bytes": 20_400_000, "bytes_sent": 25_100_000},
                                                "filelock": {"package_bytes": 1_240_000, "bytes_sent": 3_660_000}}}}


def serve_doc():
    return {"benchmark": "serve", "version": 1, "command": "invoke bench serve", "date": "2026-12-01T11:24:09+00:00", "machine": MACHINE,
            "figures": {"endpoint_ms": {"median": 2.3, "p99": 11.2, "count": 300}, "endpoint_with_output_ms": {"median": 12.1, "p99": 50.6, "count": 300},
                        "direct_model_ms": {"median": 0.088, "p99": 0.24, "count": 300}}}


DOCS = {"coldstart": coldstart_doc, "build": build_doc, "sync": sync_doc, "serve": serve_doc}


def _written(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / f"{doc['benchmark']}.json"
    path.write_text(json.dumps(doc))
    return path


def _looks_drawn(png: Path) -> Image.Image:
    """A real PNG, at least 600x400, whose pixels vary (a blank or one-colour canvas has no variance)."""
    image = Image.open(png)
    assert image.format == "PNG"
    assert image.width >= 600 and image.height >= 400, image.size
    grey = image.convert("L")
    assert ImageStat.Stat(grey).var[0] > 500, ImageStat.Stat(grey).var  # mostly white with lines, bars and text
    colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # anti-aliased text and markers, not a few flat fills
    return image


def test_every_benchmark_has_a_chart():
    assert set(registry.BENCHMARKS) <= set(charts.CHARTS)


@pytest.mark.parametrize("name", sorted(DOCS))
def test_each_chart_is_drawn_from_its_json_beside_it(tmp_path, name):
    # GIVEN a small document of the shape the benchmark writes, in a JSON file
    path = _written(tmp_path, DOCS[name]())
    # WHEN the chart is drawn again from it
    png = charts.redraw(path)
    # THEN it lies beside the JSON, a PNG of a sensible size with something drawn on it
    assert png == tmp_path / f"{name}.png"
    _looks_drawn(png)


def test_the_coldstart_chart_adds_the_memory_panel_when_the_json_has_the_memory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_memory = _looks_drawn(charts.redraw(_written(tmp_path / "a", coldstart_doc(memory=True))))
    without = _looks_drawn(charts.redraw(_written(tmp_path / "b", coldstart_doc(memory=False))))
    assert with_memory.height == without.height and with_memory.width == 2 * without.width


def test_the_build_chart_shows_the_largest_packages_and_the_rest_in_one_bar(tmp_path):
    # GIVEN a build document listing 17 packages' bytes on both sides
    doc = build_doc(packages=True)
    # WHEN its chart is drawn
    panel = charts.build(doc).axes[0]
    # THEN the first panel has a bar pair per package, the largest on top, twelve of them and the other five in one
    labels = [t.get_text() for t in panel.get_yticklabels()][::-1]
    assert labels[:3] == ["torch", "numpy", "pillow"] and len(labels) == 13 and labels[-1] == "5 others"
    widths = sorted((round(p.get_width(), 1) for p in panel.patches), reverse=True)
    assert widths[:2] == [500.0, 350.0]  # torch, naive then hoist, in MB
    assert round(sum(p.get_width() for p in panel.patches), 1) == round((sum(doc["figures"]["naive"]["packages"].values()) + sum(doc["figures"]["hoist"]["packages"].values())) / 1e6, 1)
    # and without the packages, the panel is the two totals
    totals = charts.build(build_doc(packages=False)).axes[0]
    assert [round(p.get_height()) for p in totals.patches] == [660, 458]
    _looks_drawn(charts.redraw(_written(tmp_path, doc)))


def test_the_build_chart_adds_the_native_rebuild_beside_the_benchmarked_one_when_the_json_has_it(tmp_path):
    # GIVEN a build document of a foreign target with its one-package changes, and the same changes for the native target
    doc = build_doc()
    doc["figures"]["one_package"] = {"leaf": {"seconds": 8.3, "ratio": 0.79, "target": "lambda"}, "numpy": {"seconds": 20.8, "ratio": 1.82, "target": "lambda"}}
    without = [t.get_text() for t in charts.build(doc).axes[2].get_xticklabels()]
    doc["figures"]["one_package_native"] = {"leaf": {"seconds": 8.9, "ratio": 0.76, "target": "local"}, "numpy": {"seconds": 11.1, "ratio": 0.78, "target": "local"}}
    # WHEN the chart is drawn
    panel = charts.build(doc).axes[2]
    # THEN the wall-time panel has one more bar, the slower native change's seconds, right after the benchmarked change
    labels = [t.get_text() for t in panel.get_xticklabels()]
    assert len(labels) == len(without) + 1
    at = labels.index("1 package\nchanged")
    assert labels[at + 1] == "same on\nlocal"
    heights = [round(p.get_height(), 1) for p in panel.patches]
    assert heights[at] == 20.8 and heights[at + 1] == 11.1
    _looks_drawn(charts.redraw(_written(tmp_path, doc)))


def test_a_document_the_chart_cannot_read_names_the_file_and_the_fix(tmp_path):
    doc = serve_doc()
    del doc["figures"]["direct_model_ms"]
    path = _written(tmp_path, doc)
    with pytest.raises(BenchError) as err:
        charts.redraw(path)
    assert str(path) in str(err.value) and "direct_model_ms" in str(err.value) and "invoke bench serve" in str(err.value)
    assert not (tmp_path / "serve.png").exists()
    with pytest.raises(BenchError, match="run `invoke bench sync` first"):
        charts.redraw(tmp_path / "sync.json")


def test_record_writes_the_chart_beside_the_json(tmp_path, monkeypatch):
    # GIVEN the shared writer pointed at a folder of the test
    monkeypatch.setattr(record, "RESULTS", tmp_path / "results")
    figures = serve_doc()["figures"]
    # WHEN a benchmark writes its figures
    _, path = record.write("serve", "invoke bench serve", figures=figures)
    # THEN the JSON and its chart are there, in the same call
    assert json.loads(path.read_text())["figures"] == figures
    _looks_drawn(path.with_suffix(".png"))


def test_chart_only_redraws_without_running_the_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    _written(tmp_path, sync_doc())

    def not_run(*args, **kwargs):
        raise AssertionError("--chart-only ran the benchmark")

    monkeypatch.setitem(registry.BENCHMARKS, "sync", not_run)
    tasks.bench(MockContext(), "sync", chart_only=True)
    _looks_drawn(tmp_path / "sync.png")
    assert f"chart: {tmp_path / 'sync.png'}" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_committed_charts_are_drawn_from_the_committed_json(name):
    """bench/results/<name>.png is there for every JSON, and newer than nothing it was drawn from: the same pixels
    as a redraw of the JSON beside it (a JSON rewritten by hand without --chart-only fails here)."""
    results = Path(record.__file__).with_name("results")
    committed = results / f"{name}.png"
    assert committed.is_file(), f"{committed} missing: invoke bench {name} --chart-only"
    fresh = charts.CHARTS[name](json.loads((results / f"{name}.json").read_text()))
    import io

    buffer = io.BytesIO()
    fresh.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    assert Image.open(committed).tobytes() == Image.open(buffer).tobytes(), f"stale chart: invoke bench {name} --chart-only"
