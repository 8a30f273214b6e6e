"""A backup's status in the catalog: complete when it holds every part it had to hold. A part added to the
configuration later (a Mesh node, the search index) is not required of the backups made before the catalog first
held it; a part the catalog held already is."""

from __future__ import annotations

from functions.catalog import backup_status, parts_since, required_parts
from functions.models.config import parse_instance_config
from functions.strategies import COMPLETE, Artifact

CONFIG = parse_instance_config(
    {
        "name": "prod",
        "base_url": "https://bitbucket.example.com",
        "credentials_secret": "s",
        "home": {"strategy": "amazon-ebs", "instance_id": "i-0000000000000000a", "volumes": ["/dev/xvdf"]},
        "database": {"strategy": "amazon-rds", "instance_id": "db"},
        "search": {
            "strategy": "opensearch",
            "endpoint": "https://search.internal",
            "repository": "snaps",
            "credentials_secret": "search",
        },
    }
)


def artifact(backup_id: str, part: str) -> Artifact:
    return Artifact(
        kind="x", id=f"{backup_id}-{part}", part=part, backup_id=backup_id, state="completed", status=COMPLETE
    )


def backup(backup_id: str, *parts: str) -> list[Artifact]:
    return [artifact(backup_id, part) for part in parts]


def test_a_backup_made_before_the_search_index_was_added_is_complete_without_it() -> None:
    grouped = {
        "prod-20261201-010000": backup("prod-20261201-010000", "home", "database"),
        "prod-20261202-010000": backup("prod-20261202-010000", "home", "database", "search"),
    }
    since = parts_since(grouped)
    assert backup_status(CONFIG, grouped["prod-20261201-010000"], since) == "complete"
    assert required_parts(CONFIG, "prod-20261201-010000", since) == ["home", "database"]
    assert backup_status(CONFIG, grouped["prod-20261202-010000"], since) == "complete"
    # Without the catalog's history every configured part is required (the drill restores them all).
    assert backup_status(CONFIG, grouped["prod-20261201-010000"]) == "incomplete"


def test_a_part_the_catalog_already_held_is_required() -> None:
    grouped = {
        "prod-20261201-010000": backup("prod-20261201-010000", "home", "database", "search"),
        "prod-20261202-010000": backup("prod-20261202-010000", "home", "database"),  # its search snapshot is gone
        "prod-20261203-010000": backup("prod-20261203-010000", "home", "search"),  # and this one's database
    }
    since = parts_since(grouped)
    assert backup_status(CONFIG, grouped["prod-20261202-010000"], since) == "incomplete"
    assert backup_status(CONFIG, grouped["prod-20261203-010000"], since) == "incomplete"
    assert backup_status(CONFIG, grouped["prod-20261201-010000"], since) == "complete"


def test_a_part_no_backup_holds_yet_is_required_of_none() -> None:
    grouped = {"prod-20261201-010000": backup("prod-20261201-010000", "home", "database")}
    assert backup_status(CONFIG, grouped["prod-20261201-010000"], parts_since(grouped)) == "complete"
