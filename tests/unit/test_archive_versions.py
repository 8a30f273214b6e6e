"""Archives are versioned: the catalog's artifact is the version the backup made (tagged complete by finalize), and a
restore downloads that version by its VersionId, not whatever was written to the key later. Immutable instances'
archives are retained with S3 Object Lock; pruning and the failure path then keep them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from moto import mock_aws

from functions import catalog
from functions.models.config import parse_instance_config
from functions.strategies import COMPLETE, IN_PROGRESS, catalog_tags
from functions.strategies.host_copy import RsyncStrategy
from functions.strategies.host_copy_restore import RsyncRestorer
from tests.infra.test_copies_template import ARCHIVES

REGION = "eu-west-1"
BUCKET = "source-archives"
BACKUP = "archived-20260101-020000"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, moto_clients: None) -> Iterator[Any]:
    with mock_aws():
        monkeypatch.setenv("ARCHIVE_BUCKET", BUCKET)
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True
        )
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def _strategy(**fields: Any) -> RsyncStrategy:
    return RsyncStrategy(parse_instance_config({**ARCHIVES, "copies": [], "schedule": "rate(1 day)", **fields}))


def _upload(s3: Any, strategy: RsyncStrategy, body: bytes, status: str) -> str:
    tags = catalog_tags("archived", BACKUP, "home", status)
    put = s3.put_object(Bucket=BUCKET, Key=strategy.key(BACKUP), Body=body, Tagging=urlencode(tags))
    return str(put["VersionId"])


def test_a_restore_downloads_the_version_the_backup_made_not_a_newer_one(s3: Any) -> None:
    strategy = _strategy()
    made = _upload(s3, strategy, b"the backup", IN_PROGRESS)
    (artifact,) = strategy.artifacts(BACKUP)
    strategy.set_status(artifact, COMPLETE)  # finalize
    # Later someone writes another version to the same key, with tags that look like ours.
    _upload(s3, strategy, b"something else", IN_PROGRESS)
    (artifact,) = strategy.artifacts(BACKUP)
    assert artifact.details["version_id"] == made and artifact.status == COMPLETE
    restorer = RsyncRestorer(strategy.instance)
    plan = restorer._archive_plan([artifact])
    assert plan["version_id"] == made
    download = restorer._download(plan | {"instance_id": "i-0", "work_path": "/var/lib/bitbucket-diy-backup/x"})
    assert download["versionId"] == made  # the restore document's parameter (host script: download --version-id)
    # The newer version was never marked complete: finalize tagged the backup's version only.
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=strategy.key(BACKUP))["Versions"]
    newest = next(v for v in versions if v["IsLatest"])
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=strategy.key(BACKUP), VersionId=newest["VersionId"])["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["bitbucket-backup:status"] == IN_PROGRESS


def test_an_immutable_archive_is_retained_and_then_held_from_pruning(s3: Any) -> None:
    strategy = _strategy(immutable={"mode": "compliance"}, keep_backups=3)
    _upload(s3, strategy, b"the backup", IN_PROGRESS)
    (artifact,) = strategy.artifacts(BACKUP)
    strategy.set_status(artifact, COMPLETE)
    locked, failed = catalog.lock(strategy.instance, [(strategy, artifact)])
    assert failed == [] and locked == [f"retained {artifact.id} (compliance, 3 days)"]
    held = strategy.held(artifact)
    assert held is not None and "object-locked (COMPLIANCE)" in held


def test_the_deployment_id_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.errors import ConfigInvalid

    monkeypatch.delenv("DEPLOYMENT_ID")
    with pytest.raises(ConfigInvalid, match="DEPLOYMENT_ID"):
        catalog_tags("archived", BACKUP, "home")
