"""The datasync transport against moto's server for S3 and DataSync.

moto has no CreateLocationEfs, and its tasks move no bytes: the test fills that
one gap with a recorder on the client (the code still makes the real call with
the real parameters), and checks the staging bucket and the exact DataSync
requests instead of files on EFS."""
from __future__ import annotations

import contextlib
import json

import pytest
from botocore.stub import Stubber

from sync import stage
from sync.datasync import Clients
from sync.shell import SyncError
from tests.conftest import lock_and_build, write_pipeline

pytestmark = [pytest.mark.moto]

BUCKET = "hoist-staging-test"
FS = "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-0123456789abcdef0"
AP = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0"
SUBNET = "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-0123"
SG = "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123"
ROLE = "arn:aws:iam::123456789012:role/hoist-datasync-s3"


@pytest.fixture
def aws(moto_server, monkeypatch):
    import boto3

    for key, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    datasync = session.client("datasync")
    calls = []
    datasync.meta.events.register("before-call.datasync.*", lambda model, params, **_: calls.append((model.name, json.loads(params["body"] or b"{}"))))
    standin = session.client("datasync")  # not recorded: it only fills moto's gap

    def create_location_efs(**params):
        """moto's gap: the request is recorded as made; a location moto knows stands in for it."""
        calls.append(("CreateLocationEfs", params))
        made = standin.create_location_s3(S3BucketArn=f"arn:aws:s3:::{BUCKET}", Subdirectory="/efs-standin" + params["Subdirectory"], S3Config={"BucketAccessRoleArn": ROLE})
        return {"LocationArn": made["LocationArn"]}

    datasync.create_location_efs = create_location_efs
    return Clients(s3=s3, datasync=datasync, calls=calls)


def _project(project, wheelhouse, reqs):
    # every test stages under its own prefix: the server (and bucket) outlive a test
    sync = (f'[sync]\nmethod = "datasync"\n\n[sync.datasync]\nbucket = "{BUCKET}"\nprefix = "{project.name}/hoist-staging"\nregion = "us-east-1"\n'
            f'file_system_arn = "{FS}"\naccess_point_arn = "{AP}"\nsubnet_arn = "{SUBNET}"\nsecurity_group_arns = ["{SG}"]\ns3_role_arn = "{ROLE}"\n\n[efs]')
    write_pipeline(project, wheelhouse, {"[efs]": sync})
    return lock_and_build(project, reqs)


def _objects(aws, prefix):
    return {o["Key"]: o for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


def test_stage_copy_verify_then_mark(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "nativepkg==1.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    assert plan.action == "transfer" and plan.present == 0 and not plan.copy
    manifest = json.loads(plan.manifest.read_text())
    assert len(plan.upload) == manifest["totals"]["files"]
    done = stage.datasync_apply(plan, c, cfg, poll_s=0)
    assert done["uploaded"] == len(plan.upload)

    staged = _objects(aws, f"{project.name}/hoist-staging/envs/{plan.version}/")
    assert f"{project.name}/hoist-staging/envs/{plan.version}/.hoist-complete" in staged and f"{project.name}/hoist-staging/envs/{plan.version}/manifest.json" in staged
    so = next(f for f in manifest["files"] if f["path"].endswith(".so"))
    head = aws.s3.head_object(Bucket=BUCKET, Key=f"{project.name}/hoist-staging/envs/{plan.version}/site-packages/{so['path']}")
    assert head["Metadata"]["file-permissions"] == "100755" and head["Metadata"]["hoist-sha256"] == so["sha256"]  # the mode survives

    names = [name for name, _ in aws.calls]
    assert names.count("StartTaskExecution") == 2  # the tree, then the marker
    creates = [params for name, params in aws.calls if name == "CreateTask"]
    data, marker = creates
    assert data["Name"] == f"hoist-{plan.version[:12]}" and data["Options"]["VerifyMode"] == "POINT_IN_TIME_CONSISTENT"
    assert data["Options"]["TransferMode"] == "CHANGED" and data["Options"]["PosixPermissions"] == "PRESERVE"
    assert marker["Options"]["PreserveDeletedFiles"] == "PRESERVE"  # the marker copy deletes nothing
    efs = next(params for name, params in aws.calls if name == "CreateLocationEfs")
    assert efs == {"EfsFilesystemArn": FS, "Subdirectory": f"/hoist/envs/{plan.version}", "Ec2Config": {"SubnetArn": SUBNET, "SecurityGroupArns": [SG]},
                   "InTransitEncryption": "TLS1_2", "AccessPointArn": AP}
    s3_locations = [params for name, params in aws.calls if name == "CreateLocationS3"]
    assert [p["Subdirectory"] for p in s3_locations] == [f"/{project.name}/hoist-staging/envs/{plan.version}/", f"/{project.name}/hoist-staging/markers/{plan.version}/"]
    assert names.index("StartTaskExecution") < names.index("CreateLocationS3", names.index("StartTaskExecution"))  # marker staged after the copy succeeded

    again, _ = stage.datasync_plan(cfg, aws=aws)
    assert again.action == "up-to-date"


def test_a_new_version_uploads_only_new_content(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    first, c = stage.datasync_plan(cfg, aws=aws)
    old_paths = {f["path"] for f in json.loads(first.manifest.read_text())["files"]}
    stage.datasync_apply(first, c, cfg, poll_s=0)
    cfg = _project(project, wheelhouse, "purepkg==2.0\nnativepkg==1.0\n")
    second, c = stage.datasync_plan(cfg, aws=aws)
    assert second.version != first.version
    assert {item.path for item, _ in second.copy} <= old_paths and second.copy  # unchanged purepkg files: copied inside S3
    assert {item.path for item in second.upload} == {f["path"] for f in json.loads(second.manifest.read_text())["files"]} - old_paths  # only nativepkg
    stage.datasync_apply(second, c, cfg, poll_s=0)
    staged = _objects(aws, f"{project.name}/hoist-staging/envs/{second.version}/site-packages/")
    assert len(staged) == len(second.upload) + len(second.copy)  # the whole tree is staged for the new version


def test_a_failed_execution_names_it_and_marks_nothing(project, wheelhouse, aws, monkeypatch):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    real = aws.datasync.describe_task_execution

    def failing(**params):
        state = real(**params)
        return {**state, "Status": "ERROR", "Result": {"ErrorCode": "SyncTaskErrorLocationNotAdded", "ErrorDetail": "mount target not reachable from subnet"}}

    monkeypatch.setattr(aws.datasync, "describe_task_execution", failing)
    with pytest.raises(SyncError) as err:
        stage.datasync_apply(plan, c, cfg, poll_s=0)
    text = str(err.value)
    assert "execution arn:aws:datasync" in text and "SyncTaskErrorLocationNotAdded" in text and "mount target not reachable" in text
    assert f"{project.name}/hoist-staging/envs/{plan.version}/.hoist-complete" not in _objects(aws, f"{project.name}/hoist-staging/envs/")
    assert stage.datasync_plan(cfg, aws=aws)[0].action == "transfer"


def test_expired_credentials_say_so(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    with Stubber(aws.s3) as stub:
        stub.add_client_error("list_objects_v2", service_error_code="ExpiredToken", service_message="The provided token has expired.")
        with pytest.raises(SyncError) as err:
            stage.datasync_plan(cfg, aws=aws)
    assert "credentials have expired" in str(err.value) and "aws sso login" in str(err.value)
