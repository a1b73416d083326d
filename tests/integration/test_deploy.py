"""invoke deploy end to end, with moto's server for S3, Lambda and EFS and the Stubber for CloudFormation.

moto's CloudFormation is not evidence that the template deploys (it skips API
Gateway v2, aliases, FileSystemConfigs...), so the stack's answers are scripted
(Stubber) while the uploads, the EFS sync (local folder), the alias moves and
the file system deletion are real calls against moto's server and real files.
The deployed API is a small HTTP server in the test standing in for API
Gateway + the function: the smoke test and the rollback it triggers are what is
under test.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.stub import ANY, Stubber

from builder.build import build
from builder.lock import lock
from compose.deploy import Deployer
from deploy import stage
from deploy.report import print_plan, print_result
from pipeline import aws, emulation
from pipeline.errors import DeployError
from tests.conftest import REPO
from tests.deploy_support import EXISTING_FS, deploy_project, load

pytestmark = pytest.mark.moto

REGION = "eu-west-1"
BUCKET = "hoist-artifacts"
NAME = "hoist-test"
STACK_ARN = f"arn:aws:cloudformation:{REGION}:123456789012:stack/{NAME}/1"
CS_ARN = f"arn:aws:cloudformation:{REGION}:123456789012:changeSet/hoist-x/1"
T0 = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)


@pytest.fixture
def clients(moto_server, monkeypatch):
    for key, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sess = aws.session(REGION)
    s3 = aws.client(sess, "s3")
    for b in s3.list_buckets().get("Buckets", []):  # a fresh bucket for each test
        for obj in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []):
            s3.delete_object(Bucket=b["Name"], Key=obj["Key"])
        s3.delete_bucket(Bucket=b["Name"])
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    cfn = aws.client(sess, "cloudformation")
    with Stubber(cfn) as stub:
        yield stage.Clients(s3=s3, cloudformation=cfn, lambda_=aws.client(sess, "lambda"), efs=aws.client(sess, "efs")), stub


@pytest.fixture
def project(tmp_path, wheelhouse):
    deploy_project(tmp_path, wheelhouse, EXISTING_FS)
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "model" / "artifacts")
    shutil.copytree(REPO / "model" / "samples", tmp_path / "model" / "samples")
    shutil.copytree(REPO / "handler", tmp_path / "handler", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = load(tmp_path)
    lock(cfg, "arm")
    return tmp_path


# what the demo handler's GET /health answers for a version with archives that hydrated (hoist_lambda.activate.report())
HEALTHY = {"status": "ok", "on_path": True, "efs_tree": "/mnt/test/envs/x/site-packages", "activation": {"hydrated": True, "hot_files": 3, "ms": 120}}


class FakeApi:
    """API Gateway + function for the smoke test: answers /health and /classify with ``label``."""

    def __init__(self, label: str = "3", healthy: bool = True):
        api = self
        self.label, self.healthy, self.requests = label, healthy, []

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                api.requests.append(("GET", self.path))
                self._send(200, HEALTHY if api.healthy else {"status": "broken"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append(("POST", self.path, body[:8]))
                self._send(200, {"predictions": [{"label": api.label, "probability": 0.9}]})

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def stack_doc(status, outputs=None):
    doc = {"StackName": NAME, "StackId": STACK_ARN, "CreationTime": T0, "StackStatus": status}
    if outputs:
        doc["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
    return {"Stacks": [doc]}


def expect_plan(stub, changes: bool):
    """describe -> create change set -> describe it: an update with one change, or none."""
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FileSystemId": "fs-0123456789abcdef0"}), {"StackName": NAME})
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN},
                      {"StackName": NAME, "ChangeSetName": ANY, "ChangeSetType": "UPDATE", "TemplateBody": ANY, "Capabilities": ["CAPABILITY_IAM"], "Description": ANY, "Tags": ANY})
    if changes:
        rc = {"Action": "Modify", "LogicalResourceId": "Function", "ResourceType": "AWS::Lambda::Function", "Replacement": "False", "Details": []}
        stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": rc}]})
    else:
        stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "FAILED", "StatusReason": "The submitted information didn't contain changes."})
        stub.add_response("delete_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})


def expect_execute(stub, api_url, version):
    stub.add_response("describe_stack_events", {"StackEvents": []})
    stub.add_response("execute_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    ev = {"StackId": STACK_ARN, "EventId": "e1", "StackName": NAME, "LogicalResourceId": NAME, "ResourceType": "AWS::CloudFormation::Stack", "Timestamp": T0, "ResourceStatus": "UPDATE_COMPLETE"}
    stub.add_response("describe_stack_events", {"StackEvents": [ev]})
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"ApiUrl": api_url, "FunctionName": "test-fn", "FunctionVersion": version}))


class VersionInvoke:
    """Lambda's Invoke of a published version (Qualifier), which moto's server can only answer by running the code in
    Docker: answered here as the Lambda API reference ("Invoke") describes, StatusCode 200, ExecutedVersion and the
    function's proxy response to the API's event as Payload; every other call goes to moto's server."""

    def __init__(self, lam, label: str = "3"):
        self._lam, self.label, self.events = lam, label, []

    def __getattr__(self, name):
        return getattr(self._lam, name)

    def invoke(self, FunctionName, Qualifier, Payload, **_):
        from botocore.response import StreamingBody

        event = json.loads(Payload)
        self.events.append((Qualifier, event["routeKey"]))
        doc = HEALTHY if event["routeKey"] == "GET /health" else {"predictions": [{"label": self.label, "probability": 0.9}]}
        body = json.dumps({"statusCode": 200, "body": json.dumps(doc)}).encode()
        return {"StatusCode": 200, "ExecutedVersion": Qualifier, "Payload": StreamingBody(io.BytesIO(body), len(body))}


def expect_promotion(stub, c, api_url, version):
    """The second change set, which moves the alias only; executing it calls UpdateAlias, as CloudFormation's alias
    handler does (modelled on moto's server: the alias moves when the change set executes)."""
    promote = CS_ARN.replace("hoist-x", "hoist-promote")
    stub.add_response("create_change_set", {"Id": promote, "StackId": STACK_ARN})
    rc = {"Action": "Modify", "LogicalResourceId": "LiveAlias", "ResourceType": "AWS::Lambda::Alias", "Replacement": "False", "Details": []}
    stub.add_response("describe_change_set", {"ChangeSetId": promote, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": rc}]})
    stub.add_response("describe_stack_events", {"StackEvents": []})
    stub.add_response("execute_change_set", {}, {"ChangeSetName": promote, "StackName": NAME})
    ev = {"StackId": STACK_ARN, "EventId": "e2", "StackName": NAME, "LogicalResourceId": NAME, "ResourceType": "AWS::CloudFormation::Stack", "Timestamp": T0, "ResourceStatus": "UPDATE_COMPLETE"}
    stub.add_response("describe_stack_events", {"StackEvents": [ev]})
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"ApiUrl": api_url, "FunctionName": "test-fn", "FunctionVersion": version}))

    def update_alias(params, **_):
        if params.get("ChangeSetName") == promote:
            c.lambda_.update_alias(FunctionName="test-fn", Name="live", FunctionVersion=version)

    c.cloudformation.meta.events.register("before-parameter-build.cloudformation.ExecuteChangeSet", update_alias)


def lambda_function(lam, versions: int, live: str):
    """The function a previous deploy left: ``versions`` published versions, alias live on ``live``."""
    iam = aws.client(aws.session(REGION), "iam")
    try:
        role = iam.create_role(RoleName="hoist-test-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="hoist-test-role")["Role"]["Arn"]
    with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName="test-fn")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {}\n")
    for i in range(1, versions + 1):
        env = {"Variables": {"HOIST_EFS_VERSION": f"{i:064x}"}}
        if i == 1:
            lam.create_function(FunctionName="test-fn", Runtime="python3.13", Role=role, Handler="app.handler", Code={"ZipFile": buf.getvalue()}, Environment=env)
        else:
            lam.update_function_configuration(FunctionName="test-fn", Environment=env)
        lam.publish_version(FunctionName="test-fn", Description=f"release {i}")
    lam.create_alias(FunctionName="test-fn", Name="live", FunctionVersion=live)


def _shown(printer, obj) -> str:
    from rich.console import Console

    console = Console(record=True, width=250)
    printer(console, obj)
    return console.export_text()


def keys(s3) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_deploy_uploads_syncs_applies_and_smoke_tests_then_an_unchanged_deploy_changes_nothing(project, clients):
    c, stub = clients
    cfg = load(project)
    lambda_function(c.lambda_, versions=2, live="1")
    api = FakeApi(label="3")
    try:
        expect_plan(stub, changes=True)
        from rich.console import Console

        from deploy.report import ConsoleProgress

        console = Console(record=True, width=250)
        deployer = Deployer(cfg, "arm", c, ConsoleProgress(console), poll_s=0)
        plan = deployer.plan()
        # planning changes nothing but the change set: no upload, no sync yet
        build_doc = json.loads((project / "dist" / "arm" / "build.json").read_text())
        fn_sha = build_doc["artifacts"]["function_zip"]["sha256"]
        efs_version = build_doc["sets"]["efs"]["identity"]  # the version's name covers the tree and its archives
        marker = project / ".hoist-efs" / "hoist" / "envs" / efs_version / ".hoist-complete"
        assert keys(c.s3) == set() and plan.uploaded == () and all(u.present is False for u in plan.artifacts.uploads)
        assert plan.sync.action == "transfer" and not marker.exists() and plan.has_work
        assert plan.release.function_key == f"hoist/artifacts/{fn_sha}.zip"
        template = json.loads(plan.template_path.read_text())
        assert template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["HOIST_EFS_VERSION"] == efs_version
        assert plan.live_version == "1" and [ch.logical_id for ch in plan.change_set.changes] == ["Function"]
        shown = _shown(print_plan, plan)
        assert any("sync method local writes the EFS version" in w and "bastion" in w for w in plan.warnings)  # a folder here is not EFS
        assert "Modify" in shown and "AWS::Lambda::Function" in shown and f"hoist/artifacts/{fn_sha}.zip" in shown and "to upload" in shown

        # the change set publishes version 2 and leaves the alias on 1 (the template names 1); 2 is tested, then promoted
        assert json.loads(plan.template_path.read_text())["Resources"]["LiveAlias"]["Properties"]["FunctionVersion"] == "1"
        invoked = VersionInvoke(c.lambda_)
        deployer.aws = dataclasses.replace(c, lambda_=invoked)
        expect_execute(stub, api.url, "2")
        expect_promotion(stub, c, api.url, "2")
        result = deployer.apply(plan)
        assert invoked.events == [("2", "GET /health"), ("2", "POST /classify")] and result.version_test.ok, result.version_test
        assert c.lambda_.get_alias(FunctionName="test-fn", Name="live")["FunctionVersion"] == "2" and result.live == "2"
        # content-addressed uploads (handler zip, layer zip, the model's files) and the record of what is live
        assert keys(c.s3) == {u.key for u in plan.artifacts.uploads} | {"hoist/deploy.json"} and len(keys(c.s3)) >= 6
        assert set(result.plan.uploaded) >= {"function.zip", "layer.zip", "model/model.pt"}
        assert marker.is_file() and result.plan.sync.done  # the EFS version is on the (local) file system, complete
        assert result.ok and result.smoke.label == "3" and result.rolled_back_to is None
        shown = _shown(print_result, result)
        assert "smoke test: passed" in shown and api.url in shown
        progress = console.export_text()
        for words in ("uploading function.zip", "syncing EFS version", "linting template.json", "creating a change set", "UPDATE_COMPLETE", "smoke test: http"):
            assert words in progress, words
        assert progress.index("creating a change set") < progress.index("uploading function.zip") < progress.index("syncing EFS version") < progress.index("executing change set")
        assert ("GET", "/health") in api.requests and any(r[0] == "POST" and r[1] == "/classify" and r[2].startswith(b"\x89PNG") for r in api.requests)
        record = json.loads((project / "dist" / "deploy.json").read_text())
        assert record["efs_version"] == efs_version and record["outputs"]["FunctionVersion"] == "2" and record["smoke"]["ok"]
        assert json.loads(c.s3.get_object(Bucket=BUCKET, Key="hoist/deploy.json")["Body"].read()) == record  # survives a CI run's dist/
        assert stage.protected_versions(cfg) == {efs_version}  # efs-gc keeps what is deployed
        (project / "dist" / "deploy.json").unlink()  # a fresh CI checkout: the bucket's record still protects it
        assert stage.protected_versions(cfg) == set() and stage.protected_versions(cfg, c.s3) == {efs_version}

        # the same inputs again: a rebuild gives the same zip bytes, so nothing is uploaded and the template is identical
        zip_before = (project / "dist" / "arm" / "function.zip").read_bytes()
        build(cfg, "arm", force=True)
        assert (project / "dist" / "arm" / "function.zip").read_bytes() == zip_before
        template_before = plan.template_path.read_bytes()  # as promoted: the alias on 2
        expect_plan(stub, changes=False)
        again = deployer.plan()
        assert again.uploaded == () and all(u.present for u in again.artifacts.uploads)
        assert again.sync.action == "up-to-date" and again.change_set.empty and not again.has_work
        assert again.template_path.read_bytes() == template_before
    finally:
        api.close()


def test_a_failed_smoke_test_points_the_alias_back_to_the_version_that_was_live(project, clients):
    c, stub = clients
    cfg = load(project)
    lambda_function(c.lambda_, versions=2, live="1")
    api = FakeApi(label="8")  # the version passed its own test, but the API answers wrongly once the alias is on it
    try:
        expect_plan(stub, changes=True)
        deployer = Deployer(cfg, "arm", c, poll_s=0)
        plan = deployer.plan()
        deployer.aws = dataclasses.replace(c, lambda_=VersionInvoke(c.lambda_))
        expect_execute(stub, api.url, "2")
        expect_promotion(stub, c, api.url, "2")
        result = deployer.apply(plan)
    finally:
        api.close()
    assert not result.ok and "expected '3'" in result.smoke.message
    assert result.rolled_back_to == "1"
    assert c.lambda_.get_alias(FunctionName="test-fn", Name="live")["FunctionVersion"] == "1"
    assert json.loads((project / "dist" / "deploy.json").read_text())["rolled_back_to"] == "1"


def test_dry_run_uploads_nothing_syncs_nothing_and_discards_the_change_set(project, clients):
    c, stub = clients
    cfg = load(project)
    lambda_function(c.lambda_, versions=1, live="1")
    expect_plan(stub, changes=True)
    stub.add_response("delete_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    deployer = Deployer(cfg, "arm", c, poll_s=0)
    plan = deployer.plan(dry_run=True)
    assert keys(c.s3) == set() and all(not u.present for u in plan.artifacts.uploads)
    assert plan.sync.action == "transfer" and not (project / ".hoist-efs" / "hoist" / "envs").exists()
    deployer.discard(plan)
    with pytest.raises(DeployError, match="dry-run"):
        deployer.apply(plan)


def test_a_stack_that_creates_its_file_system_asks_for_storage_first(tmp_path, wheelhouse, clients):
    c, stub = clients
    deploy_project(tmp_path, wheelhouse)
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist")
    with pytest.raises(DeployError) as err:
        Deployer(load(tmp_path), "arm", c).plan()
    assert "--storage-only" in str(err.value) and "file_system_id" in str(err.value)


def test_rollback_moves_the_alias_to_the_previous_version_or_the_one_asked(project, clients):
    c, stub = clients
    cfg = load(project)
    lambda_function(c.lambda_, versions=3, live="3")
    for _ in range(4):  # each plan reads the stack's access point (a replaced one is refused)
        stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE"), {"StackName": NAME})
    move = stage.plan_rollback(cfg, c)
    assert (move.from_version, move.to.version, move.to.efs_version) == ("3", "2", f"{2:064x}")
    stage.apply_rollback(cfg, c, move)
    assert c.lambda_.get_alias(FunctionName="test-fn", Name="live")["FunctionVersion"] == "2"
    stage.apply_rollback(cfg, c, stage.plan_rollback(cfg, c, to="1"))
    assert c.lambda_.get_alias(FunctionName="test-fn", Name="live")["FunctionVersion"] == "1"
    with pytest.raises(DeployError, match="nothing to roll back to"):
        stage.plan_rollback(cfg, c)
    with pytest.raises(DeployError, match="no version 9"):
        stage.plan_rollback(cfg, c, to="9")


def test_teardown_deletes_the_stack_keeps_the_data_unless_asked(tmp_path, wheelhouse, clients):
    c, stub = clients
    deploy_project(tmp_path, wheelhouse)
    cfg = load(tmp_path)
    fs = c.efs.create_file_system(CreationToken="hoist-teardown", Encrypted=True)["FileSystemId"]
    c.efs.create_access_point(FileSystemId=fs)
    older = c.lambda_.publish_layer_version(LayerName="test-fn-deps", Content={"ZipFile": _zip()})["LayerVersionArn"]  # an earlier release's, retained
    layer = c.lambda_.publish_layer_version(LayerName="test-fn-deps", Content={"ZipFile": _zip()})["LayerVersionArn"]
    resources = [("FileSystem", "AWS::EFS::FileSystem", fs), ("Layer", "AWS::Lambda::LayerVersion", layer), ("Function", "AWS::Lambda::Function", "test-fn"),
                 ("FunctionVersionabc", "AWS::Lambda::Version", "arn:aws:lambda:eu-west-1:123456789012:function:test-fn:1")]
    rows = [{"LogicalResourceId": lid, "ResourceType": kind, "PhysicalResourceId": pid, "LastUpdatedTimestamp": T0, "ResourceStatus": "CREATE_COMPLETE"} for lid, kind, pid in resources]
    for delete_data in (False, True):
        stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE"), {"StackName": NAME})
        stub.add_response("list_stack_resources", {"StackResourceSummaries": rows}, {"StackName": NAME})
        plan = stage.plan_teardown(cfg, c, delete_data=delete_data)
        assert [r[0] for r in plan.retained] == ["FileSystem", "Layer"] and plan.file_system_id == fs
        assert {r[0] for r in plan.removed} == {"Function", "FunctionVersionabc"}
        stub.add_response("describe_stack_events", {"StackEvents": []})
        stub.add_response("delete_stack", {}, {"StackName": NAME})
        stub.add_client_error("describe_stack_events", "ValidationError", f"Stack [{NAME}] does not exist")
        stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist")
        if delete_data:
            layer = c.lambda_.publish_layer_version(LayerName="test-fn-deps", Content={"ZipFile": _zip()})["LayerVersionArn"]
            plan = stage.TeardownPlan(**{**plan.__dict__, "retained": (("FileSystem", "AWS::EFS::FileSystem", fs), ("Layer", "AWS::Lambda::LayerVersion", layer))})
        done = stage.apply_teardown(cfg, c, plan, poll_s=0)
        file_systems = [f["FileSystemId"] for f in c.efs.describe_file_systems()["FileSystems"]]
        assert any("layer version" in d for d in done)
        if not delete_data:  # every release's layer version goes, not only the one the stack lists now
            assert {d.removeprefix("layer version ") for d in done if d.startswith("layer version")} == {older, layer}
        if delete_data:
            assert fs not in file_systems and any("its data is gone" in d for d in done)
        else:
            assert fs in file_systems and not any("file system" in d for d in done)
    assert c.lambda_.list_layer_versions(LayerName="test-fn-deps")["LayerVersions"] == []


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("python/x.py", "")
    return buf.getvalue()


def test_a_missing_artifact_bucket_is_one_clear_error(project, clients):
    c, _ = clients
    from deploy.artifacts import plan_artifacts

    zip_path = project / "f.zip"
    zip_path.write_bytes(_zip())
    with pytest.raises(DeployError) as err:
        plan_artifacts(c.s3, "no-such-hoist-bucket", "hoist", (zip_path, "0" * 64), None, project / "model" / "artifacts")
    assert "does not exist" in str(err.value) and "deploy.artifact_bucket" in str(err.value)


def test_a_bucket_in_another_region_is_named_with_its_region(monkeypatch, tmp_path):
    """HeadBucket answers 301 with the bucket's region in a header (and no body)."""
    from deploy.artifacts import plan_artifacts

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = aws.client(aws.session(REGION), "s3")
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", "301", "", http_status_code=301, response_meta={"HTTPHeaders": {"x-amz-bucket-region": "us-west-2"}})
        with pytest.raises(DeployError) as err:
            plan_artifacts(s3, BUCKET, "hoist", (tmp_path / "f.zip", "0" * 64), None, tmp_path)
    assert "another region" in str(err.value) and "us-west-2" in str(err.value) and "region" in str(err.value).split("fix:")[1]


def test_the_smoke_test_waits_out_a_cold_start_then_fails_on_a_tree_that_is_not_on_the_path(monkeypatch, tmp_path):
    """503/504 while the new version starts cold are retried with backoff; a health answer
    that says the EFS tree is not importable fails without retrying."""
    from deploy import smoke as smoke_mod

    monkeypatch.setattr(smoke_mod.time, "sleep", lambda s: None)
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG fake")
    answers = iter([(503, {"message": "Service Unavailable"}), (504, "timeout"), (200, {"status": "ok", "on_path": True}), (200, {"predictions": [{"label": "3"}]})])
    monkeypatch.setattr(smoke_mod, "_request", lambda *a: next(answers))
    lines = []
    result = smoke_mod.smoke("https://api.example", image, "3", on_line=lines.append)
    assert result.ok and len([ln for ln in lines if "retrying" in ln]) == 2
    monkeypatch.setattr(smoke_mod, "_request", lambda *a: (200, {"status": "ok", "on_path": False, "efs_tree": "/mnt/test/envs/x/site-packages"}))
    result = smoke_mod.smoke("https://api.example", image, "3")
    assert not result.ok and "not on sys.path" in result.message
    monkeypatch.setattr(smoke_mod, "_request", lambda *a: (502, "bad gateway"))
    result = smoke_mod.smoke("https://api.example", image, "3", attempts=3)
    assert not result.ok and "502" in result.message


def test_the_smoke_test_fails_a_version_with_archives_whose_init_did_not_hydrate(monkeypatch, tmp_path):
    """GET /health carries hoist_lambda.activate.report(): an init that imported from the tree though the version has archives works,
    seconds slower per cold start; the smoke test says so and why, before `live` counts it as good."""
    from deploy import smoke as smoke_mod

    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG fake")
    failed = {"hydrated": False, "why": "hydration failed: OSError: archive torch-0a1b.hz does not match its sha256 in the index", "hot_files": 0, "ms": 3.0}
    for health, archives, ok, said in [
        ({"activation": failed}, True, False, "instead of hydrating: hydration failed: OSError: archive torch-0a1b.hz"),
        ({}, True, False, "does not say what activation did"),
        ({"activation": {**failed, "hydrated": True, "why": None, "hot_files": 757, "ms": 310.0}}, True, True, "hydrated (757 hot files, 0.31 s)"),
        ({"activation": failed}, False, True, "health ok, x.png"),  # nothing to hydrate: a version without archives
    ]:
        answers = iter([(200, {"status": "ok", "on_path": True, **health}), (200, {"predictions": [{"label": "3"}]})])
        monkeypatch.setattr(smoke_mod, "_request", lambda *a, answers=answers: next(answers))
        result = smoke_mod.smoke("https://api.example", image, "3", archives=archives)
        assert result.ok is ok and said in result.message, (health, result.message)


def test_dry_run_without_any_aws_credentials_builds_validates_renders_lints_and_says_what_it_could_not_check(tmp_path, wheelhouse):
    """A user previewing the stack offline: no credentials, no profile, no instance metadata, no endpoint."""
    import os
    import subprocess
    import sys

    deploy_project(tmp_path, wheelhouse)  # a stack that creates its own file system
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "model" / "artifacts")
    (tmp_path / "handler" / "app.py").write_text((REPO / "handler" / "app.py").read_text())
    lock(load(tmp_path), "arm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
                "HOIST_CACHE": str(emulation.cache_dir())})  # a fresh HOME for AWS, this machine's prepared aarch64 root for the import check
    run = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "deploy", "--dry-run", "--target", "arm", "--config", str(tmp_path / "pipeline.toml")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    out = " ".join((run.stdout + run.stderr).split())  # rich wraps long lines
    assert run.returncode == 0, out
    for words in ("building", "validating the trees", "linting template.json", "function.zip", "layer.zip", "model/model.pt",
                  "to upload (bucket not checked)", "EFS version", "not checked offline", "Availability Zones", "change set",
                  "dry run: nothing uploaded, synced or changed"):
        assert words in out, words
    template = json.loads((tmp_path / "dist" / "arm" / "template.json").read_text())
    assert template["Resources"]["FileSystem"]["Properties"]["FileSystemPolicy"]
    from deploy import lint as deploy_lint

    assert [str(f) for f in deploy_lint.lint(template, REGION)] == []
    assert not (tmp_path / ".hoist-efs" / "hoist" / "envs").exists()  # nothing synced


def test_a_full_deploy_without_credentials_is_one_clear_error(tmp_path, wheelhouse):
    deploy_project(tmp_path, wheelhouse, EXISTING_FS)
    with pytest.raises(DeployError) as err:
        Deployer(load(tmp_path), "arm", None).plan()
    assert "no AWS credentials" in str(err.value) and "--dry-run" in str(err.value)


def test_storage_only_refuses_to_remove_a_full_stack_s_function_and_api(tmp_path, wheelhouse, clients):
    c, stub = clients
    deploy_project(tmp_path, wheelhouse, EXISTING_FS)
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FunctionName": "test-fn", "ApiUrl": "https://x", "FileSystemId": "fs-0123456789abcdef0"}),
                      {"StackName": NAME})
    with pytest.raises(DeployError) as err:
        Deployer(load(tmp_path), "arm", c).plan(storage_only=True)
    assert "would remove them" in str(err.value) and "invoke deploy" in str(err.value)
    stub.assert_no_pending_responses()


def test_a_validation_error_during_deploy_is_one_clear_error_and_nothing_is_changed(project, clients, monkeypatch):
    import validate.stage as validate_stage
    from validate.checks import Finding

    c, stub = clients
    real = validate_stage.from_build

    def failing(*args, **kwargs):
        report = real(*args, **kwargs)
        bad = Finding(severity="error", rule="glibc", file="torch/lib/libtorch.so", package="torch", message="needs GLIBC_2.35, the runtime has 2.34")
        return dataclasses.replace(report, findings=(*report.findings, bad))

    monkeypatch.setattr(validate_stage, "from_build", failing)
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FileSystemId": "fs-0123456789abcdef0"}), {"StackName": NAME})
    with pytest.raises(DeployError) as err:
        Deployer(load(project), "arm", c).plan()
    text = str(err.value)
    assert "validation found 1 error(s)" in text and "glibc torch/lib/libtorch.so: needs GLIBC_2.35" in text and "invoke validate --target arm" in text
    assert keys(c.s3) == set()


def test_planning_storage_reads_the_subnets_zones_from_ec2_one_mount_target_per_zone(tmp_path, wheelhouse, clients):
    c, stub = clients
    ec2 = aws.client(aws.session(REGION), "ec2")
    vpc = ec2.create_vpc(CidrBlock="198.19.0.0/16")["Vpc"]["VpcId"]  # RFC 2544 benchmarking range, inside moto only
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"198.19.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for i, zone in enumerate(("eu-west-1b", "eu-west-1b", "eu-west-1c"))]
    deploy_project(tmp_path, wheelhouse)
    path = tmp_path / "pipeline.toml"
    path.write_text(path.read_text().replace('vpc_id = "vpc-0123456789abcdef0"', f'vpc_id = "{vpc}"')
                    .replace('subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]', f"subnet_ids = {json.dumps(subnets)}"))
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist")
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN},
                      {"StackName": NAME, "ChangeSetName": ANY, "ChangeSetType": "CREATE", "TemplateBody": ANY, "Capabilities": ["CAPABILITY_IAM"], "Description": ANY, "Tags": ANY})
    rc = {"Action": "Add", "LogicalResourceId": "FileSystem", "ResourceType": "AWS::EFS::FileSystem", "Details": []}
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": rc}]})
    plan = Deployer(load(tmp_path), "arm", dataclasses.replace(c, ec2=ec2), poll_s=0).plan(storage_only=True)
    template = json.loads(plan.template_path.read_text())
    targets = {k: r["Properties"]["SubnetId"] for k, r in template["Resources"].items() if r["Type"] == "AWS::EFS::MountTarget"}
    assert targets == {"MountTargetEuWest1b": subnets[0], "MountTargetEuWest1c": subnets[2]} and plan.unchecked == ()
    assert plan.change_set.change_set_type == "CREATE" and keys(c.s3) == set()


def test_a_validation_error_during_deploy_is_one_clear_error_naming_rule_and_file(tmp_path, wheelhouse, clients):
    """An x86_64 library smuggled into a py3-none-any wheel of the arm64 EFS set: deploy stops
    before uploading or syncing anything, with validate's rule, the file and the fix."""
    from tests.wheels import compile_library, make_wheel

    c, stub = clients
    extra = tmp_path / "extra-wheels"
    make_wheel(extra, "smuggled", "1.0", "py3-none-any", {"smuggled/__init__.py": "", "smuggled/libfast.so": compile_library(tmp_path / "lib").read_bytes()})
    deploy_project(tmp_path / "p", wheelhouse, EXISTING_FS, replace={f'"{wheelhouse}"': f'"{wheelhouse}", "{extra}"'})
    (tmp_path / "p" / "requirements" / "efs.in").write_text("smuggled\n")
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "p" / "model" / "artifacts")
    cfg = load(tmp_path / "p")
    lock(cfg, "arm")
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FileSystemId": "fs-0123456789abcdef0"}), {"StackName": NAME})
    with pytest.raises(DeployError) as err:
        Deployer(cfg, "arm", c, poll_s=0).plan()
    text = str(err.value)
    assert "validation found 1 error(s)" in text and "elf-machine" in text and "smuggled/libfast.so" in text
    assert "invoke validate --target arm" in text
    assert keys(c.s3) == set()  # nothing uploaded
    assert not (tmp_path / "p" / ".hoist-efs").exists()  # nothing synced


def _vpc(ec2, zones):
    vpc = ec2.create_vpc(CidrBlock="198.19.0.0/16")["Vpc"]["VpcId"]  # RFC 2544 benchmarking range, inside moto only
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"198.19.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"] for i, zone in enumerate(zones)]
    return vpc, subnets


def _storage_project(tmp_path, wheelhouse, vpc, subnets, route_tables=("rtb-0123456789abcdef0",)):
    deploy_project(tmp_path, wheelhouse)
    path = tmp_path / "pipeline.toml"
    path.write_text(path.read_text().replace('vpc_id = "vpc-0123456789abcdef0"', f'vpc_id = "{vpc}"')
                    .replace('subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]', f"subnet_ids = {json.dumps(subnets)}")
                    .replace('route_table_ids = ["rtb-0123456789abcdef0"]', f"route_table_ids = {json.dumps(list(route_tables))}"))
    return load(tmp_path)


def test_a_zone_keeps_its_mount_target_s_subnet_and_a_change_set_replacing_one_is_refused(tmp_path, wheelhouse, clients):
    """Issue 23, 2. AWS::EFS::MountTarget SubnetId: "Update requires: Replacement" (CloudFormation template reference);
    CloudFormation creates the replacement before deleting the old one (User Guide, "Update behaviors of stack
    resources"); EFS allows one mount target per Availability Zone (CreateMountTarget: MountTargetConflict). So
    reordering subnet_ids within a zone must not change that zone's SubnetId, and a change set that would still
    replace a mount target is refused (and deleted) at plan. moto's EFS answers DescribeMountTargets."""
    c, stub = clients
    ec2 = aws.client(aws.session(REGION), "ec2")
    vpc, (b1, b2, c1) = _vpc(ec2, ("eu-west-1b", "eu-west-1b", "eu-west-1c"))
    fs = c.efs.create_file_system(CreationToken=f"hoist-{tmp_path.name}")["FileSystemId"]
    for subnet in (b1, c1):  # what the first deploy, listing b1 first, made
        c.efs.create_mount_target(FileSystemId=fs, SubnetId=subnet)
    cfg = _storage_project(tmp_path, wheelhouse, vpc, [b2, b1, c1])  # b2 now comes first in zone b
    live = {"StackName": NAME, "StackId": STACK_ARN, "CreationTime": T0, "StackStatus": "UPDATE_COMPLETE", "Outputs": [{"OutputKey": "FileSystemId", "OutputValue": fs}]}

    def plan_with(changes, refused=False):
        stub.add_response("describe_stacks", {"Stacks": [live]}, {"StackName": NAME})
        stub.add_response("list_stack_resources", {"StackResourceSummaries": []}, {"StackName": NAME})
        stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN})
        stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": rc} for rc in changes]})
        if refused:
            stub.add_response("delete_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
        return Deployer(cfg, "arm", dataclasses.replace(c, ec2=ec2), poll_s=0).plan(storage_only=True)

    plan = plan_with([])
    template = json.loads(plan.template_path.read_text())
    targets = {k: r["Properties"]["SubnetId"] for k, r in template["Resources"].items() if r["Type"] == "AWS::EFS::MountTarget"}
    assert targets == {"MountTargetEuWest1b": b1, "MountTargetEuWest1c": c1}  # the live subnet, not the first listed

    replaced = {"Action": "Modify", "LogicalResourceId": "MountTargetEuWest1b", "ResourceType": "AWS::EFS::MountTarget", "Replacement": "True",
                "Details": [{"Target": {"Attribute": "Properties", "Name": "IpAddress"}}]}
    with pytest.raises(DeployError) as err:
        plan_with([replaced], refused=True)
    text = str(err.value)
    assert "MountTargetEuWest1b would be replaced" in text and "one per Availability Zone" in text and "change set was deleted" in text
    assert f"eu-west-1b: {b1}" in text and "delete-mount-target" in text


def test_an_s3_gateway_endpoint_already_on_the_route_tables_is_refused_at_plan(tmp_path, wheelhouse, clients):
    """Issue 23, 3. A gateway endpoint adds a route to each of its route tables whose destination is the service's
    prefix list (Amazon VPC, "Gateway endpoints", routing); a table has one route per destination, so the stack's
    own S3 endpoint on a table another endpoint already routes fails. moto's EC2 answers DescribeVpcEndpoints."""
    c, stub = clients
    ec2 = aws.client(aws.session(REGION), "ec2")
    vpc, subnets = _vpc(ec2, ("eu-west-1b",))
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    theirs = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway", RouteTableIds=[table])["VpcEndpoint"]["VpcEndpointId"]
    cfg = _storage_project(tmp_path, wheelhouse, vpc, subnets, [table])
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist")
    with pytest.raises(DeployError) as err:
        Deployer(cfg, "arm", dataclasses.replace(c, ec2=ec2), poll_s=0).plan(storage_only=True)
    text = str(err.value)
    assert theirs in text and table in text and "set s3_endpoint = false" in text
