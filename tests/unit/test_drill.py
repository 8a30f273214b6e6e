"""The drill's throw-away target names: valid restore targets for every strategy, even for the longest names."""

from __future__ import annotations

from typing import Any

import pytest

from functions import drill
from functions.models.config import parse_instance_config
from functions.models.restore import RestoreTarget

LONGEST = "a" * 20 + "-" + "b" * 19  # 40 characters, the longest instance name
HOST = "i-0d0d0d0d0d0d0d0d0"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"


def instance(database: dict[str, Any], home: dict[str, Any] | None = None) -> Any:
    return parse_instance_config(
        {
            "name": LONGEST,
            "base_url": "https://bitbucket.example.com",
            "credentials_secret": "s",
            "home": home or {"strategy": "none"},
            "database": database,
            "drill": {"schedule": "rate(7 days)", "host_instance_id": HOST, "work_path": "/srv/drill"},
        }
    )


@pytest.mark.parametrize(
    "database",
    [
        {"strategy": "amazon-rds", "instance_id": "bitbucket"},
        {"strategy": "amazon-aurora", "cluster_id": "bitbucket"},
        {
            "strategy": "postgresql",
            "instance_id": HOST,
            "user": "u",
            "dbname": "bitbucket",
            "password_secret": SECRET,
            "dump_path": "/var/tmp/dumps",
        },
    ],
)
def test_targets_are_valid_restore_targets_for_the_longest_names(database: dict[str, Any]) -> None:
    backup_id = f"{LONGEST}-20261124-063000"
    home = {"strategy": "rsync", "instance_id": HOST, "home_path": "/home/bb", "staging_path": "/staging"}
    found = drill.targets(instance(database, home), backup_id)
    target = RestoreTarget.model_validate(found)  # raises on an identifier RDS or PostgreSQL would refuse
    assert target.home is not None and target.home.path == f"/srv/drill/{backup_id}" and target.home.instance_id == HOST
    assert target.database is not None
    names = [target.database.instance_id, target.database.cluster_id, target.database.writer_instance_id]
    assert all(n is None or (n.startswith("restored-drill-") and len(n) <= 63) for n in names)
    assert target.database.cluster_id is None or target.database.cluster_id != target.database.writer_instance_id
    if target.database.dbname:
        assert target.database.dbname == f"drill_{LONGEST.replace('-', '_')}_20261124_063000"
        assert len(target.database.dbname) <= 63 and target.database.host_instance_id == HOST
