"""The archive strategies' disaster-recovery copies over moto (two regions): a server-side copy into the target's
bucket under the same key, tagged like the original plus its origin, found again by those tags (so a retried step
does not copy twice), re-tagged and deleted there like the original."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from moto import mock_aws

from functions.models.config import parse_instance_config
from functions.strategies import COMPLETE, COPY_OF_TAG, IN_PROGRESS, SOURCE_REGION_TAG, STATUS_TAG, catalog_tags
from functions.strategies.host_copy import RsyncStrategy
from tests.infra.test_copies_template import ARCHIVES

SOURCE, DR = "eu-west-1", "eu-central-1"
BACKUP = "archived-20260101-020000"


@pytest.fixture
def strategy(monkeypatch: pytest.MonkeyPatch, moto_clients: None) -> Iterator[RsyncStrategy]:
    with mock_aws():
        monkeypatch.setenv("ARCHIVE_BUCKET", "source-archives")
        boto3.client("s3", region_name=SOURCE).create_bucket(
            Bucket="source-archives", CreateBucketConfiguration={"LocationConstraint": SOURCE}
        )
        boto3.client("s3", region_name=DR).create_bucket(
            Bucket="dr-archives-eu-central-1", CreateBucketConfiguration={"LocationConstraint": DR}
        )
        config = parse_instance_config({**ARCHIVES, "copies": ARCHIVES["copies"][:1]})
        strategy = RsyncStrategy(config)
        key = strategy.key(BACKUP)
        boto3.client("s3", region_name=SOURCE).put_object(
            Bucket="source-archives",
            Key=key,
            Body=b"archive bytes",
            Metadata={"sha256": "abc123"},
            Tagging=urlencode(catalog_tags("archived", BACKUP, "home")),
        )
        yield strategy


def _tags(bucket: str, key: str) -> dict[str, Any]:
    tagset = boto3.client("s3", region_name=DR).get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in tagset}


def test_an_archive_is_copied_with_its_catalog_tags_once(strategy: RsyncStrategy) -> None:
    (original,) = strategy.artifacts(BACKUP)
    bound = strategy.at(strategy.instance.copies[0])
    copy_id = bound.copy_to(original, SOURCE)
    key = strategy.key(BACKUP)
    assert copy_id == f"s3://dr-archives-eu-central-1/{key}"
    tags = _tags("dr-archives-eu-central-1", key)
    assert tags[COPY_OF_TAG] == original.id and tags[SOURCE_REGION_TAG] == SOURCE and tags[STATUS_TAG] == IN_PROGRESS
    (copy,) = bound.artifacts(BACKUP)
    assert copy.details["copy_of"] == original.id and copy.details["sha256"] == "abc123"
    assert bound.copy_to(original, SOURCE) == copy_id  # a retried step finds the copy
    versions = boto3.client("s3", region_name=DR).list_object_versions(Bucket="dr-archives-eu-central-1")
    assert len(versions.get("Versions", [])) == 1

    bound.set_status(copy, COMPLETE)
    assert _tags("dr-archives-eu-central-1", key)[STATUS_TAG] == COMPLETE
    assert strategy.artifacts(BACKUP)[0].status == IN_PROGRESS  # the original is untouched
    bound.delete(copy)
    assert bound.artifacts(BACKUP) == [] and strategy.artifacts(BACKUP) != []
