"""The MkDocs hook of the documentation site (mkdocs.yml `hooks:`): adds the generated reference pages
(docsite/reference.py) and the benchmarks' charts (bench/results/*.png, as bench/<name>.png) to the site's files,
at every build; nothing generated is written into docs/."""
from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
# `mkdocs build` from any folder: the project's modules are imported now, while the hook loads (MkDocs puts
# sys.path back as it was once the hook is loaded, so docsite.reference imports all it needs at its top)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from docsite import reference  # noqa: E402

CHARTS = REPO / "bench" / "results"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, text in reference.pages().items():
        files.append(File.generated(config, uri, content=text))
    for png in sorted(CHARTS.glob("*.png")):
        files.append(File.generated(config, f"bench/{png.name}", abs_src_path=str(png)))
    return files
