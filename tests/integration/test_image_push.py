"""The image shape's artifact through a real daemon and a real registry on 127.0.0.1 (Debian's docker-registry):
the layout loads as the image whose id is its config digest, the push gives the registry's digest, equal inputs
push to an equal digest, and a handler-only change sends the handler's layer only (well under 1 MB) while the
heavy set's layer keeps its digest in the registry. Small trees, a one-file base: seconds."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from builder import image
from deploy import image as push_image
from pipeline import docker
from tests import registry_support

pytestmark = pytest.mark.docker

MB = 1 << 20


def _tags() -> set[str]:
    listed = subprocess.run([docker.command(), "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True).stdout
    return {line for line in listed.splitlines() if line and not line.endswith(":<none>")}


@pytest.fixture(autouse=True)
def _no_tags_left(docker_daemon):
    """What a test tags (the built image, its registry names) is untagged after it: runs do not pile images up."""
    before = _tags()
    yield
    made = sorted(_tags() - before)
    if made:
        subprocess.run([docker.command(), "rmi", "--no-prune", *made], capture_output=True, check=False)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, docker_daemon):
    reg, proc = registry_support.start(tmp_path_factory.mktemp("registry"))
    yield reg
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, docker_daemon) -> str:
    """A one-file base image (docker import): enough to build FROM and push; nothing runs in it."""
    tag = "hoist-test/tiny-base:1"
    if not docker.image_exists(tag):
        root = tmp_path_factory.mktemp("tiny-base")
        (root / "etc").mkdir()
        (root / "etc" / "os-release").write_text("ID=hoist-standin\n")
        tar = root.parent / "tiny-base.tar"
        with tarfile.open(tar, "w") as t:
            t.add(root / "etc", arcname="etc")
        done = docker.import_tar(tar, tag, platform="linux/amd64")
        assert done.returncode == 0, done.stderr
    return tag


def _inputs(root, handler_text="def handler(event, context):\n    return 1\n"):
    efs = root / "efs" / "torch"
    efs.mkdir(parents=True, exist_ok=True)
    if not (efs / "_C.so").exists():
        (efs / "_C.so").write_bytes(os.urandom(3 * MB))  # incompressible: a re-push of this layer alone would send 3 MB
    handler = root / "handler"
    handler.mkdir(exist_ok=True)
    (handler / "app.py").write_text(handler_text)
    return {"efs": (root / "efs", "efs-hash-1")}, handler


def _build(tiny_base, work, layout, handler_text=None):
    sets, handler = _inputs(work, *([handler_text] if handler_text else []))
    made = image.build_for(base_ref=tiny_base, platform="linux/amd64", target_dir=layout.parent, sets=sets, handler_dir=handler, model_dir=None,
                           handler="app.handler", snapstart=True, repository="hoist/test")
    return image.image_record(made, "linux/amd64")


def test_push_pins_the_registrys_digest_equal_inputs_push_equal_and_a_handler_change_sends_under_1_mb(tiny_base, registry, tmp_path):
    first = _build(tiny_base, tmp_path / "work", tmp_path / "a" / "image")
    repo = f"{registry.host}/hoist/test"
    pushed = push_image.push(first, repo)
    assert docker.inspect(first.config_digest) == first.config_digest  # the daemon's image id is the layout's config digest
    manifest = json.loads(registry.get(f"hoist/test/manifests/{pushed.digest}"))
    assert manifest["config"]["digest"] == first.config_digest and len(manifest["layers"]) == len(first.layers)

    # equal inputs, built into another layout and pushed to another repository: the registry's digest is equal
    again = _build(tiny_base, tmp_path / "work", tmp_path / "b" / "image")
    assert again.config_digest == first.config_digest
    assert push_image.push(again, f"{registry.host}/hoist/again").digest == pushed.digest

    # a handler-only change: one new layer, a config and a manifest cross the wire
    before = registry.stored_bytes()
    changed = _build(tiny_base, tmp_path / "work", tmp_path / "a" / "image", handler_text="def handler(event, context):\n    return 2\n")
    assert changed.written == ("handler",)
    pushed2 = push_image.push(changed, repo)
    sent = registry.stored_bytes() - before
    assert 0 < sent <= 1 * MB, sent
    print(f"handler-only change: {sent:,} bytes sent")
    manifest2 = json.loads(registry.get(f"hoist/test/manifests/{pushed2.digest}"))
    assert [x["digest"] for x in manifest2["layers"][:-1]] == [x["digest"] for x in manifest["layers"][:-1]]  # torch's layer: the same blob
    assert manifest2["layers"][-1]["digest"] != manifest["layers"][-1]["digest"]


def test_apply_logs_in_with_ecrs_token_pushes_then_pins_the_registrys_digest(tiny_base, registry, tmp_path, monkeypatch, wheelhouse):
    """The deployer's apply: GetAuthorizationToken (Stubber: the response shape of ECR's API reference) -> docker login ->
    docker push -> the change set made again with the registry's digest, which must change the same resources."""
    import base64
    import dataclasses

    import boto3
    from botocore.stub import Stubber

    from deploy import stack
    from deploy.stage import Clients, Deployer, DeployPlan
    from deploy.template import Release
    from tests.deploy_support import deploy_project, load

    record = _build(tiny_base, tmp_path / "work", tmp_path / "a" / "image")
    path = deploy_project(tmp_path / "proj", wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\npackage = "image"'})
    cfg = load(path.parent)
    ecr = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="t", aws_secret_access_key="t")
    stub = Stubber(ecr)
    stub.add_response("get_authorization_token", {"authorizationData": [{"authorizationToken": base64.b64encode(b"AWS:not-checked-here").decode(),
                                                                         "proxyEndpoint": f"https://{registry.host}"}]}, {})
    stub.activate()
    made: list[str] = []
    discarded: list[str] = []
    changes = (stack.Change("Add", "Function", "AWS::Lambda::Function", ""), stack.Change("Add", "FunctionVersionabc", "AWS::Lambda::Version", ""))

    def change_set(self, state, template, template_path, **kw):
        made.append(template["Resources"]["Function"]["Properties"]["Code"]["ImageUri"])
        renamed = tuple(dataclasses.replace(c, logical_id="FunctionVersionxyz") if c.logical_id.startswith("FunctionVersion") else c for c in changes)
        return DeployPlan(target="arm", stack_name="hoist-test", storage_only=False, dry_run=False, release=kw["release"], artifacts=None, uploaded=(),
                          sync=None, before=state, live_version=None, change_set=stack.ChangeSetPlan("hoist-test", "UPDATE", "cs-2", renamed),
                          template_path=template_path)

    monkeypatch.setattr(Deployer, "_change_set", change_set)
    monkeypatch.setattr(stack, "discard", lambda cfn, cs: discarded.append(cs.change_set_id))
    deployer = Deployer(cfg, "arm", Clients(s3=None, cloudformation=None, lambda_=None, efs=None, ecr=ecr), steps=None)  # type: ignore[arg-type]
    repo = f"{registry.host}/hoist/test-fn"
    planned_uri = f"{repo}@{record.config_digest}"
    (tmp_path / "t.json").write_text("{}")
    plan = DeployPlan(target="arm", stack_name="hoist-test", storage_only=False, dry_run=False,
                      release=Release("python3.13", "arm64", "", None, "", "", image_uri=planned_uri), artifacts=None, uploaded=(), sync=None,
                      before=stack.StackState("hoist-test", "UPDATE_COMPLETE", {"RepositoryUri": repo}), live_version=None,
                      change_set=stack.ChangeSetPlan("hoist-test", "UPDATE", "cs-1", changes), template_path=tmp_path / "t.json",
                      image=push_image.ImagePush(record=record, repository=repo, digest=None))
    pushed = deployer._push(plan)
    stub.assert_no_pending_responses()
    digest = pushed.image.digest
    assert digest and digest != record.config_digest  # docker push compressed: the registry's digest is another one
    assert json.loads(registry.get(f"hoist/test-fn/manifests/{digest}"))["config"]["digest"] == record.config_digest
    assert made == [f"{repo}@{digest}"] and discarded == ["cs-1"] and pushed.release.image_uri == f"{repo}@{digest}"
    assert pushed.change_set.change_set_id == "cs-2"
