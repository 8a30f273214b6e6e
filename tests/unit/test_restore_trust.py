"""The restore trusts no event: configuration only from the deployed parameter, archive targets only below the
configured restore roots, drill mode only in the drill's own restore state machine, and a later step's plan is checked
against the configuration before it writes or removes anything (over moto: SSM and SNS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from functions import restore
from functions.clients import aws
from functions.errors import InvalidInput, RestoreRefused
from functions.models import environment
from functions.models.config import ConfigError, parse_instance_config
from functions.models.environment import DRILL_MACHINE as DRILL_MACHINE_ENV
from functions.models.events import parse
from functions.models.restore import PlanEvent, RestorePlan
from rehearsal.fake_account import ACCOUNT, REGION

PREFIX = "/bitbucket-backup/instances"
HOST = "i-0a0a0a0a0a0a0a0a0"
DRILL_HOST = "i-0d0d0d0d0d0d0d0d0"
DRILL_MACHINE = "bitbucket-backup-Restore-drill-restore"
RESTORE_EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:bitbucket-backup-restore:manual-1"
DRILL_EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{DRILL_MACHINE}:drill-1"
BACKUP_ID = "archived-20261123-082818"
CONFIG: dict[str, Any] = {
    "name": "archived",
    "base_url": "https://bitbucket.example.com",
    "credentials_secret": "bitbucket/archived/backup-user",
    "home": {"strategy": "rsync", "instance_id": HOST, "home_path": "/var/bitbucket", "staging_path": "/var/staging"},
    "database": {"strategy": "none"},
    "drill": {"schedule": "rate(7 days)", "host_instance_id": DRILL_HOST, "work_path": "/srv/drill"},
    "restore": {"allowed_roots": ["/srv/restore"]},
}


# The functions' clients are passed in, made against moto once for the module's tests (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("moto_clients")


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with mock_aws():
        monkeypatch.setenv("CONFIG_PARAMETER_PREFIX", PREFIX)
        monkeypatch.setenv(DRILL_MACHINE_ENV, DRILL_MACHINE)
        monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
        topic = aws.client("sns").create_topic(Name="bitbucket-backup")["TopicArn"]
        monkeypatch.setenv("TOPIC_ARN", topic)
        aws.client("sqs").create_queue(QueueName="notices")
        queue = aws.client("sqs").get_queue_url(QueueName="notices")["QueueUrl"]
        arn = aws.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
        aws.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
        aws.client("ssm").put_parameter(
            Name=f"{PREFIX}/archived", Value=parse_instance_config(CONFIG).model_dump_json(), Type="String"
        )
        yield queue


def notices(queue: str) -> list[str]:
    got = aws.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Subject"] for m in got]


def plan(**changes: Any) -> dict[str, Any]:
    """A plan as the validate step makes it for an archive restore into /srv/restore/new."""
    home = {"path": "/srv/restore/new", "instance_id": HOST}
    return {
        "instance": "archived",
        "backup_id": BACKUP_ID,
        "execution": RESTORE_EXECUTION,
        "started_at": 0.0,
        "config_version": 1,
        "flow": {"restore_poll_interval_seconds": 30},
        "target": {"home": home},
        "parts": {"home": {**home, "owner": "atlbitbucket", "backup_id": BACKUP_ID}},
        "restore_database": False,
        "restore_home": True,
        "attach": False,
        "mount": False,
    } | changes


# --- the input: drill is not a field; targets only below the restore roots ----------------------------------------


def test_a_manual_restore_cannot_ask_to_be_a_drill(deployed: str) -> None:
    request = {"instance": "archived", "backup_id": BACKUP_ID, "target": {"home": {"path": "/srv/restore/x"}}}
    with pytest.raises(RestoreRefused, match="'drill' is not an input"):
        restore.validate({**request, "drill": True}, RESTORE_EXECUTION, "2026-11-24T08:00:00Z")
    # The definition's constant, but in an execution of the operators' restore state machine: refused too.
    with pytest.raises(RestoreRefused, match="only in the drill's own restore state machine"):
        restore.validate(request, RESTORE_EXECUTION, "2026-11-24T08:00:00Z", drill=True)


@pytest.mark.parametrize(
    ("path", "drill", "problem"),
    [
        ("/etc/cron.d", False, "not below a restore root"),
        ("/srv/restore", False, "not below a restore root"),  # the root itself may hold other things
        ("/srv/restore-evil/x", False, "not below a restore root"),
        ("/srv/restore/../../etc/x", False, "not a plain absolute path"),
        ("/srv/restore/./x", False, "not a plain absolute path"),
        ("/srv/restore//x", False, "not a plain absolute path"),
        ("/srv/drill/archived-20261123-082818", False, "not below a restore root"),  # the drill's, not an operator's
        ("/srv/restore/new", False, None),
        ("/srv/drill/archived-20261123-082818", True, None),
    ],
)
def test_archive_targets_only_below_the_restore_roots(path: str, drill: bool, problem: str | None) -> None:
    config = parse_instance_config(CONFIG)
    if problem is None:
        restore.check_restore_root(config, path, drill)
        return
    with pytest.raises(RestoreRefused, match=problem):
        restore.check_restore_root(config, path, drill)


def test_a_restore_outside_the_roots_is_refused_before_any_host_command(deployed: str) -> None:
    request = {"instance": "archived", "backup_id": BACKUP_ID, "target": {"home": {"path": "/root/.ssh/x"}}}
    with pytest.raises(RestoreRefused, match=r"restore.allowed_roots: /srv/restore"):
        restore.validate(request, RESTORE_EXECUTION, "2026-11-24T08:00:00Z")


@pytest.mark.parametrize("roots", [["/srv"], ["/srv/../etc"], ["relative/path"]])
def test_restore_roots_must_be_plain_and_below_the_top_level(roots: list[str]) -> None:
    with pytest.raises((ConfigError, ValueError)):
        parse_instance_config({**CONFIG, "restore": {"allowed_roots": roots}})


# --- later steps: the plan is checked against the configuration ------------------------------------------------------


def test_a_plan_carries_no_configuration() -> None:
    with pytest.raises(InvalidInput, match=r"plan\.config: Extra inputs are not permitted"):
        parse(PlanEvent, {"plan": plan(config=CONFIG), "part": "home"}, "restore-part")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"drill": True}, "only in the drill's own restore state machine"),
        ({"backup_id": "other-20261123-082818"}, "is not a backup of instance 'archived'"),
        ({"parts": {"database": {"dbname": "x"}}}, "backs up no database"),
        ({"parts": {"home": {"path": "/etc/x", "instance_id": HOST}}}, "not below a restore root"),
        ({"parts": {"home": {"path": "/srv/restore/other", "instance_id": HOST}}}, "not its target's"),
    ],
    ids=["drill", "another instance's backup", "unconfigured part", "outside the roots", "not the target"],
)
def test_later_steps_refuse_a_plan_the_configuration_does_not_back(
    deployed: str, changes: dict[str, Any], problem: str
) -> None:
    crafted = RestorePlan.model_validate(plan(**changes))
    with pytest.raises(RestoreRefused, match=problem):
        restore.start_part(crafted, "home")


def test_the_failure_path_removes_nothing_on_a_crafted_plan_and_says_so(deployed: str) -> None:
    crafted = plan(parts={"home": {"path": "/etc", "instance_id": HOST, "backup_id": BACKUP_ID}}, drill=True)
    outcome = restore.handle_failure({"plan": crafted}, {"step": "restore-home", "Error": "X", "Cause": "boom"})
    assert outcome["cleanup"][0].startswith("nothing removed: handle-restore-failure:")
    # Not silenced as a drill either: the operators hear of it.
    assert notices(deployed) == ["Bitbucket restore FAILED: archived at step restore-home"]


def test_a_drill_plan_from_the_drill_machine_is_accepted(deployed: str) -> None:
    home = {"path": f"/srv/drill/{BACKUP_ID}", "instance_id": DRILL_HOST}
    drill_plan = RestorePlan.model_validate(
        plan(
            drill=True,
            execution=DRILL_EXECUTION,
            target={"home": home},
            parts={"home": {**home, "owner": "atlbitbucket", "backup_id": BACKUP_ID}},
        )
    )
    assert restore.checked(drill_plan, "finish") is drill_plan
    assert environment.started_by_drill(DRILL_EXECUTION) and not environment.started_by_drill(RESTORE_EXECUTION)


# --- the drill's teardown removes only what its own restore machine made, below its work_path ---------------------


@pytest.mark.parametrize(
    ("execution", "path", "problem"),
    [
        (RESTORE_EXECUTION, f"/srv/drill/{BACKUP_ID}", "not one of the drill's restore state machine"),
        (DRILL_EXECUTION, "/srv/restore/precious", "not below the drill's work_path"),
        (DRILL_EXECUTION, "/srv/drill/../restore/precious", "not below the drill's work_path"),
    ],
    ids=["another machine's restore", "outside the work path", "dot-dot"],
)
def test_the_drill_teardown_refuses_an_output_that_is_not_its_own(
    deployed: str, execution: str, path: str, problem: str
) -> None:
    from functions import drill
    from functions.models.drill import DrillPlan

    drill_plan = DrillPlan.model_validate(
        {
            "instance": "archived",
            "backup_id": BACKUP_ID,
            "execution": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:drill:d-1",
            "started_at": 0.0,
            "config_version": 1,
            "flow": {"host_poll_interval_seconds": 15},
            "restore": {},
        }
    )
    output = {
        "execution": execution,
        "drill": {"parts": {"home": {"path": path, "instance_id": DRILL_HOST}}, "created": {}},
    }
    # No host command is sent (moto's SSM would accept one): the refusal comes first and says what to do.
    (action,) = drill.teardown(drill_plan, output, keep=False)
    assert action.startswith("teardown refused: ") and problem in action and "by hand" in action


def test_a_restore_that_failed_before_its_plan_is_silent_only_in_the_drills_machine(deployed: str) -> None:
    failure = {"step": "validate", "Error": "RestoreRefused", "Cause": "validate: the host cannot run commands"}
    state = {"input": {"instance": "archived", "backup_id": BACKUP_ID, "target": {}}}
    # The drill reports its restore's failure itself (once); the same failure of an operator's restore is announced.
    restore.handle_failure(state, failure, DRILL_EXECUTION)
    assert notices(deployed) == []
    restore.handle_failure(state, failure, RESTORE_EXECUTION)
    assert notices(deployed) == ["Bitbucket restore FAILED: archived at step validate"]
