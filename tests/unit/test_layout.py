"""Where a version lives, as each client sees it (pipeline/layout.py)."""
from __future__ import annotations

import pytest

from pipeline.layout import client_root, kind_dir, root_dir, version_dir


def test_a_client_of_the_access_point_sees_its_root_as_slash_and_never_repeats_it():
    # the function (its access point mounted at /mnt/hoist), DataSync and the bastion through the writer access point
    assert version_dir("/mnt/hoist", "/hoist", "abc", through_access_point=True) == "/mnt/hoist/envs/abc"
    assert version_dir("/", "/hoist", "abc", through_access_point=True) == "/envs/abc"
    assert root_dir("/mnt/efs", "/hoist", through_access_point=True) == "/mnt/efs"
    assert client_root("/hoist", through_access_point=True) == "/"


def test_a_client_of_the_file_system_root_sees_efs_root_once():
    assert version_dir("/mnt/efs/", "/hoist/", "abc", through_access_point=False) == "/mnt/efs/hoist/envs/abc"
    assert version_dir("/", "/a/b", "abc", "models", through_access_point=False) == "/a/b/models/abc"
    assert kind_dir("/srv/standin", "/hoist", through_access_point=False) == "/srv/standin/hoist/envs"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        kind_dir("/", "/hoist", "tmp", through_access_point=True)
