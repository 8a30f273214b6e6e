"""Zero-downtime mode: refused at synth time without atomic snapshots, and the run-time version check."""

from __future__ import annotations

from typing import Any

import pytest

from functions.errors import PreflightFailed
from functions.models.config import ConfigError, InstanceConfig, parse_instance_config, parse_project_config
from functions.preflight import check_zero_downtime_version
from tests.unit.test_copy_strategy_config import instance as copy_instance

EBS = {
    "strategy": "amazon-ebs",
    "instance_id": "i-0123456789abcdef0",
    # Home and data volume: one CreateSnapshots call is crash-consistent across both.
    "volumes": ["/dev/xvdf", "/dev/xvdg"],
    "mount_points": ["/var/atlassian/application-data/bitbucket"],
    "freeze": True,
}
RDS = {"strategy": "amazon-rds", "instance_id": "bitbucket-prod"}
AURORA = {"strategy": "amazon-aurora", "cluster_id": "bitbucket-prod"}
NONE = {"strategy": "none"}


def instance(home: dict[str, Any], database: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    raw = copy_instance(home=home, database=database)
    return {**raw, **overrides}


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_project_config({"instances": [raw]})
    return str(caught.value)


@pytest.mark.parametrize(("home", "database"), [(EBS, RDS), (EBS, AURORA), (EBS, NONE), (NONE, RDS)])
def test_atomic_snapshot_strategies_are_accepted(home: dict[str, Any], database: dict[str, Any]) -> None:
    config = parse_instance_config(instance(home, database, zero_downtime=True))
    assert config.zero_downtime is True
    # What the stack stores and the Lambdas read back keeps the mode.
    assert parse_instance_config(config.model_dump(mode="json")).zero_downtime is True


def test_off_by_default() -> None:
    assert parse_instance_config(instance(EBS, RDS)).zero_downtime is False
    assert InstanceConfig.model_fields["zero_downtime"].default is False


def test_rsync_home_is_refused() -> None:
    rsync = copy_instance()["home"]
    text = refusal(instance(rsync, RDS, zero_downtime=True))
    assert text.startswith("instance 'prod': zero_downtime ") and "\n" not in text
    assert "home.strategy 'rsync'" in text and "database" not in text.split("cannot")[0]


def test_pg_dump_database_is_refused() -> None:
    postgres = copy_instance()["database"]
    text = refusal(instance(EBS, postgres, zero_downtime=True))
    assert text.startswith("instance 'prod': zero_downtime ") and "\n" not in text
    assert "database.strategy 'postgresql'" in text and "home.strategy" not in text


def test_both_refused_in_one_line() -> None:
    text = refusal(copy_instance(zero_downtime=True))
    assert "home.strategy 'rsync' and database.strategy 'postgresql'" in text and "\n" not in text


def test_the_same_strategies_are_fine_without_zero_downtime() -> None:
    assert parse_instance_config(copy_instance(zero_downtime=False)).zero_downtime is False


def test_a_broken_home_is_reported_once_not_as_a_zero_downtime_problem() -> None:
    text = refusal(instance({**EBS, "volumes": ["sdf"]}, RDS, zero_downtime=True))
    assert text.startswith("instance 'prod': home.volumes") and "zero_downtime" not in text


@pytest.mark.parametrize("version", ["4.8.0", "4.8", "4.10.2", "5.0.0", "7.21.0", "8.19.1", "9.4.0", "10.0.0-rc1"])
def test_supported_versions(version: str) -> None:
    assert check_zero_downtime_version(version) == version


@pytest.mark.parametrize("version", ["4.7.1", "4.0.0", "3.11.0", "4.7"])
def test_older_versions_are_refused_naming_step_version_and_requirement(version: str) -> None:
    with pytest.raises(PreflightFailed) as caught:
        check_zero_downtime_version(version)
    text = str(caught.value)
    assert text.startswith("validate: ") and f"Bitbucket {version} " in text and "4.8 or later" in text


@pytest.mark.parametrize("version", ["", "unknown", "v8", "8"])
def test_an_unreadable_version_is_refused(version: str) -> None:
    with pytest.raises(PreflightFailed, match="cannot read Bitbucket's version"):
        check_zero_downtime_version(version)
