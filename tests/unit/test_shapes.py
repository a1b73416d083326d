"""The shape is one choice in pipeline.toml ([function] package), decided in pipeline/shapes.py; what SnapStart and
Lambda refuse by configuration is refused at load, with a fix that, applied, loads."""
from __future__ import annotations

import pytest

from pipeline import config, shapes
from pipeline.errors import ConfigError
from tests.conftest import write_pipeline

DEPLOY = '\n[deploy]\nstack_name = "s"\nregion = "eu-west-1"\nartifact_bucket = "my-bucket"\n'
VPC = 'vpc_id = "vpc-0123456789abcdef0"\nsubnet_ids = ["subnet-0123456789abcdef0"]\nroute_table_ids = ["rtb-0123456789abcdef0"]\n'


def _with(project, wheelhouse, function_lines: str, deploy: str | None = None):
    path = write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\n' + function_lines})
    if deploy is not None:
        path.write_text(path.read_text() + DEPLOY + deploy)
    return path


def test_efs_is_the_default_shape_and_image_is_one_line(project, wheelhouse):
    efs = shapes.shape_of(config.load(write_pipeline(project, wheelhouse)))
    assert (efs.name, efs.uses_efs, efs.needs_vpc, efs.syncs, efs.snapstart, efs.artifact) == ("efs", True, True, True, False, "zips")
    image = shapes.shape_of(config.load(_with(project, wheelhouse, 'package = "image"')))
    # SnapStart on by default for an image; no EFS, no VPC, no sync (issue 24)
    assert (image.name, image.uses_efs, image.needs_vpc, image.syncs, image.snapstart, image.artifact) == ("image", False, False, False, True, "image")
    assert image.flow().index("deploy: repository") < image.flow().index("push by digest") < image.flow().index("deploy: function (PackageType Image, SnapStart)")
    off = shapes.shape_of(config.load(_with(project, wheelhouse, 'package = "image"\nsnapstart = false')))
    assert not off.snapstart


def test_an_image_needs_no_vpc_and_an_efs_function_does(project, wheelhouse):
    image = config.load(_with(project, wheelhouse, 'package = "image"', deploy=""))
    assert image.deploy is not None and not image.deploy.vpc_id and not shapes.shape_of(image).needs_vpc
    with pytest.raises(ConfigError) as err:
        config.load(_with(project, wheelhouse, "", deploy=""))
    assert "runs in a VPC" in str(err.value) and 'package = "image"' in str(err.value)
    assert shapes.shape_of(config.load(_with(project, wheelhouse, "", deploy=VPC))).needs_vpc
    assert shapes.shape_of(config.load(_with(project, wheelhouse, 'package = "image"', deploy=VPC))).needs_vpc  # asked for: kept


def test_snapstart_with_efs_is_refused_with_the_fix(project, wheelhouse):
    path = _with(project, wheelhouse, "snapstart = true")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "function" in text and "EFS" in text and 'package = "image"' in text
    path.write_text(path.read_text().replace("snapstart = true", 'snapstart = true\npackage = "image"'))
    assert shapes.shape_of(config.load(path)).snapstart  # the fix, applied, loads


def test_ephemeral_storage_over_512_mb_with_snapstart_is_refused_with_the_fix(project, wheelhouse):
    path = _with(project, wheelhouse, 'package = "image"', deploy="ephemeral_storage_mb = 1024\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "512 MB" in text and "1024" in text and "ephemeral_storage_mb = 512" in text
    path.write_text(path.read_text().replace("ephemeral_storage_mb = 1024", "ephemeral_storage_mb = 512"))
    assert config.load(path).deploy.ephemeral_storage_mb == 512
    # without SnapStart, Lambda takes up to 10,240 MB
    off = _with(project, wheelhouse, 'package = "image"\nsnapstart = false', deploy="ephemeral_storage_mb = 1024\n")
    assert config.load(off).deploy.ephemeral_storage_mb == 1024


def test_an_unknown_package_names_the_two_shapes(project, wheelhouse):
    with pytest.raises(ConfigError) as err:
        config.load(_with(project, wheelhouse, 'package = "zip"'))
    assert "function.package" in str(err.value) and '"efs"' in str(err.value) and '"image"' in str(err.value)


def test_an_image_needs_no_efs_table_and_an_efs_function_does(project, wheelhouse):
    path = _with(project, wheelhouse, 'package = "image"')
    text = path.read_text()
    start = text.index("[efs]")
    end = text.index("[function]")
    path.write_text(text[:start] + text[end:])
    assert shapes.shape_of(config.load(path)).name == "image"  # no [efs]: fine for an image
    path.write_text(path.read_text().replace('package = "image"\n', ""))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "[efs]" in str(err.value) and 'package = "image"' in str(err.value)


@pytest.mark.parametrize("region", ["ap-southeast-6", "ap-east-2", "ca-west-1"])
def test_the_region_is_checked_for_what_the_shape_needs(project, wheelhouse, region):
    """An image mounts no EFS: a region without EFS for Lambda is refused for the efs shape only (Lambda Developer Guide,
    "Configuring file system access", Supported Regions). An image with SnapStart needs SnapStart there: every commercial
    region except Asia Pacific (New Zealand) and (Taipei) ("Improving startup performance with Lambda SnapStart", Supported Regions)."""
    deploy = DEPLOY.replace('region = "eu-west-1"', f'region = "{region}"')
    efs = write_pipeline(project, wheelhouse)
    efs.write_text(efs.read_text() + deploy + VPC)
    with pytest.raises(ConfigError) as err:
        config.load(efs)
    assert f"Lambda cannot mount EFS in {region}" in str(err.value) and 'package = "image"' in str(err.value)
    assert err.value.where == "pipeline.toml: deploy.region"  # the key, though the check is of the whole file
    image = _with(project, wheelhouse, 'package = "image"')
    image.write_text(image.read_text() + deploy)
    if region in ("ap-southeast-6", "ap-east-2"):  # New Zealand, Taipei: no SnapStart either
        with pytest.raises(ConfigError) as err:
            config.load(image)
        assert f"SnapStart is not available in {region}" in str(err.value) and "snapstart = false" in str(err.value)
        image.write_text(image.read_text().replace('package = "image"', 'package = "image"\nsnapstart = false'))  # the fix, applied, loads
    loaded = config.load(image)
    assert loaded.deploy is not None and loaded.deploy.region == region


@pytest.mark.parametrize("ref, says", [
    ("public.ecr.aws/lambda/python:3.13-arm64@sha256:<digest>", "placeholder"),  # docs/image.md's example, as a fresh-clone trial pasted it
    ("public.ecr.aws/lambda/python:3.13-arm64@sha256:abc", "is not a digest"),
    ("public.ecr.aws/lambda/python:latest", "not pinned"),
])
def test_a_base_image_that_is_not_a_pinned_reference_is_refused_at_load(project, wheelhouse, ref, says):
    path = write_pipeline(project, wheelhouse, {'handler_dir = "handler"': f'handler_dir = "handler"\nbase_image = "{ref}"'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert says in str(err.value) and "build.base_image" in str(err.value) and "RepoDigests" in str(err.value)
    good = "public.ecr.aws/lambda/python:3.13-arm64@sha256:" + "0" * 64
    path.write_text(path.read_text().replace(ref, good))
    assert config.load(path).build.base_image == good
