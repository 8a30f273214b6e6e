"""The cdk.json configuration: a valid one parses, every wrong one stops with a line naming instance and field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from functions.models.config import (
    ConfigError,
    InstanceConfig,
    ProjectConfig,
    parse_instance_config,
    parse_project_config,
)
from functions.models.part_config import EbsHomeConfig, RdsDatabaseConfig


def instance(name: str = "prod", **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "base_url": "https://bitbucket.example.com/",
        "credentials_secret": f"bitbucket/{name}/backup-user",
        "home": {
            "strategy": "amazon-ebs",
            "instance_id": "i-0123456789abcdef0",
            "volumes": ["/dev/xvdf", "vol-0123456789abcdef0"],
            "mount_points": ["/var/atlassian/application-data/bitbucket"],
            "freeze": True,
        },
        "database": {"strategy": "amazon-rds", "instance_id": "bitbucket-prod"},
        "schedule": "cron(0 2 * * ? *)",
        "keep_backups": 5,
    }
    raw.update(overrides)
    return raw


def project(*instances: dict[str, Any]) -> dict[str, Any]:
    return {"instances": list(instances or [instance()]), "notification_emails": ["ops@example.com"]}


def config_error(raw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_project_config(raw)
    text = str(caught.value)
    # What an administrator reads at `cdk synth`: plain lines, nothing of pydantic's or Python's internals.
    for noise in ("Traceback", 'File "', "errors.pydantic.dev", "validation error for", "input_value", "type="):
        assert noise not in text, f"{noise!r} in {text!r}"
    # No chained pydantic error either: a traceback printed by the CDK app would show it.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert text.strip() == text and text
    return text


def test_valid_config_parses() -> None:
    parsed = parse_project_config(project(instance("prod"), instance("staging", schedule="rate(1 day)")))
    assert isinstance(parsed, ProjectConfig)
    assert [i.name for i in parsed.instances] == ["prod", "staging"]
    prod = parsed.instances[0]
    assert prod.base_url == "https://bitbucket.example.com"  # trailing slash dropped
    assert isinstance(prod.home, EbsHomeConfig) and prod.home.volumes == ["/dev/xvdf", "vol-0123456789abcdef0"]
    assert isinstance(prod.database, RdsDatabaseConfig) and prod.database.instance_id == "bitbucket-prod"
    assert prod.parts == ["home", "database"]
    assert prod.keep_backups == 5
    assert parsed.notification_emails == ["ops@example.com"]


def test_instance_config_round_trips_through_json() -> None:
    # The stack stores model_dump_json() in SSM and the Lambdas parse it back: the two must agree.
    config = InstanceConfig.model_validate(instance())
    assert parse_instance_config(config.model_dump(mode="json")) == config


def test_only_one_part_is_enough() -> None:
    parsed = parse_project_config(project(instance(home={"strategy": "none"})))
    assert parsed.instances[0].parts == ["database"]


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw.pop(key)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = raw
        for key in parents:
            target = target[key]
        target[last] = value

    return change


def _home_without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["home"].pop(key)


# (id, change to the 'prod' instance, words the error line must contain after "instance 'prod'")
INSTANCE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    ("missing base_url", _without("base_url"), ("base_url", "required")),
    ("bad url", _set("base_url", "bitbucket.example.com/x?y=1"), ("base_url", "not an http(s) URL")),
    ("ftp url", _set("base_url", "ftp://bitbucket.example.com"), ("base_url",)),
    ("unknown home strategy", _set("home.strategy", "amazon-efs"), ("home", "amazon-efs")),
    ("unknown database strategy", _set("database.strategy", "mysql-dump"), ("database", "mysql-dump")),
    ("ebs without instance_id", _home_without("instance_id"), ("home.instance_id", "required")),
    ("ebs bad instance_id", _set("home.instance_id", "web-1"), ("home.instance_id",)),
    ("bad volume name", _set("home.volumes", ["sdf"]), ("home.volumes", "'sdf'")),
    ("same volume twice", _set("home.volumes", ["/dev/xvdf", "/dev/xvdf"]), ("home.volumes", "twice")),
    ("freeze without mount_points", _set("home.mount_points", []), ("home", "freeze", "mount_points")),
    ("bad schedule", _set("schedule", "every day at 2"), ("schedule", "every day at 2")),
    ("keep_backups negative", _set("keep_backups", -1), ("keep_backups", "0")),
    ("unknown field", _set("keep_backup", 3), ("keep_backup", "not a known field")),
    ("unknown nested field", _set("home.volume", ["/dev/xvdf"]), ("home.volume", "not a known field")),
    (
        "both parts none",
        lambda raw: raw.update(home={"strategy": "none"}, database={"strategy": "none"}),
        ("home", "database", "none"),
    ),
    ("bad email", _set("notification_emails", ["ops"]), ("notification_emails.0",)),
]


@pytest.mark.parametrize(("change", "words"), [c[1:] for c in INSTANCE_CASES], ids=[c[0] for c in INSTANCE_CASES])
def test_a_wrong_instance_is_named_with_its_field(
    change: Callable[[dict[str, Any]], None], words: tuple[str, ...]
) -> None:
    good, bad = instance("staging"), instance("prod")
    change(bad)
    text = config_error(project(good, bad))
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("instance 'prod'"), text
    assert "staging" not in text
    for word in words:
        assert word in lines[0], f"{word!r} missing from {text!r}"


def test_each_problem_gets_its_own_line() -> None:
    bad = instance("prod", keep_backups=-3, schedule="sometimes")
    bad.pop("base_url")
    lines = config_error(project(bad)).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("instance 'prod'") for line in lines)
    assert {field for line in lines for field in ("base_url", "schedule", "keep_backups") if field in line} == {
        "base_url",
        "schedule",
        "keep_backups",
    }


def test_an_instance_without_a_name_is_named_by_position() -> None:
    nameless = instance()
    nameless.pop("name")
    text = config_error(project(instance("prod"), nameless))
    assert text.startswith("instances[1]") and "name" in text and "required" in text


def test_a_bad_instance_name_is_reported() -> None:
    text = config_error(project(instance("Prod_1")))
    assert "instance 'Prod_1'" in text and "name" in text


def test_duplicate_instance_names() -> None:
    text = config_error(project(instance("prod"), instance("staging"), instance("prod")))
    assert "unique" in text and "name" in text
    assert "prod" in text and "staging" not in text


@pytest.mark.parametrize("instances", [None, []], ids=["missing", "empty"])
def test_instances_missing_or_empty(instances: list[Any] | None) -> None:
    raw: dict[str, Any] = {} if instances is None else {"instances": instances}
    text = config_error(raw)
    assert text.startswith("instances")
    assert ("required" in text) if instances is None else ("at least 1" in text)


def test_instances_not_a_list() -> None:
    assert config_error({"instances": {"prod": instance()}}).startswith("instances")


def test_an_instance_that_is_not_an_object() -> None:
    text = config_error({"instances": ["prod"]})
    assert text.startswith("instances[0]")


@pytest.mark.parametrize("raw", [None, [], "prod", 3, [instance()]], ids=["none", "list", "str", "int", "list-of"])
def test_non_dict_raw(raw: Any) -> None:
    text = config_error(raw)
    assert "instances" in text and "object" in text


def test_unknown_top_level_field() -> None:
    raw = project()
    raw["instance"] = []
    assert config_error(raw) == "instance is not a known field"


def test_the_input_is_not_changed() -> None:
    raw = project(instance())
    before = copy.deepcopy(raw)
    parse_project_config(raw)
    assert raw == before


def test_parse_instance_config_names_the_field() -> None:
    bad = instance()
    bad["home"].pop("instance_id")
    with pytest.raises(ConfigError) as caught:
        parse_instance_config(bad)
    assert str(caught.value) == "home.instance_id is required"
    with pytest.raises(ConfigError):
        parse_instance_config("not an object")
