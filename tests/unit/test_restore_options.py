"""`bitbucket-backup restore` refuses an option the restore would not use, naming it and why, instead of dropping it
(an EBS + RDS restore given --target-path used to restore both parts and exit 0)."""

from __future__ import annotations

import pytest

from bitbucket_backup_cli.base import USAGE, CliError
from bitbucket_backup_cli.main import build_parser
from bitbucket_backup_cli.restore_options import RESTORE_OPTION_FIELDS, refuse_inapplicable_options
from functions.models.config import InstanceConfig, parse_instance_config
from functions.strategies import restorers_for
from rehearsal.synth import rehearsal_project_config

BACKUP_ID = "demo-20261123-082818"


def _config(home: str, database: str) -> InstanceConfig:
    return parse_instance_config(rehearsal_project_config(home, database)["instances"][0])


def _refusal(config: InstanceConfig, *options: str) -> str | None:
    args = build_parser().parse_args(["restore", BACKUP_ID, "--instance", "demo", "--target-db-id", "x3", *options])
    wanted = [args.only] if args.only else list(config.parts)
    try:
        refuse_inapplicable_options(config, wanted, args)
    except CliError as error:
        assert error.code == USAGE
        return str(error)
    return None


SNAPSHOTS = _config("amazon-ebs", "amazon-rds")
ARCHIVES = _config("rsync", "postgresql")


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--target-path", "/srv/x"],
         "--target-path does not apply to this restore: the home of 'demo' is backed up by the amazon-ebs strategy"),
        (["--target-host", "i-0123456789abcdef0"], "--target-host does not apply"),
        (["--owner", "bitbucket"], "--owner does not apply"),
        (["--only", "database", "--availability-zone", "eu-west-1a"], "the home is not restored (--only database)"),
    ],
)  # fmt: skip
def test_an_option_a_snapshot_restore_does_not_use_is_refused(options: list[str], said: str) -> None:
    refused = _refusal(SNAPSHOTS, *options)
    assert refused is not None and said in refused


@pytest.mark.parametrize(
    "options",
    [["--attach-to", "i-0123456789abcdef0"], ["--mount", "--attach-to", "i-0123456789abcdef0"],
     ["--db-instance-class", "db.t3.medium"], ["--availability-zone", "eu-west-1a"]],
)  # fmt: skip
def test_the_options_of_volumes_and_rds_apply_to_a_snapshot_restore(options: list[str]) -> None:
    assert _refusal(SNAPSHOTS, *options) is None


def test_an_archive_restore_takes_path_host_and_owner_but_not_volume_options() -> None:
    assert (
        _refusal(ARCHIVES, "--target-path", "/srv/x", "--target-host", "i-0123456789abcdef0", "--owner", "bb") is None
    )
    refused = _refusal(ARCHIVES, "--target-path", "/srv/x", "--attach-to", "i-0123456789abcdef0")
    assert refused is not None and "--attach-to does not apply" in refused and "rsync strategy" in refused
    refused = _refusal(ARCHIVES, "--target-path", "/srv/x", "--db-instance-class", "db.t3.medium")
    assert refused is not None and "postgresql strategy" in refused


def test_every_option_names_fields_a_strategy_takes() -> None:
    """The table stays in step with the restorers' target_fields (what the state machine checks)."""
    taken = {(p, f) for c in (SNAPSHOTS, ARCHIVES) for p, r in restorers_for(c).items() for f in r.target_fields}
    for places in RESTORE_OPTION_FIELDS.values():
        assert any(place in taken for place in places), places


def _problem(target: dict[str, object], backup_id: str = BACKUP_ID) -> str:
    from pydantic import ValidationError

    from bitbucket_backup_cli.restore_options import restore_problem
    from functions.models.restore import RestoreInput

    with pytest.raises(ValidationError) as error:
        RestoreInput.model_validate({"instance": "demo", "backup_id": backup_id, "target": target})
    return restore_problem(error.value)


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ({"home": {"availability_zone": "eu-west-1a", "mount": True}}, "--mount needs --attach-to"),
        (
            {"home": {}},
            "--availability-zone is required unless --attach-to is given (volumes), or --target-path (archives)",
        ),
        ({"home": {"attach_to_instance_id": "srv-1"}}, "--attach-to: String should match pattern"),
        ({"database": {"instance_id": "3x"}}, "--target-db-id: String should match pattern"),
        ({"database": {"dbname": "x", "host_instance_id": "nope"}}, "--target-host: String should match pattern"),
        ({"home": {"path": "relative/dir"}}, "--target-path: String should match pattern"),
    ],
)
def test_a_restore_problem_names_the_flags_the_user_typed(target: dict[str, object], said: str) -> None:
    problem = _problem(target)
    assert problem.startswith(said), problem
    # Never the execution input's own words: its field paths, its field names, pydantic's prefix.
    for internal in ("target.", "attach_to_instance_id", "availability_zone", "Value error", "instance_id"):
        assert internal not in problem, problem
