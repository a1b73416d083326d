"""The MkDocs hook of the documentation site (mkdocs.yml `hooks:`): adds the benchmarks' charts (bench/results/*.png, as
bench/<name>.png) to the site's files at every build; nothing generated is written into docs/. The reference pages are
committed in docs/reference/ (docsite/reference.py writes them; a test keeps them current)."""
from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

CHARTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for png in sorted(CHARTS.glob("*.png")):
        files.append(File.generated(config, f"bench/{png.name}", abs_src_path=str(png)))
    return files
