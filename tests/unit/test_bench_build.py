"""`invoke bench build` picks the target whose import check runs natively, for a foreign target's reference figures."""
from __future__ import annotations

import platform
from pathlib import Path

from bench import build_size
from pipeline import config

REPO = Path(__file__).resolve().parents[2]


def test_a_foreign_default_target_is_measured_again_on_the_local_target_of_this_cpu():
    # GIVEN the shipped config: the arm64 Lambda target by default, and a local target of this machine
    cfg = config.load(REPO / "pipeline.toml")
    foreign = cfg.target(None).target.machine != platform.machine()
    # WHEN the benchmark asks which target shows the same changes with a native import check
    # THEN on a machine other than arm64 it is `local`; a target that already runs natively needs none
    assert build_size.native_target(cfg, None) == ("local" if foreign else None)
    assert build_size.native_target(cfg, "local") is None


def test_no_native_target_is_invented_when_the_config_has_none(project, wheelhouse):
    # GIVEN a project of one arm64 Lambda target and no local one (this machine is not arm64)
    from tests.conftest import write_pipeline

    assert platform.machine() != "aarch64"
    write_pipeline(project, wheelhouse, {'default_target = "local"': 'default_target = "arm"', '[targets.local]\nkind = "local"\npython = "{}.{}"\n'.format(*__import__("sys").version_info[:2]): ""})
    cfg = config.load(project / "pipeline.toml")
    assert list(cfg.targets) == ["arm"]
    # THEN the benchmark has no native reference to add
    assert build_size.native_target(cfg, None) is None
