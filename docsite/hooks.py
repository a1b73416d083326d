"""The MkDocs hook of the documentation site (mkdocs.yml `hooks:`): adds the benchmarks' charts (bench/results/*.png, as
bench/<name>.png) to the site's files at every build, and points a page's links to them (written
``../bench/results/<name>.png``, the path a clone and GitHub resolve from docs/) at those copies; nothing generated is
written into docs/. The reference pages are committed in docs/reference/ (docsite/reference.py writes them; a test
keeps them current)."""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

CHARTS = Path(__file__).resolve().parent.parent / "bench" / "results"
REPO_LINK = re.compile(r"\]\(\.\./bench/results/([\w.-]+\.png)\)")  # a chart as the repository holds it, from a page in docs/


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for png in sorted(CHARTS.glob("*.png")):
        files.append(File.generated(config, f"bench/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return REPO_LINK.sub(r"](bench/\1)", markdown)
