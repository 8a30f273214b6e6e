"""The rsync and postgresql strategies: configuration, synth-time validation, and the stack's archive bucket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.clients import host
from functions.models.config import ConfigError, parse_instance_config, parse_project_config

SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bitbucket-db-AbCdEf"


def instance(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "prod",
        "base_url": "https://bitbucket.example.com",
        "credentials_secret": "bitbucket/prod",
        "home": {
            "strategy": "rsync",
            "instance_id": "i-0123456789abcdef0",
            "home_path": "/var/atlassian/application-data/bitbucket",
            "staging_path": "/backup/staging",
            "exclude_repos": [7],
        },
        "database": {
            "strategy": "postgresql",
            "instance_id": "i-0123456789abcdef0",
            "user": "bitbucket",
            "dbname": "bitbucket",
            "password_secret": SECRET,
            "dump_path": "/backup/dumps",
        },
        **overrides,
    }


def test_rsync_and_postgresql_parse() -> None:
    config = parse_instance_config(instance())
    assert config.home.strategy == "rsync" and config.database.strategy == "postgresql"
    assert config.uses_archive and config.archive.work_path.startswith("/")


@pytest.mark.parametrize(
    ("part", "field", "value", "expected"),
    [
        ("home", "staging_path", "/var/atlassian/application-data/bitbucket/staging", "must not contain each other"),
        ("home", "home_path", "relative/path", "instance 'prod': home.home_path"),
        ("database", "password_secret", "bitbucket/db", "instance 'prod': database.password_secret"),
        ("database", "jobs", 0, "instance 'prod': database.jobs"),
    ],
)
def test_invalid_fields_are_named(part: str, field: str, value: Any, expected: str) -> None:
    raw = instance()
    raw[part] = {**raw[part], field: value}
    with pytest.raises(ConfigError, match=expected):
        parse_project_config({"instances": [raw]})


def test_host_parameters_are_checked_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that could leave its quotes in the document is refused here, naming the step; no script is sent."""
    monkeypatch.setenv("HOST_DOCUMENT_PREFIX", "Stack-host-")
    with pytest.raises(
        host.HostCommandFailed, match=r"^copy home: the Bitbucket home directory '/h; rm -rf /' cannot be sent"
    ):
        host.start("i-0123456789abcdef0", "RsyncHome", {"home": "/h; rm -rf /", "staging": "/s"}, step="copy home",
                   timeout=60)  # fmt: skip
    with pytest.raises(host.HostCommandFailed, match="extra rsync excludes"):
        host._parameters("RsyncHome", {"home": "/h", "staging": "/s", "excludes": "it's"}, "copy home")
    assert host._parameters("RsyncHome", {"home": "/h", "staging": "/s", "excludes": "/a|*.tmp"}, "x") == {
        "home": ["/h"],
        "staging": ["/s"],
        "excludes": ["/a|*.tmp"],
    }


@pytest.mark.slow
def test_stack_creates_a_private_encrypted_versioned_archive_bucket() -> None:
    from rehearsal.synth import synthesized
    from stacks import nag

    made = synthesized({"bundling": "none", "instances": [instance()]}, checks=True)
    used = {nag.pattern_for(rule) for rule in made.acknowledged}
    assert used >= nag.ARCHIVE_ONLY
    template = made.template
    buckets = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    assert len(buckets) == 1
    props = buckets[0]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"]
    assert any("aws:SecureTransport" in json.dumps(p) for p in policies)
    envs = [
        r["Properties"].get("Environment", {}).get("Variables", {})
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    assert all("ARCHIVE_BUCKET" in e for e in envs if "RUNS_TABLE" in e)


def mysql_database(**overrides: Any) -> dict[str, Any]:
    return {
        "strategy": "mysql",
        "instance_id": "i-0123456789abcdef0",
        "user": "bitbucket",
        "dbname": "bitbucket",
        "password_secret": SECRET,
        "dump_path": "/backup/dumps",
        **overrides,
    }


def test_mysql_parses_with_its_own_port_and_refuses_what_only_postgresql_has() -> None:
    config = parse_instance_config(instance(database=mysql_database()))
    assert config.database.strategy == "mysql" and config.uses_archive
    assert config.database.model_dump()["port"] == 3306
    with pytest.raises(ConfigError, match=r"instance 'prod': database\.jobs"):
        parse_project_config({"instances": [instance(database=mysql_database(jobs=2))]})
    with pytest.raises(ConfigError, match=r"instance 'prod': database\.dbname"):
        parse_project_config({"instances": [instance(database=mysql_database(dbname="x`; DROP"))]})
    # A dump is not taken at the home's moment: no zero-downtime backup with it.
    with pytest.raises(ConfigError, match="zero"):
        parse_project_config({"instances": [instance(home={"strategy": "none"}, database=mysql_database(),
                                                     zero_downtime=True)]})  # fmt: skip
    # The drill checks the restored tables from a host.
    with pytest.raises(ConfigError, match=r"drill\.host_instance_id is required to check .*the dumped database"):
        parse_project_config({"instances": [instance(database=mysql_database(), drill={"schedule": "rate(7 days)"})]})


def test_a_btrfs_snapshot_needs_its_directory_outside_the_home_and_replaces_the_locked_pass() -> None:
    home = instance()["home"] | {"snapshot": "btrfs", "snapshot_path": "/var/atlassian/snapshots"}
    config = parse_instance_config(instance(home=home))
    assert config.home.model_dump()["snapshot"] == "btrfs"
    cases = [
        ({"snapshot_path": None}, "snapshot and snapshot_path go together"),
        ({"snapshot": None}, "snapshot and snapshot_path go together"),
        ({"snapshot_path": "/var/atlassian/application-data/bitbucket/snaps"}, "outside home_path and staging_path"),
        ({"snapshot_path": "/backup"}, "outside home_path and staging_path"),  # contains the staging directory
        ({"locked_pass_parallel": 4}, "which a snapshot replaces"),
        ({"locked_pass_scan": "changed"}, "which a snapshot replaces"),
        ({"snapshot": "zfs"}, r"home\.snapshot"),
    ]
    for change, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            parse_project_config({"instances": [instance(home={**home, **change})]})


def test_postgresql_fslevel_needs_its_data_directory_inside_a_snapshotted_home() -> None:
    """One snapshot must hold the database and the home at the same moment: an EBS home's mount point, or a btrfs
    home; the database is then no part of its own, and the state machine skips its copy."""
    from functions.models.events import RunFlow

    fslevel = {"strategy": "postgresql-fslevel", "data_directory": "/var/atlassian/application-data/bitbucket/pgdata"}
    btrfs = instance()["home"] | {"snapshot": "btrfs", "snapshot_path": "/var/atlassian/snapshots"}
    config = parse_instance_config(instance(home=btrfs, database=fslevel))
    assert config.parts == ["home"] and config.database.strategy == "postgresql-fslevel"
    assert RunFlow.of(config).database.strategy == "none"
    assert "PostgreSQL's data directory /var/atlassian/application-data/bitbucket/pgdata" in config.parts_text
    ebs = {"strategy": "amazon-ebs", "instance_id": "i-0123456789abcdef0", "volumes": ["/dev/xvdf"],
           "mount_points": ["/var/atlassian/application-data"]}  # fmt: skip
    assert parse_instance_config(instance(home=ebs, database=fslevel)).parts == ["home"]
    refused = [
        instance(database=fslevel),  # an rsync home without a snapshot: files copied one by one, not one moment
        instance(home=btrfs, database={**fslevel, "data_directory": "/var/lib/postgresql/15/main"}),
        instance(home={**ebs, "mount_points": ["/data"]}, database=fslevel),
        instance(home={**ebs, "mount_points": []}, database=fslevel),
        instance(home={"strategy": "none"}, database=fslevel),
    ]
    for raw in refused:
        with pytest.raises(ConfigError, match="must lie under a mount point of an amazon-ebs home"):
            parse_project_config({"instances": [raw]})
