"""pipeline/aws.py: boto3's paginators behind one wrapper, and AWS error codes told from one table."""
from __future__ import annotations

import pytest

from deploy import alias
from pipeline import aws
from pipeline.errors import DeployError


@pytest.fixture
def lam(stubbed):
    return stubbed("lambda")


def _version(n: str, efs: str = "") -> dict:
    return {"Version": n, "Environment": {"Variables": {"HOIST_EFS_VERSION": efs}}, "Description": f"v{n}"}


def test_every_page_is_read_through_the_paginator(lam):
    # GIVEN two pages of versions, the second asked for with the first's marker
    client, stub = lam
    stub.add_response("list_versions_by_function", {"Versions": [_version("$LATEST"), _version("2", "b")], "NextMarker": "m1"}, {"FunctionName": "fn"})
    stub.add_response("list_versions_by_function", {"Versions": [_version("1", "a"), _version("10", "c")]}, {"FunctionName": "fn", "Marker": "m1"})
    # WHEN the versions are listed, THEN all of them, $LATEST left out, in number order
    assert [(v.version, v.efs_version) for v in alias.versions(client, "fn")] == [("1", "a"), ("2", "b"), ("10", "c")]


def test_an_error_on_a_later_page_is_told_by_the_context(lam):
    client, stub = lam
    stub.add_response("list_versions_by_function", {"Versions": [_version("1")], "NextMarker": "m1"}, {"FunctionName": "fn"})
    stub.add_client_error("list_versions_by_function", "ResourceNotFoundException", "Function not found: fn", expected_params={"FunctionName": "fn", "Marker": "m1"})
    with pytest.raises(DeployError) as err:
        alias.versions(client, "fn")
    assert err.value.what == "the function or its alias does not exist: list_versions_by_function said Function not found: fn"
    assert err.value.fix == "deploy first: invoke deploy" and err.value.where == "lambda:list_versions_by_function"


def test_pages_are_fetched_as_they_are_read(lam):
    client, stub = lam
    stub.add_response("list_layer_versions", {"LayerVersions": [{"LayerVersionArn": "arn:1", "Version": 1}], "NextMarker": "m1"}, {"LayerName": "l"})
    first = next(aws.paginate(client, "list_layer_versions", error=DeployError, LayerName="l"))
    assert [v["LayerVersionArn"] for v in first["LayerVersions"]] == ["arn:1"]  # no second call was made (the Stubber would fail)


def test_one_table_general_meanings_and_each_context_over_them():
    assert aws.meanings()["ExpiredToken"] == aws.meanings("datasync")["ExpiredToken"]
    assert aws.meanings("datasync")["NoSuchBucket"][0] == "the staging bucket does not exist"
    assert aws.meanings("artifact-bucket")["NoSuchBucket"][0] == "the artifact bucket does not exist"
    assert aws.meanings()["NoSuchBucket"][0] == "the bucket does not exist"
    for context, table in aws.CONTEXTS.items():
        assert table and all(what and fix for what, fix in table.values()), context
