"""The datasync transport against moto's server for S3 and DataSync.

moto has no CreateLocationEfs, and its tasks move no bytes: the test fills that
one gap with a recorder on the client (the code still makes the real call with
the real parameters), and checks the staging bucket and the exact DataSync
requests instead of files on EFS."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import time

import pytest
from botocore.stub import Stubber

from pipeline.errors import SyncError, SyncInterrupted
from sync import stage
from sync.datasync import Clients
from tests.conftest import lock_and_build, rebuild_archives_only, write_pipeline

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
    # moto's second gap: no ListTagsForResource. The tags each create call sent are kept here and answered as DataSync
    # documents it (ListTagsForResource: Tags, a list of Key/Value)
    tags: dict[str, list] = {}
    def keeping_tags(real, key):
        def tagged(**params):
            made = real(**params)
            tags[made[key]] = params.get("Tags", [])
            return made
        return tagged

    for name, key in (("create_task", "TaskArn"), ("create_location_s3", "LocationArn"), ("create_location_efs", "LocationArn")):
        setattr(datasync, name, keeping_tags(getattr(datasync, name), key))
    datasync.list_tags_for_resource = lambda ResourceArn, **_: {"Tags": tags.get(ResourceArn, [])}
    return Clients(s3=s3, datasync=datasync, calls=calls)


def _project(project, wheelhouse, reqs, access_point=True):
    # every test stages under its own prefix: the server (and bucket) outlive a test
    ap = f'access_point_arn = "{AP}"\n' if access_point else ""
    sync = (f'[sync]\nmethod = "datasync"\n\n[sync.datasync]\nbucket = "{BUCKET}"\nprefix = "{project.name}/hoist-staging"\nregion = "us-east-1"\n'
            f'file_system_arn = "{FS}"\n{ap}subnet_arn = "{SUBNET}"\nsecurity_group_arns = ["{SG}"]\ns3_role_arn = "{ROLE}"\n\n[efs]')
    write_pipeline(project, wheelhouse, {"[efs]": sync})
    return lock_and_build(project, reqs)


def _objects(aws, prefix):
    return {o["Key"]: o for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


def test_stage_copy_verify_then_mark(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "nativepkg==1.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    assert plan.action == "transfer" and plan.present == 0 and not plan.copy
    manifest = json.loads(plan.manifest.read_text())
    archives = sorted(p.name for p in (plan.tree.parent / "archives").iterdir())
    assert "index.json" in archives and {a["name"] for a in manifest["archives"]} <= set(archives) and manifest["archives"]
    # the whole version, as rsync publishes it: the tree and the archives the cold start reads
    assert {f.path for f in plan.upload} == {f"site-packages/{f['path']}" for f in manifest["files"]} | {f"archives/{n}" for n in archives}
    done = stage.datasync_apply(plan, c, cfg, poll_s=0)
    assert done.uploaded == len(plan.upload)

    base = f"{project.name}/hoist-staging/envs/{plan.version}/"
    staged = _objects(aws, base)
    assert base + "manifest.json" in staged
    # the completeness record: keyed by the file system, the access point and efs.root, outside what a lifecycle rule expires
    record_key = f"{project.name}/hoist-staging/complete/fs-0123456789abcdef0/fsap-0123456789abcdef0/~hoist/{plan.version}.json"
    assert json.loads(aws.s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read())["file_system_id"] == "fs-0123456789abcdef0"
    for archive in manifest["archives"]:  # staged with the bytes the manifest names
        body = aws.s3.get_object(Bucket=BUCKET, Key=base + "archives/" + archive["name"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == archive["sha256"]
    assert base + "archives/index.json" in staged
    so = next(f for f in manifest["files"] if f["path"].endswith(".so"))
    head = aws.s3.head_object(Bucket=BUCKET, Key=f"{base}site-packages/{so['path']}")
    assert head["Metadata"]["file-permissions"] == "100755" and head["Metadata"]["hoist-sha256"] == so["sha256"]  # the mode survives
    assert "file-owner" not in head["Metadata"] and "file-group" not in head["Metadata"]  # a non-root writer cannot chown: no owner staged

    names = [name for name, _ in aws.calls]
    assert names.count("StartTaskExecution") == 3  # the probe (no marker on EFS), the tree (archives included), then the marker
    for i, name in enumerate(names):  # each task is seen AVAILABLE before it starts
        if name == "StartTaskExecution":
            assert names[i - 1] == "DescribeTask"
    creates = [params for name, params in aws.calls if name == "CreateTask"]
    probe, data, marker = creates
    assert probe["Name"] == f"hoist-probe-{plan.version[:12]}" and probe["Options"]["PreserveDeletedFiles"] == "PRESERVE"
    assert data["Name"] == f"hoist-{plan.version[:12]}" and data["Options"]["VerifyMode"] == "POINT_IN_TIME_CONSISTENT"  # DataSync verifies the copy
    assert data["Options"]["TransferMode"] == "CHANGED" and data["Options"]["PosixPermissions"] == "PRESERVE"
    assert (data["Options"]["Uid"], data["Options"]["Gid"]) == ("NONE", "NONE")  # files belong to the writer access point's user
    assert marker["Options"]["PreserveDeletedFiles"] == "PRESERVE"  # the marker copy deletes nothing
    efs = [params for name, params in aws.calls if name == "CreateLocationEfs"][-1]
    # through the writer access point, whose root is efs.root: the version is /envs/<hash> for DataSync, never /hoist/envs/<hash>
    assert efs == {"EfsFilesystemArn": FS, "Subdirectory": f"/envs/{plan.version}", "Ec2Config": {"SubnetArn": SUBNET, "SecurityGroupArns": [SG]},
                   "InTransitEncryption": "TLS1_2", "AccessPointArn": AP,
                   "Tags": [{"Key": "hoist:staging", "Value": f"s3://{BUCKET}/{project.name}/hoist-staging/"}, {"Key": "hoist:version", "Value": plan.version}]}
    # every task and location carries the tags the sweep finds a killed run's leftovers by
    assert all(p["Tags"] == efs["Tags"] for name, p in aws.calls if name in ("CreateTask", "CreateLocationS3"))
    s3_locations = [params for name, params in aws.calls if name == "CreateLocationS3"]
    assert [p["Subdirectory"] for p in s3_locations] == [f"/{project.name}/hoist-staging/probe/{plan.version}/", f"/{project.name}/hoist-staging/envs/{plan.version}/",
                                                         f"/{project.name}/hoist-staging/markers/{plan.version}/"]
    assert {p["S3BucketArn"] for p in s3_locations} == {f"arn:aws:s3:::{BUCKET}"}
    assert names.index("StartTaskExecution") < names.index("CreateLocationS3", names.index("StartTaskExecution"))  # marker staged after the copy succeeded
    # nothing left behind: both tasks and the three locations go after the marker arrived
    last_start = len(names) - 1 - names[::-1].index("StartTaskExecution")
    assert names[last_start:].count("DeleteTask") == 2 and names[last_start:].count("DeleteLocation") == 3
    assert aws.datasync.list_tasks()["Tasks"] == [] or all(t["Name"] not in (data["Name"], marker["Name"]) for t in aws.datasync.list_tasks()["Tasks"])

    again, _ = stage.datasync_plan(cfg, aws=aws)
    assert again.action == "up-to-date"


def test_a_version_not_fully_staged_starts_no_task(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    lost = dataclasses.replace(plan.expected[0], path="archives/lost-0000.hz")
    broken = dataclasses.replace(plan, expected=(*plan.expected, lost))
    with pytest.raises(SyncError) as err:
        stage.datasync_apply(broken, c, cfg, poll_s=0)
    assert "not staged: archives/lost-0000.hz" in str(err.value) and "nothing was copied to EFS" in str(err.value)
    started = [p["TaskArn"] for name, p in aws.calls if name == "StartTaskExecution"]
    probe = [t for name, t in aws.calls if name == "CreateTask" and t["Name"].startswith("hoist-probe-")]
    assert len(started) == 1 and len(probe) == 1  # only the probe ran (it reads EFS); no task copied anything to it


def test_an_interrupted_run_cancels_its_execution(project, wheelhouse, aws, monkeypatch):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)

    def interrupted(**params):
        raise SyncInterrupted(signal.SIGTERM)

    monkeypatch.setattr(aws.datasync, "describe_task_execution", interrupted)
    with pytest.raises(SyncInterrupted):
        stage.datasync_apply(plan, c, cfg, poll_s=0)
    names = [name for name, _ in aws.calls]
    assert names[names.index("StartTaskExecution"):].count("CancelTaskExecution") == 1
    assert stage.datasync_plan(cfg, aws=aws)[0].action == "transfer"  # no marker
    assert _objects(aws, f"{project.name}/hoist-staging/locks/") == {}  # the lock was released


def test_a_lock_is_taken_over_at_once_only_when_its_holder_is_provably_gone(project, wheelhouse, aws):
    import platform
    import subprocess

    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    key = f"{project.name}/hoist-staging/locks/{plan.version}.lock"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=f"ci-runner-7:{os.getpid()}:{int(time.time())}".encode())
    with pytest.raises(SyncError) as err:  # a holder on another host: nothing proves it gone
        stage.datasync_apply(plan, c, cfg, poll_s=0)
    assert "another sync of version" in str(err.value) and "ci-runner-7" in str(err.value) and "StartTaskExecution" not in [n for n, _ in aws.calls]
    dead = subprocess.Popen(["true"])
    dead.wait()
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=f"{platform.node()}:{dead.pid}:{int(time.time())}".encode())  # killed on this host
    stage.datasync_apply(plan, c, cfg, poll_s=0)
    assert stage.datasync_plan(cfg, aws=aws)[0].action == "up-to-date" and _objects(aws, f"{project.name}/hoist-staging/locks/") == {}


def test_list_calls_read_every_page_and_arns_take_the_region_s_partition(aws):
    from pipeline import aws as aws_mod
    from sync.datasync import _listing

    with Stubber(aws.s3) as stub:
        stub.add_response("list_objects_v2", {"IsTruncated": True, "NextContinuationToken": "t", "Contents": [{"Key": "p/a", "ETag": '"1"', "Size": 1}]})
        stub.add_response("list_objects_v2", {"IsTruncated": False, "Contents": [{"Key": "p/b", "ETag": '"2"', "Size": 2}]},
                          {"Bucket": BUCKET, "Prefix": "p/", "ContinuationToken": "t"})
        assert _listing(aws, BUCKET, "p/") == {"p/a": ("1", 1), "p/b": ("2", 2)}
    assert (aws_mod.partition("cn-north-1"), aws_mod.partition("us-gov-west-1"), aws_mod.partition("eu-west-1")) == ("aws-cn", "aws-us-gov", "aws")


def test_a_new_version_uploads_only_new_content(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    first, c = stage.datasync_plan(cfg, aws=aws)
    old_paths = {f["path"] for f in json.loads(first.manifest.read_text())["files"]}
    stage.datasync_apply(first, c, cfg, poll_s=0)
    cfg = _project(project, wheelhouse, "purepkg==2.0\nnativepkg==1.0\n")
    second, c = stage.datasync_plan(cfg, aws=aws)
    assert second.version != first.version
    tree_copies = {item.path.removeprefix("site-packages/") for item, _ in second.copy if item.path.startswith("site-packages/")}
    assert tree_copies <= old_paths and tree_copies  # unchanged purepkg files: copied inside S3
    new_tree = {f["path"] for f in json.loads(second.manifest.read_text())["files"]} - old_paths
    assert {item.path.removeprefix("site-packages/") for item in second.upload if item.path.startswith("site-packages/")} == new_tree  # only nativepkg
    done = stage.datasync_apply(second, c, cfg, poll_s=0)
    staged = _objects(aws, f"{project.name}/hoist-staging/envs/{second.version}/")
    assert len(staged) == len(second.upload) + len(second.copy) + 1  # the whole version (tree, archives) and the manifest; the record lives under complete/
    # the result says what was published and what travelled: the uploaded objects' bytes as S3 holds them, the copies inside S3
    made = json.loads(second.manifest.read_text())
    uploaded = sum(staged[f"{project.name}/hoist-staging/envs/{second.version}/{item.path}"]["Size"] for item in second.upload)
    assert (done.method, done.version, done.action, done.files, done.bytes) == ("datasync", made["identity"], "transfer", made["totals"]["files"], made["totals"]["bytes"])
    assert (done.uploaded, done.copied, done.bytes_sent) == (len(second.upload), len(second.copy), uploaded)
    assert 0 < uploaded < sum(o["Size"] for o in staged.values())  # the copies did not travel


def test_a_rebuild_that_changes_only_the_archives_is_a_new_version_for_datasync_too(project, wheelhouse, aws):
    # GIVEN a version published through DataSync whose archives hold every file
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    first, c = stage.datasync_plan(cfg, aws=aws)
    stage.datasync_apply(first, c, cfg, poll_s=0)
    # WHEN a rebuild records the hot set: the same tree, other archives and index
    rebuild_archives_only(cfg, ["purepkg/__init__.py"])
    second, c = stage.datasync_plan(cfg, aws=aws)
    # THEN the plan is a transfer to a new version (the old marker does not make it "up to date"), the tree's files are
    # copied inside S3 from the old version's staging, and the new index is uploaded
    assert second.action == "transfer" and second.version != first.version
    assert {item.path for item in second.upload} >= {"archives/index.json"}
    assert not [item for item in second.upload if item.path.startswith("site-packages/")]
    stage.datasync_apply(second, c, cfg, poll_s=0)
    body = aws.s3.get_object(Bucket=BUCKET, Key=f"{project.name}/hoist-staging/envs/{second.version}/archives/index.json")["Body"].read()
    assert json.loads(body)["hot"]["recorded"] is True


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
    assert _objects(aws, f"{project.name}/hoist-staging/complete/") == {}
    assert stage.datasync_plan(cfg, aws=aws)[0].action == "transfer"
    names = [name for name, _ in aws.calls]
    after = names[names.index("StartTaskExecution"):]
    assert after.count("DeleteTask") == 1 and after.count("DeleteLocation") == 2  # what the failed run made is gone too


def test_a_task_that_never_becomes_available_names_the_network_path(project, wheelhouse, aws, monkeypatch):
    """DataSync cannot mount (no 2049 from its group, no mount target in its subnet's zone): the task stays UNAVAILABLE."""
    from sync import datasync

    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    real = aws.datasync.describe_task
    monkeypatch.setattr(datasync, "TASK_READY_S", 0.0)
    monkeypatch.setattr(aws.datasync, "describe_task", lambda **params: {**real(**params), "Status": "UNAVAILABLE", "ErrorCode": "MountFailed"})
    with pytest.raises(SyncError) as err:
        stage.datasync_apply(plan, c, cfg, poll_s=0)
    text = str(err.value)
    assert "still UNAVAILABLE" in text and "MountFailed" in text and "tcp 2049" in text and "sync.datasync.subnet_arn" in text
    names = [name for name, _ in aws.calls]
    assert "StartTaskExecution" not in names and names.count("DeleteTask") == 1 and names.count("DeleteLocation") == 2


def test_expired_credentials_say_so(project, wheelhouse, aws):
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    with Stubber(aws.s3) as stub:
        stub.add_client_error("get_object", service_error_code="ExpiredToken", service_message="The provided token has expired.")
        with pytest.raises(SyncError) as err:
            stage.datasync_plan(cfg, aws=aws)
    assert "credentials have expired" in str(err.value) and "aws sso login" in str(err.value)


def test_complete_means_complete_in_that_place_file_system_access_point_and_root(project, wheelhouse, aws):
    """Issue 23, 1: after a teardown and deploy (new file system), a replaced access point or another efs.root,
    the same version is not on the new place; the record of the old one must not make the sync skip it."""
    from sync.datasync import plan_datasync

    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    stage.datasync_apply(plan, c, cfg, poll_s=0)
    ds = cfg.sync.datasync
    again = lambda dcfg, root=cfg.efs.root: plan_datasync(c, dcfg, root, plan.tree, plan.manifest).action  # noqa: E731
    assert again(ds) == "up-to-date"
    assert again(ds.model_copy(update={"file_system_arn": FS.replace("fs-0123456789abcdef0", "fs-0fedcba987654321f")})) == "transfer"
    assert again(ds.model_copy(update={"access_point_arn": AP.replace("fsap-0123456789abcdef0", "fsap-0aaaaaaaaaaaaaaaa")})) == "transfer"
    assert again(ds, "/other-root") == "transfer"


def test_a_version_rsync_published_is_up_to_date_for_datasync_with_the_same_mtimes_and_gc_drops_its_record(project, wheelhouse, aws):
    """Issue 23, 9: the local/bastion methods write the same record in the staging bucket (the marker's own text), so
    the first DataSync release of that tree plans nothing; and DataSync stages each file's own mtime, the one rsync kept
    (-a), so TransferMode CHANGED would find every file unchanged (DataSync User Guide, "Configuring how to handle files,
    objects, and metadata": CHANGED copies only data and metadata that differ)."""
    from pipeline.records import load_manifest
    from sync.datasync import _staged_file, posix_metadata, version_files
    from sync.efs import MARKER, GcPlan, Version

    cfg = _project(project, wheelhouse, "nativepkg==1.0\n", access_point=False)  # DataSync on the file system's root, as the local folder stands for it
    local, remote = stage.plan(cfg, method="local")
    stage.apply(local, remote, cfg, s3=aws.s3)
    on_efs = project / ".hoist-efs" / "hoist" / "envs" / local.version
    plan, _ = stage.datasync_plan(cfg, aws=aws)
    assert plan.action == "up-to-date" and plan.location.access_point_id is None
    record_key = f"{project.name}/hoist-staging/complete/fs-0123456789abcdef0/no-access-point/~hoist/{local.version}.json"
    assert aws.s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read() == (on_efs / MARKER).read_bytes()  # one record, two places
    for rel, path, size, mode in version_files(local.source, load_manifest(local.manifest)):
        assert posix_metadata(_staged_file(rel, path, size, mode))["file-mtime"] == f"{(on_efs / rel).stat().st_mtime_ns}ns", rel

    # the same version rsynced before [sync.datasync] named the file system: no record in the bucket. DataSync's probe
    # (an EFS -> S3 task whose include filter names the marker) finds it on EFS: recorded, nothing staged or copied,
    # so PreserveDeletedFiles REMOVE never runs over it
    aws.s3.delete_object(Bucket=BUCKET, Key=record_key)
    plan, _ = stage.datasync_plan(cfg, aws=aws)
    assert plan.action == "transfer"
    real_start, started = aws.datasync.start_task_execution, []

    def start(**params):
        """DataSync with an include filter copies only the matching file, path kept, from the source (here the local
        folder standing for the file system's root) to the destination prefix: the probe's one job."""
        started.append(params)
        for pattern in params.get("Includes", []):
            source = project / ".hoist-efs" / pattern["Value"].lstrip("/")
            if source.is_file():
                aws.s3.put_object(Bucket=BUCKET, Key=f"{project.name}/hoist-staging/probe/{plan.version}/{pattern['Value'].lstrip('/')}", Body=source.read_bytes())
        return real_start(**params)

    aws.datasync.start_task_execution = start
    marker_before = (on_efs / MARKER).read_bytes()
    done = stage.datasync_apply(plan, aws, cfg, poll_s=0)
    assert done.action == "up-to-date" and done.uploaded == 0 and len(started) == 1  # the probe only: no copy, no marker task
    assert started[0]["Includes"] == [{"FilterType": "SIMPLE_PATTERN", "Value": f"/hoist/envs/{plan.version}/{MARKER}"}]
    assert not _objects(aws, f"{project.name}/hoist-staging/envs/{plan.version}/")  # nothing staged
    assert aws.s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read() == marker_before == (on_efs / MARKER).read_bytes()
    probe = [p for name, p in aws.calls if name == "CreateTask"][-1]
    assert probe["Options"]["PreserveDeletedFiles"] == "PRESERVE" and probe["Options"]["TransferMode"] == "ALL"  # deletes nothing
    assert [p["Subdirectory"] for name, p in aws.calls if name == "CreateLocationEfs"][-1] == "/"  # the root exists, whatever the version's folder

    gone = GcPlan(base=str(on_efs.parent), remove=(Version(local.version, True, 0, None),), keep=(), where="this machine")
    stage.gc_apply(gone, remote, cfg, s3=aws.s3)
    assert not on_efs.exists() and stage.datasync_plan(cfg, aws=aws)[0].action == "transfer"  # a collected version is not complete anywhere


def test_sse_kms_etags_are_not_md5_and_the_staged_check_compares_sha256_checksums(project, wheelhouse, aws):
    """Issue 23, 4: an SSE-KMS object's ETag is not an MD5 of its data (S3 API Reference, "Object", ETag: objects
    encrypted by SSE-C or SSE-KMS have ETags that are not an MD5 digest). moto returns MD5s, so the bucket's answers
    are given KMS-like ETags here; S3's SHA-256 checksums (ChecksumSHA256 on put, HeadObject ChecksumMode ENABLED)
    are what moto keeps as S3 does. A same-size object with other bytes, already staged, is found and sent again."""
    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    plan, c = stage.datasync_plan(cfg, aws=aws)
    wrong = next(item for item in plan.upload if item.size > 0)
    aws.s3.put_object(Bucket=BUCKET, Key=plan.prefix + wrong.path, Body=b"x" * wrong.size)  # a guess the plan cannot tell apart
    plan, c = stage.datasync_plan(cfg, aws=aws)
    assert plan.present == 1

    def kms_etags(parsed, **_):
        for obj in parsed.get("Contents", []):
            obj["ETag"] = '"' + os.urandom(16).hex() + '"'
        if "ETag" in parsed:
            parsed["ETag"] = '"' + os.urandom(16).hex() + '"'

    for op in ("ListObjectsV2", "HeadObject", "PutObject", "CopyObject"):
        aws.s3.meta.events.register(f"after-call.s3.{op}", kms_etags)
    stage.datasync_apply(plan, c, cfg, poll_s=0)
    body = aws.s3.get_object(Bucket=BUCKET, Key=plan.prefix + wrong.path)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == wrong.sha256  # the wrong bytes were replaced before any task ran
    head = aws.s3.head_object(Bucket=BUCKET, Key=plan.prefix + wrong.path, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(wrong.sha256)).decode()


def test_a_multipart_object_is_compared_by_its_composite_checksum(aws, tmp_path):
    """S3 User Guide, "Checking object integrity": a multipart object's checksum is the checksum of its parts'
    checksums ("-<parts>" on AWS). moto computes it the same way; Hoist's composite of the local file must match it."""
    from sync.datasync import composite_sha256

    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    local = tmp_path / "blob"
    local.write_bytes(b"".join(parts))
    up = aws.s3.create_multipart_upload(Bucket=BUCKET, Key="composite/blob", ChecksumAlgorithm="SHA256")
    done = [{"PartNumber": i, **{k: v for k, v in aws.s3.upload_part(Bucket=BUCKET, Key="composite/blob", UploadId=up["UploadId"], PartNumber=i, Body=p,
                                                                   ChecksumAlgorithm="SHA256").items() if k in ("ETag", "ChecksumSHA256")}}
            for i, p in enumerate(parts, 1)]
    aws.s3.complete_multipart_upload(Bucket=BUCKET, Key="composite/blob", UploadId=up["UploadId"], MultipartUpload={"Parts": done})
    theirs = aws.s3.head_object(Bucket=BUCKET, Key="composite/blob", ChecksumMode="ENABLED")["ChecksumSHA256"]
    ours = composite_sha256(local, [len(p) for p in parts])
    assert ours.endswith("-2") and ours.split("-")[0] == theirs.split("-")[0]
    assert composite_sha256(local, [len(b"".join(parts))]).split("-")[0] != theirs.split("-")[0]  # like with like: the full-object digest is another value


def test_the_lifecycle_rule_expires_staging_keeps_other_rules_and_never_covers_a_record(project, wheelhouse, aws):
    """Issue 23, 17. PutBucketLifecycleConfiguration replaces the whole configuration (S3 API Reference), so the
    user's own rules are read and kept; a rule's Filter.Prefix covers every key that starts with it."""
    from sync import record
    from sync.datasync import ensure_lifecycle

    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    ds = cfg.sync.datasync
    theirs = {"ID": "their-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 90}}
    aws.s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [theirs]})
    try:
        assert ensure_lifecycle(aws, ds) is True
        rules = aws.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
        assert any(r["ID"] == "their-logs" for r in rules)
        prefixes = {r["Filter"]["Prefix"] for r in rules}
        assert f"{ds.prefix}/envs/" in prefixes and f"{ds.prefix}/markers/" in prefixes
        key = record.key(ds.prefix, record.datasync_location(ds, cfg.efs.root), "a" * 64)
        assert not any(key.startswith(p) for p in prefixes)
        assert ensure_lifecycle(aws, ds) is False  # already there: not put again
    finally:
        aws.s3.delete_bucket_lifecycle(Bucket=BUCKET)


def test_the_sweep_removes_what_a_killed_run_left_and_nothing_a_live_run_or_another_prefix_uses(project, wheelhouse, aws):
    """Issue 23, 17: a SIGKILL skips the run's own clean-up; its tagged tasks and locations go with the next run
    (or efs-gc). Tasks before locations: a location a task uses cannot be deleted (DataSync API, DeleteLocation)."""
    import platform

    from sync.datasync import sweep, tags

    cfg = _project(project, wheelhouse, "purepkg==2.0\n")
    ds = cfg.sync.datasync

    def leftover(version, staging_tags):
        src = aws.datasync.create_location_s3(S3BucketArn=f"arn:aws:s3:::{BUCKET}", Subdirectory=f"/{version}", S3Config={"BucketAccessRoleArn": ROLE},
                                              Tags=staging_tags)["LocationArn"]
        dst = aws.datasync.create_location_s3(S3BucketArn=f"arn:aws:s3:::{BUCKET}", Subdirectory=f"/{version}-dst", S3Config={"BucketAccessRoleArn": ROLE},
                                              Tags=staging_tags)["LocationArn"]
        task = aws.datasync.create_task(SourceLocationArn=src, DestinationLocationArn=dst, Name=version, Tags=staging_tags)["TaskArn"]
        return {task, src, dst}

    killed = leftover("d" * 64, tags(ds, "d" * 64))
    running = leftover("e" * 64, tags(ds, "e" * 64))
    aws.s3.put_object(Bucket=BUCKET, Key=f"{ds.prefix}/locks/{'e' * 64}.lock", Body=f"{platform.node()}:{os.getpid()}:{int(time.time())}".encode())
    other = leftover("f" * 64, [{"Key": "hoist:staging", "Value": f"s3://{BUCKET}/someone-else/"}, {"Key": "hoist:version", "Value": "f" * 64}])
    removed = sweep(aws, ds)
    assert set(removed) == killed
    assert [a for a in removed if ":task/" in a] == removed[:1]  # the task first
    left = {t["TaskArn"] for t in aws.datasync.list_tasks()["Tasks"]} | {loc["LocationArn"] for loc in aws.datasync.list_locations()["Locations"]}
    assert running | other <= left and not killed & left
    for arn in running | other:  # leave the shared server clean for the other tests
        if ":task/" in arn:
            aws.datasync.delete_task(TaskArn=arn)
    for arn in running | other:
        if ":task/" not in arn:
            aws.datasync.delete_location(LocationArn=arn)


def test_gc_through_datasync_keeps_the_newest_and_the_deployed_empties_the_rest_with_datasync_and_sweeps(aws, tmp_path):
    """Issue 23, 17: a DataSync-only install collects old versions with DataSync itself. The records in the bucket say
    which versions are complete (it cannot list EFS); each collected version's record goes first, then a task from an
    empty S3 prefix into its folder with PreserveDeletedFiles REMOVE ("REMOVE - Deletes destination files that aren't
    present in the source", DataSync API reference, Options) and TransferMode CHANGED (REMOVE is refused with ALL).
    What a killed run left is swept too. No build: the records are the input."""
    from pipeline.config import DataSyncConfig
    from sync import datasync, record
    from sync.datasync import tags

    ds = DataSyncConfig(bucket=BUCKET, prefix=f"{tmp_path.name}/hoist-staging", region="us-east-1", file_system_arn=FS, access_point_arn=AP,
                        subnet_arn=SUBNET, security_group_arns=(SG,), s3_role_arn=ROLE)
    where = record.datasync_location(ds, "/hoist")
    old, deployed, middle, newest = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
    for version in (old, deployed, middle, newest):  # oldest first; S3's LastModified has whole seconds
        record.write(aws.s3, BUCKET, ds.prefix, where, version, record.body(where, version, "datasync"))
        time.sleep(1.05)
    plan = datasync.plan_gc(aws, ds, "/hoist", keep=1, protect={deployed[:16]})
    assert [v.name for v in plan.remove] == [middle, old] and {v.name for v in plan.keep} == {newest, deployed}
    killed = aws.datasync.create_location_s3(S3BucketArn=f"arn:aws:s3:::{BUCKET}", Subdirectory="/x", S3Config={"BucketAccessRoleArn": ROLE},
                                             Tags=tags(ds, "d" * 64))["LocationArn"]
    before = len(aws.calls)
    assert datasync.apply_gc(plan, aws, ds, "/hoist", poll_s=0) == [middle, old]
    assert set(record.listed(aws.s3, BUCKET, ds.prefix, where)) == {newest, deployed}  # the records of the collected ones are gone
    calls = aws.calls[before:]
    efs = [p["Subdirectory"] for name, p in calls if name == "CreateLocationEfs"]
    assert efs == [f"/envs/{middle}", f"/envs/{old}"]  # each version's own folder, through the writer access point
    sources = [p["Subdirectory"] for name, p in calls if name == "CreateLocationS3"]
    assert sources == [f"/{ds.prefix}/gc-empty/"] * 2 and not _objects(aws, f"{ds.prefix}/gc-empty/")  # an empty source
    for name, p in calls:
        if name == "CreateTask":
            assert p["Options"]["PreserveDeletedFiles"] == "REMOVE" and p["Options"]["TransferMode"] == "CHANGED"
    assert [n for n, _ in calls].count("StartTaskExecution") == 2 and [n for n, _ in calls].count("DeleteTask") == 2
    deleted = {p["LocationArn"] for name, p in calls if name == "DeleteLocation"}
    assert killed in deleted and len(deleted) == 5  # the killed run's leftover, and each removal's two locations
