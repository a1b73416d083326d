"""The documentation site (mkdocs.yml, docsite/): strict mode fails a broken link, a missing page and a page left out
of the nav; the theme loads nothing from the internet; the generated references say what the schema, invoke's help
and the policy document say."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from docsite import reference
from tests.conftest import REPO


def _site_config() -> dict:
    """The repository's mkdocs.yml (it holds no Python tags: a plain YAML load reads it)."""
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def build_tiny(tmp_path: Path, pages: dict[str, str], nav: list, hooks: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """A site of ``pages`` with the repository's theme, strictness and validation (and its hook, if given), not its pages."""
    repo = _site_config()
    cfg = {k: repo[k] for k in ("site_name", "strict", "theme", "markdown_extensions", "validation")} | {"docs_dir": "docs", "nav": nav}
    if hooks:
        cfg["hooks"] = [str(REPO / h) for h in hooks]
    for name, text in pages.items():
        (tmp_path / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / name).write_text(text)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "site")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_site_is_strict_and_every_check_is_a_warning():
    cfg = _site_config()
    assert cfg["strict"] is True and cfg["theme"]["font"] is False
    assert set(cfg["validation"].values()) == {"warn"} and set(cfg["validation"]) >= {"omitted_files", "not_found", "anchors", "unrecognized_links"}
    assert "plugins" not in cfg  # no plugin that downloads (material's privacy or social plugins); search is the theme's own
    assert cfg["hooks"] == ["docsite/hooks.py"]


def test_strict_mode_fails_a_broken_link_a_missing_page_and_a_page_left_out_of_the_nav(tmp_path):
    # GIVEN a tiny site that builds
    good = {"index.md": "# Home\n\nSee [the other page](other.md#part).\n", "other.md": "# Other\n\n## Part\n"}
    nav = [{"Home": "index.md"}, {"Other": "other.md"}]
    ok = build_tiny(tmp_path / "ok", good, nav)
    assert ok.returncode == 0, ok.stderr
    # and whose pages load nothing from elsewhere (no web font, no script or stylesheet of a CDN)
    html = (tmp_path / "ok" / "site" / "index.html").read_text()
    assert not re.findall(r'<(?:link|script)[^>]+(?:href|src)="(?:https?:)?//', html)
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    # WHEN a link points at a page that is not there  THEN the build fails, naming it
    broken = build_tiny(tmp_path / "broken", good | {"index.md": "# Home\n\nSee [gone](gone.md).\n"}, nav)
    assert broken.returncode != 0 and "gone.md" in broken.stderr, broken.stderr
    # WHEN a link's anchor is not on its page  THEN too
    anchor = build_tiny(tmp_path / "anchor", good | {"index.md": "# Home\n\nSee [it](other.md#nowhere).\n"}, nav)
    assert anchor.returncode != 0 and "nowhere" in anchor.stderr, anchor.stderr
    # WHEN the nav names a page that is not there  THEN too
    missing = build_tiny(tmp_path / "missing", good, nav + [{"Lost": "lost.md"}])
    assert missing.returncode != 0 and "lost.md" in missing.stderr, missing.stderr
    # WHEN a page is left out of the nav  THEN too
    omitted = build_tiny(tmp_path / "omitted", good | {"stray.md": "# Stray\n"}, nav)
    assert omitted.returncode != 0 and "stray.md" in omitted.stderr, omitted.stderr


def test_the_hook_adds_the_charts(tmp_path):
    # GIVEN a tiny site with the repository's hook, whose page shows every chart
    charts = sorted(p.stem for p in (REPO / "bench" / "results").glob("*.json"))
    # linked as the repository holds them (what a clone and GitHub resolve from docs/), the first also as the site does
    index = "# Home\n\n" + "".join(f"![{name}](../bench/results/{name}.png)\n" for name in charts) + f"![again](bench/{charts[0]}.png)\n"
    # WHEN it is built strictly, from another folder
    built = build_tiny(tmp_path, {"index.md": index}, [{"Home": "index.md"}], hooks=("docsite/hooks.py",))
    # THEN the charts are there (strict mode would fail a link to a missing one), and nothing was written into docs/
    assert built.returncode == 0, built.stderr
    assert all((tmp_path / "site" / "bench" / f"{name}.png").read_bytes() == (REPO / "bench" / "results" / f"{name}.png").read_bytes() for name in charts)
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["index.md"]
    html = (tmp_path / "site" / "index.html").read_text()
    assert all(f'src="bench/{name}.png"' in html for name in charts) and "../bench/results" not in html


def test_the_committed_reference_pages_are_what_the_code_generates_now(tmp_path):
    """docs/reference/ is committed (a clone and GitHub show it); a page that differs from its generator fails here,
    with the command that writes it again."""
    generated = reference.pages()
    assert all(page in json.dumps(_site_config()["nav"]) for page in generated)
    for rel, text in generated.items():
        committed = REPO / "docs" / rel
        assert committed.is_file() and committed.read_text() == text, f"docs/{rel} is stale: python3 -m docsite.reference"
    # and the command writes exactly those pages (here into another folder)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in reference.write(tmp_path)) == sorted(generated)
    assert reference.write(tmp_path) == []  # current: nothing written


# ---------------------------------------------------------------- pipeline.toml


def _keys(table: dict, path: str = "") -> set[str]:
    """table.key of every scalar key of a TOML document (tables of tables by their placeholder)."""
    out = set()
    for key, value in table.items():
        if isinstance(value, dict) and path in ("", "slim") and key in ("targets",):
            for inner in value.values():
                out |= _keys(inner, f"{key}.<name>")
        elif isinstance(value, dict) and key != "environment":
            out |= _keys(value, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in value:
                out |= _keys(inner, f"{path}.{key}" if path else key)
        else:
            out.add(f"{path}.{key}" if path else key)
    return out


def _rows(page: str) -> dict[str, dict[str, str]]:
    """table path -> key -> its row, read from the generated page's headings and tables."""
    tables: dict[str, dict[str, str]] = {}
    current = ""
    for line in page.splitlines():
        if line.startswith("### "):
            heading = line[4:].strip("` ")
            current = "" if heading == "The top level" else heading.strip("[]")
            tables[current] = {}
        elif line.startswith("| `"):
            key = line.split("`", 2)[1]
            tables[current][key] = line
        elif line.startswith("The same keys as "):
            tables[current] = tables[line.split("`")[1].strip("[]")]
    return tables


def test_the_pipeline_toml_reference_has_every_key_of_the_repository_s_file():
    page = reference.pipeline_toml()
    rows = _rows(page)
    written = _keys(tomllib.loads((REPO / "pipeline.toml").read_text()))
    for dotted in written:
        table, _, key = dotted.rpartition(".")
        assert key in rows.get(table, {}), f"{dotted} is not in the reference"


def test_the_pipeline_toml_reference_says_types_defaults_limits_and_allowed_values():
    rows = _rows(reference.pipeline_toml())
    memory = rows["function"]["memory_mb"]
    assert "| integer | `3008` |" in memory and "at least 128; at most 10240" in memory and "`memory_mb = 3008`" in memory
    assert '`"native"`, `"docker"`, `"auto"`' in rows["build"]["builder"]
    assert "**required**" in rows["function"]["name"] and "**required**" in rows["deploy"]["stack_name"]
    assert "required for package = \"efs\"" in rows["deploy"]["vpc_id"]  # the EFS shape needs a VPC; an image does not (pipeline/shapes.py)
    runtimes = json.loads((REPO / "pipeline" / "runtimes.json").read_text())["runtimes"]
    assert all(f"`{r}`" for r in runtimes) and all(f"`{r}`" in rows["targets.<name>"]["runtime"] for r in runtimes)
    assert "3653" in rows["deploy"]["log_retention_days"] and "`ca-west-1`" in rows["deploy"]["region"]
    assert "model_dir" not in rows["deploy"]  # set by load from [model] dir; writing it is an error
    assert "rsync --bwlimit" in rows["sync"]["bwlimit_kbps"]  # a key's comment in the source, when it has no description
    assert "&lt;module&gt;.&lt;function&gt;" in rows["function"]["handler"]  # no <placeholder> swallowed as HTML


def test_a_key_added_to_the_schema_is_in_the_reference():
    """The reference follows the models: a new table, array of tables, choice or comment shows without other edits."""

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        label: str = Field(description="what the item is called", examples=["first"])

    class Extra(BaseModel):
        """A table of the test."""

        model_config = ConfigDict(extra="forbid")
        mode: Literal["fast", "slow"] = "fast"
        level: int = Field(2, ge=1, le=5)  # how hard to try
        items: tuple[Item, ...] = ()

    class File(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        extra: Extra = Extra()
        per: dict[str, Item] = {}

    rows = _rows(page := reference.pipeline_toml(File))
    assert "| string | **required** |" in rows[""]["name"]
    assert '`"fast"`, `"slow"`' in rows["extra"]["mode"] and "how hard to try" in rows["extra"]["level"] and "at least 1; at most 5" in rows["extra"]["level"]
    assert "what the item is called" in rows["extra.items"]["label"] and "`[[extra.items]]`" in page and "A table of the test." in page
    assert "### `[per.<name>]`" in page


# ---------------------------------------------------------------- tasks


def test_the_task_reference_is_invoke_s_own_help_of_every_task():
    import tasks

    page = reference.task_reference()
    sections = dict(re.findall(r"## invoke (\S+)\n\n```text\n(.*?)\n```", page, re.S))
    assert list(sections) == list(tasks.ns.task_names)
    for name in ("deploy", "bench"):  # the command line's own output, as a user sees it
        shown = subprocess.run([sys.executable, "-m", "invoke", "--help", name], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
        assert sections[name] == shown.rstrip()
    assert "--chart-only" in sections["bench"] and "--sync-method" in sections["deploy"]


# ---------------------------------------------------------------- permissions


def test_the_permissions_page_lists_every_statement_of_every_role_with_its_actions():
    doc = json.loads((REPO / "deploy" / "policies" / "bootstrap.json").read_text())
    page = reference.permissions()
    lines = page.splitlines()
    policies = [r["Properties"].get("PolicyDocument") for r in doc["Resources"].values()]
    policies += [p["PolicyDocument"] for r in doc["Resources"].values() for p in r["Properties"].get("Policies", [])]
    policies += [r["Properties"]["AssumeRolePolicyDocument"] for r in doc["Resources"].values() if "AssumeRolePolicyDocument" in r["Properties"]]
    statements = [s for p in policies if p for s in p["Statement"]]
    assert len(statements) > 10
    for s in statements:
        row = next((line for line in lines if s.get("Sid") and line.startswith(f"| {s['Sid']} |")), None) if s.get("Sid") else None
        if row is None:  # a statement without a name (the service role's trust): found by its action
            row = next(line for line in lines if line.startswith("|  |") and f"`{s['Action']}`" in line)
        for action in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
            assert f"`{action}`" in row, (s.get("Sid"), action)
        assert ("**Deny**" in row) == (s["Effect"] == "Deny")
    assert page.count("## ") >= len(doc["Resources"]) and all(f"## {name}" in page for name in doc["Resources"])
    assert "`token.actions.githubusercontent.com:sub` = `<GitHubSubject>`" in page  # the trust's one subject, from a parameter


@pytest.mark.parametrize("value, shown", [({"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/*"}, "arn:${AWS::Partition}:s3:::${ArtifactBucket}/*"),
                                          ({"Ref": "Boundary"}, "<Boundary>"), ("*", "*")])
def test_cloudformation_values_are_shown_as_written(value, shown):
    assert reference._value(value) == shown


# ---------------------------------------------------------------- the README


def test_the_readme_is_a_front_door_whose_links_reach_pages_of_the_site():
    """The README fits on a few screens, gives the path to a served prediction in its first screenful, and every
    link of it names a page of the site that exists, with its anchor (strict mode checks docs/, not the README)."""
    readme = (REPO / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:50])
    for step in ("python3 -m pip install -r requirements/tooling.txt && invoke build", "invoke validate", "invoke serve", "http://127.0.0.1:8000"):
        assert step in first_screen, step
    assert "python3 -m pip install -r requirements/tooling.txt && invoke test" in readme
    nav = json.dumps(_site_config()["nav"])
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", readme)
    assert len(links) > 10
    for path, anchor in links:
        page = REPO / path
        assert page.is_file() and f'"{path.removeprefix("docs/")}"' in nav, path
        if anchor:  # the heading's id as MkDocs makes it (toc's slugify: lower case, punctuation dropped, spaces to -)
            ids = {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h.strip().lower())) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
            assert anchor in ids, (path, anchor)
