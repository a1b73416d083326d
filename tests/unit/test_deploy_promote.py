"""Issue 23, 10: the release's version is tested before the alias ``live`` moves to it.

Modelled on the Lambda API reference with botocore's Stubber:

- "Invoke": with ``Qualifier`` set to a version number Lambda runs that published version, whatever an alias
  says; the answer is StatusCode 200 for RequestResponse, ``ExecutedVersion`` (the version that ran),
  ``FunctionError`` (Handled/Unhandled) when the function raised, with the error object as the payload, and
  the function's return value as ``Payload`` otherwise. Errors such as EFSMountTimeoutException are the
  version's own faults; ResourceConflictException (a version still Pending) passes.
- "UpdateAlias" is what CloudFormation calls when an ``AWS::Lambda::Alias``'s FunctionVersion changes (its
  schema's update handler lists lambda:UpdateAlias): the alias moves only when the second change set, which
  changes LiveAlias alone, executes.
- The function answers the HTTP API's events (payload format 2.0, API Gateway developer guide): a dict with
  statusCode and a body string, read as API Gateway reads it.
"""
from __future__ import annotations

import datetime
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY

from deploy import smoke as smoke_mod
from deploy import stack
from deploy.stage import Clients, Deployer, DeployPlan, SyncSummary
from deploy.template import promoted, render
from pipeline.errors import DeployError
from tests.deploy_support import EXISTING_FS, deploy_project, load, release

NAME = "hoist-test"
STACK_ARN = f"arn:aws:cloudformation:eu-west-1:123456789012:stack/{NAME}/1"
CS_ARN = "arn:aws:cloudformation:eu-west-1:123456789012:changeSet/hoist-x/1"
PROMOTE_ARN = "arn:aws:cloudformation:eu-west-1:123456789012:changeSet/hoist-promote/1"
T0 = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)
HEALTHY = {"status": "ok", "on_path": True, "efs_tree": "/mnt/test/envs/x/site-packages"}


def answer(doc, status=200, version="2", error=None):
    """What Invoke returns for a function that answered the API's event with ``doc`` (a proxy response)."""
    payload = json.dumps(doc if error else {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(doc)}).encode()
    out = {"StatusCode": 200, "ExecutedVersion": version, "Payload": StreamingBody(io.BytesIO(payload), len(payload))}
    if error:
        out["FunctionError"] = error
    return out


def expect_invoke(stub, response, version="2"):
    stub.add_response("invoke", response, {"FunctionName": "test-fn", "Qualifier": version, "InvocationType": "RequestResponse", "Payload": ANY})


def stack_doc(outputs):
    return {"Stacks": [{"StackName": NAME, "StackId": STACK_ARN, "CreationTime": T0, "StackStatus": "UPDATE_COMPLETE",
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}


def expect_execute(stub, cs_arn, outputs):
    stub.add_response("describe_stack_events", {"StackEvents": []})
    stub.add_response("execute_change_set", {}, {"ChangeSetName": cs_arn, "StackName": NAME})
    ev = {"StackId": STACK_ARN, "EventId": cs_arn, "StackName": NAME, "LogicalResourceId": NAME, "ResourceType": "AWS::CloudFormation::Stack",
          "Timestamp": T0, "ResourceStatus": "UPDATE_COMPLETE"}
    stub.add_response("describe_stack_events", {"StackEvents": [ev]})
    stub.add_response("describe_stacks", stack_doc(outputs))


class Api:
    """The HTTP API in front of the alias: counts the requests the smoke test makes through it."""

    def __init__(self, label="3"):
        api = self
        self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def _send(self, doc):
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                api.requests.append(self.path)
                self._send(HEALTHY)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append(self.path)
                self._send({"predictions": [{"label": label, "probability": 0.9}]})

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def setup(tmp_path, wheelhouse, stubbed, monkeypatch):
    import shutil

    from tests.conftest import REPO

    deploy_project(tmp_path, wheelhouse, EXISTING_FS)
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "model" / "artifacts")
    cfg = load(tmp_path)
    (cfg.build.output / "arm").mkdir(parents=True)
    monkeypatch.setattr(smoke_mod.time, "sleep", lambda _s: None)
    lam, lstub = stubbed("lambda")
    cfn, cstub = stubbed("cloudformation")
    s3, sstub = stubbed("s3")
    sent = []  # every Invoke's event, as the function receives it
    lam.meta.events.register("before-parameter-build.lambda.Invoke", lambda params, **_: sent.append(json.loads(params["Payload"])))

    def plan(live, before_version, change_set_id):
        template = render(cfg, release(), live_version=live)
        path = cfg.build.output / "arm" / "template.json"
        path.write_text(json.dumps(template))
        changes = (stack.Change("Modify", "Function", "AWS::Lambda::Function", "False"),) if change_set_id else ()
        return DeployPlan(target="arm", stack_name=NAME, storage_only=False, dry_run=False, release=release(), artifacts=None, uploaded=(),
                          sync=SyncSummary("local", "c" * 64, "up-to-date", 1, 1, "here"),
                          before=stack.StackState(NAME, "UPDATE_COMPLETE", {"FunctionVersion": before_version}), live_version=live,
                          change_set=stack.ChangeSetPlan(NAME, "UPDATE", change_set_id, changes), template_path=path)

    def record_written():
        sstub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
        sstub.add_response("put_object", {}, {"Bucket": "hoist-artifacts", "Key": "hoist/deploy.json", "Body": ANY, "ContentType": "application/json"})

    deployer = Deployer(cfg, "arm", Clients(s3=s3, cloudformation=cfn, lambda_=lam, efs=None), poll_s=0, steps=None)  # type: ignore[arg-type]
    return cfg, deployer, plan, lstub, cstub, record_written, sent


def test_a_version_that_fails_its_test_never_becomes_live_and_a_no_op_deploy_tests_it_again_before_promoting_it(setup):
    cfg, deployer, plan, lstub, cstub, record_written, sent = setup
    outputs = {"FunctionName": "test-fn", "FunctionVersion": "2"}
    first = plan(live="1", before_version="1", change_set_id=CS_ARN)
    assert json.loads(first.template_path.read_text())["Resources"]["LiveAlias"]["Properties"]["FunctionVersion"] == "1"  # the change set leaves live alone
    # the change set publishes version 2; the alias is still on 1
    expect_execute(cstub, CS_ARN, {**outputs, "ApiUrl": "http://127.0.0.1:9"})
    lstub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1"}, {"FunctionName": "test-fn", "Name": "live"})
    expect_invoke(lstub, answer(HEALTHY))
    expect_invoke(lstub, answer({"predictions": [{"label": "8", "probability": 0.9}]}))  # answers, but wrongly
    record_written()
    result = deployer.apply(first)
    # no UpdateAlias, no second change set, no request through the API: the Stubbers would have refused the calls
    assert not result.ok and result.live == "1" and "expected '3'" in result.version_test.message and result.smoke is None
    assert [e["routeKey"] for e in sent] == ["GET /health", "POST /classify"]  # the API's own events (payload 2.0)
    assert sent[0]["version"] == "2.0" and sent[0]["requestContext"]["http"] == {**sent[0]["requestContext"]["http"], "method": "GET", "path": "/health"}
    assert sent[1]["isBase64Encoded"] and sent[1]["body"]  # the sample image, as API Gateway passes a binary body
    record = json.loads((cfg.build.output / "deploy.json").read_text())
    assert record["live_version"] == "1" and record["outputs"]["FunctionVersion"] == "2" and record["smoke"]["ok"] is False

    # the next deploy, with nothing changed: its change set is empty, yet version 2 is not live, so it has work: test, then promote
    again = plan(live="1", before_version="2", change_set_id=None)
    assert again.change_set.empty and again.untested == "2" and again.has_work
    api = Api()
    try:
        cstub.add_response("describe_stacks", stack_doc({**outputs, "ApiUrl": api.url}))  # executing an empty change set reads the stack
        lstub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1"}, {"FunctionName": "test-fn", "Name": "live"})
        lstub.add_client_error("invoke", "ResourceConflictException", "The function is currently in the following state: Pending", http_status_code=409)
        expect_invoke(lstub, answer(HEALTHY))
        expect_invoke(lstub, answer({"predictions": [{"label": "3", "probability": 0.9}]}))
        # the promotion: a change set of the same template with the alias on 2, which modifies LiveAlias only
        cstub.add_response("create_change_set", {"Id": PROMOTE_ARN, "StackId": STACK_ARN},
                           {"StackName": NAME, "ChangeSetName": ANY, "ChangeSetType": "UPDATE", "TemplateBody": json.dumps(promoted(json.loads(again.template_path.read_text()), "2"), indent=1, sort_keys=True),
                            "Capabilities": ["CAPABILITY_IAM"], "Description": ANY, "Tags": ANY})
        rc = {"Action": "Modify", "LogicalResourceId": "LiveAlias", "ResourceType": "AWS::Lambda::Alias", "Replacement": "False", "Details": []}
        cstub.add_response("describe_change_set", {"ChangeSetId": PROMOTE_ARN, "Status": "CREATE_COMPLETE", "Changes": [{"Type": "Resource", "ResourceChange": rc}]})
        expect_execute(cstub, PROMOTE_ARN, {**outputs, "ApiUrl": api.url})
        lstub.add_response("get_alias", {"Name": "live", "FunctionVersion": "2"}, {"FunctionName": "test-fn", "Name": "live"})  # what UpdateAlias did
        record_written()
        result = deployer.apply(again)
    finally:
        api.server.shutdown()
    assert result.ok and result.live == "2" and result.version_test.ok and result.smoke.ok and result.rolled_back_to is None
    assert api.requests == ["/health", "/classify"]  # the API was asked only after the alias moved
    assert json.loads(again.template_path.read_text())["Resources"]["LiveAlias"]["Properties"]["FunctionVersion"] == "2"  # what the stack holds now


def test_a_version_that_cannot_mount_efs_or_raises_fails_its_test_naming_why(setup, tmp_path):
    _, _, _, lstub, _, _, _ = setup
    lam = lstub.client
    image = tmp_path / "model" / "artifacts" / "sample.png"
    lstub.add_client_error("invoke", "EFSMountTimeoutException", "The function timed out while mounting the file system", http_status_code=408)
    got = smoke_mod.check_version(lam, "test-fn", "2", image, "3")
    assert not got.ok and "EFSMountTimeoutException" in got.message
    expect_invoke(lstub, answer({"errorType": "ModuleNotFoundError", "errorMessage": "No module named 'torch'"}, error="Unhandled"))
    got = smoke_mod.check_version(lam, "test-fn", "2", image, "3")
    assert not got.ok and "Unhandled" in got.message and "No module named 'torch'" in got.message
    # a version with archives whose init did not hydrate fails as it does through the API (hydration_problem)
    expect_invoke(lstub, answer({**HEALTHY, "activation": {"hydrated": False, "why": "index.json missing"}}))
    got = smoke_mod.check_version(lam, "test-fn", "2", image, "3", archives=True)
    assert not got.ok and "index.json missing" in got.message
    lstub.add_client_error("invoke", "AccessDeniedException", "not authorized to perform lambda:InvokeFunction", http_status_code=403)
    with pytest.raises(DeployError, match="InvokeFunction"):
        smoke_mod.check_version(lam, "test-fn", "2", image, "3")
