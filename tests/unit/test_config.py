"""pipeline.toml: the shipped demo loads, and every bad input names its key and fix."""
from __future__ import annotations

import subprocess

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import REPO, write_pipeline


def test_shipped_pipeline_is_the_arm64_demo():
    cfg = config.load(REPO / "pipeline.toml")
    t = cfg.target().target
    assert (t.runtime, t.arch, t.python, t.glibc) == ("python3.13", "arm64", "3.13", "2.34")
    assert cfg.sets["efs"].lines == ("torch==2.9.1", "torchvision==0.24.1")
    assert cfg.sets["layer"].names() == {"pillow"}
    local = cfg.target("local")
    assert local.target.kind == "local" and local.override == ("torch==2.13.0+cpu",) and local.exclude == ("torchvision",)
    assert local.pip_config_find_links  # the machine's wheel folder is read at run time, not written here


def test_the_committed_config_and_locks_name_no_path_of_this_machine():
    tracked = subprocess.run(["git", "ls-files", "pipeline.toml", "requirements/"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = [REPO / f for f in tracked if f.endswith((".toml", ".lock"))]
    assert len(files) >= 3
    for path in files:
        text = path.read_text()
        for fragment in ("file://", "/opt/wheels", "/root/", ".pyenv", "/work/", "/home/"):
            assert fragment not in text, f"{path.name} names {fragment}"


@pytest.mark.parametrize(
    ("old", "new", "key", "fix"),
    [
        ('runtime = "python3.13"', 'runtime = "python3.8"', "targets.arm.runtime", 'runtime = "python3.13"'),
        ('arch = "arm64"', 'arch = "aarch64"', "targets.arm.arch", 'arch = "arm64"'),
        ('mount_path = "/mnt/test"', 'mount_path = "/efs/test"', "efs.mount_path", "/mnt/hoist"),
        ('mount_path = "/mnt/test"', 'mount_path = "/mnt/a/b"', "efs.mount_path", "single directory"),
        ('name = "test-fn"', 'name = "bad name!"', "function.name", "hoist-classifier"),
        ('[sets.layer]', '[sets.extra]', "sets.extra", "[sets.layer]"),
        ('kind = "local"', 'kind = "laptop"', "targets.local.kind", 'kind = "lambda"'),
        ('default_target = "local"', 'default_target = "prod"', "default_target", "local"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(project, wheelhouse, old, new, key, fix):
    path = write_pipeline(project, wheelhouse, {old: new})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert key in text and "fix:" in text and fix in text


def test_a_package_in_both_sets_is_refused(project):
    (project / "requirements" / "layer.in").write_text("layerpkg\nNativePkg>=0.5  # same package, other spelling\n")
    with pytest.raises(ConfigError, match="nativepkg pinned in both sets") as err:
        config.load(project / "pipeline.toml")
    assert "remove the line from one of the two .in files" in str(err.value)


def test_a_missing_requirements_file_is_named(project):
    (project / "requirements" / "efs.in").unlink()
    with pytest.raises(ConfigError, match=r"efs\.in does not exist") as err:
        config.load(project / "pipeline.toml")
    assert "sets.efs.requirements" in str(err.value)


def test_options_in_requirements_belong_in_the_config(project):
    (project / "requirements" / "efs.in").write_text("--extra-index-url https://example.invalid/simple\nnativepkg\n")
    with pytest.raises(ConfigError, match="option line") as err:
        config.load(project / "pipeline.toml")
    assert "[[index]]" in str(err.value)


def test_unknown_target_on_the_command_line(project):
    cfg = config.load(project / "pipeline.toml")
    with pytest.raises(ConfigError, match="no target named 'x86'") as err:
        cfg.target("x86")
    assert "arm, local" in str(err.value)


def test_index_packages_and_find_links_are_read(project, wheelhouse):
    path = write_pipeline(project, wheelhouse, {"[build]": '[[index]]\nname = "pytorch-cpu"\nurl = "https://download.pytorch.org/whl/cpu"\npackages = ["Torch"]\n\n[build]'})
    cfg = config.load(path)
    assert cfg.indexes[0].packages == ("torch",)
    assert cfg.find_links == (str(wheelhouse),) and cfg.no_index


def test_config_errors_happen_before_any_download(project, wheelhouse, monkeypatch):
    """A bad config fails in load(); lock never gets to run uv."""
    from builder import lock as lock_mod

    monkeypatch.setattr(lock_mod.proc, "run", lambda *a, **k: pytest.fail("uv was started"))
    path = write_pipeline(project, wheelhouse, {'runtime = "python3.13"': 'runtime = "python4.0"'})
    with pytest.raises(ConfigError):
        lock_mod.lock(config.load(path), "arm")


def test_slim_and_validate_settings_are_read_and_checked(tmp_path, wheelhouse):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("nativepkg\n")
    (tmp_path / "requirements" / "layer.in").write_text("layerpkg\n")
    extra = ('[slim]\nenabled = true\ndisable = ["type-stubs"]\nkeep = ["x/**"]\n[slim.sets.layer]\nkeep = ["PIL/**"]\n[slim.packages.Scikit_Image]\nkeep = ["skimage/**/*.pyi"]\n'
             '[validate]\nwaive = [{ rule = "needed-libraries", files = "efs:a/*.so", reason = "optional" }]\n\n[build]')
    write_pipeline(tmp_path, wheelhouse, {"[build]": extra})
    cfg = config.load(tmp_path / "pipeline.toml")
    assert cfg.slim == config.SlimConfig(enabled=True, disable=("type-stubs",), keep=("x/**",), set_keep={"layer": ("PIL/**",)}, package_keep={"scikit-image": ("skimage/**/*.pyi",)})
    assert cfg.waivers == (config.Waiver("needed-libraries", "efs:a/*.so", "optional"),)
    assert config.load(REPO / "pipeline.toml").slim == config.SlimConfig() and config.load(REPO / "pipeline.toml").waivers == ()


@pytest.mark.parametrize(
    ("table", "key", "fix"),
    [
        ("[slim]\nenabled = 1", "slim.enabled", "bool"),
        ("[slim]\nkeep = ['/abs/**']", "slim.keep", "skimage/**/*.pyi"),
        ("[slim]\nsets.lambda.keep = ['x']", "slim.sets.lambda", "efs, layer"),
        ("[slim]\nrules = []", "slim", "disable"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'a.so', reason = 'r' }]", "validate.waive[0].files", "efs:"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'efs:a.so', reason = ' ' }]", "validate.waive[0].reason", "printed on every run"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'efs:a.so' }]", "validate.waive[0].reason", "reason"),
    ],
)
def test_bad_slim_and_validate_settings_name_the_key(tmp_path, wheelhouse, table, key, fix):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("nativepkg\n")
    (tmp_path / "requirements" / "layer.in").write_text("layerpkg\n")
    write_pipeline(tmp_path, wheelhouse, {"[build]": table + "\n\n[build]"})
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "pipeline.toml")
    assert key in (err.value.where or "") and fix in (err.value.fix or "")
