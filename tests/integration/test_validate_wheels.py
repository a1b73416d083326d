"""Real wheels from PyPI through the static checks: the classic failures of real packages."""
from __future__ import annotations

import pytest

from pipeline import proc
from validate.stage import from_tree

pytestmark = [pytest.mark.network, pytest.mark.slow]


def _install(dest, requirement, python, platform="x86_64-manylinux_2_34"):
    proc.run(
        [proc.uv_bin(), "pip", "install", "--no-config", "--no-python-downloads", "--quiet", "--target", str(dest), "--python-platform", platform,
         "--python-version", python, "--only-binary", ":all:", "--no-deps", requirement],
        what=f"installing {requirement}",
    )
    return dest


def test_opencv_fails_on_libgl_and_headless_passes(tmp_path):
    gui = from_tree(_install(tmp_path / "gui", "opencv-python==5.0.0.93", "3.12"), "python3.12", "x86_64")
    libgl = [f for f in gui.errors if f.rule == "needed-libraries" and "libGL.so.1" in f.message]
    assert libgl and all(f.package == "opencv-python" for f in libgl)
    assert "opencv-python-headless" in libgl[0].fix
    headless = from_tree(_install(tmp_path / "headless", "opencv-python-headless==5.0.0.93", "3.12"), "python3.12", "x86_64")
    assert headless.ok, [f.as_json() for f in headless.errors]


def test_manylinux_2_28_wheel_fails_on_python3_11_and_passes_on_python3_12(tmp_path):
    al2 = from_tree(_install(tmp_path / "p311", "pillow==13.0.0", "3.11"), "python3.11", "x86_64")
    rules = {f.rule for f in al2.errors}
    assert {"wheel-tags", "symbol-versions"} <= rules
    assert any("GLIBC_2.26" in f.message for f in al2.errors if f.rule == "symbol-versions")
    al2023 = from_tree(_install(tmp_path / "p312", "pillow==13.0.0", "3.12"), "python3.12", "x86_64")
    assert al2023.ok, [f.as_json() for f in al2023.errors]
