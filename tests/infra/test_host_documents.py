"""The stack's own SSM Command documents (issue 10, finding 8): one per host operation, every parameter restricted by
allowedPattern, and no role may send AWS-RunShellScript (or any document but the stack's own)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.models.host_operations import OPERATIONS, TIMEOUT
from rehearsal.fake_account import set_fake_credentials
from rehearsal.synth import rehearsal_project_config, synth_template
from tests.infra.conftest import resolve_join

PREFIX = "BitbucketDiyBackup-host-"
EBS_HOME = {"FlushHome", "UnfreezeHome", "MountHome"}
HOME_SNAPSHOT = {"SnapshotHome", "ArchiveHomeSnapshot", "RemoveHomeSnapshot"}


@pytest.fixture(scope="module")
def copy_template() -> dict[str, Any]:
    """Every strategy that runs on hosts: rsync home, postgresql database, a drill host."""
    set_fake_credentials()
    return synth_template(rehearsal_project_config("rsync", "postgresql", drill=True))


@pytest.fixture(scope="module")
def mysql_template() -> dict[str, Any]:
    """A MySQL database (mysqldump on its host) and no home."""
    set_fake_credentials()
    return synth_template(rehearsal_project_config("none", "mysql"))


@pytest.fixture(scope="module")
def snapshot_template() -> dict[str, Any]:
    """A home on btrfs: rsync from a snapshot taken under the lock."""
    set_fake_credentials()
    return synth_template(rehearsal_project_config("btrfs", "none"))


def documents(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["Name"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SSM::Document"
    }


def send_command_resources(template: dict[str, Any]) -> dict[str, list[str]]:
    """Per IAM policy: every resource of a statement that allows ssm:SendCommand (or a wildcard of it)."""
    found: dict[str, list[str]] = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role"):
            continue
        text = json.dumps(resource["Properties"])
        for statement in _statements(resource["Properties"]):
            actions = statement.get("Action", [])
            actions = actions if isinstance(actions, list) else [actions]
            if not any(a in ("ssm:SendCommand", "ssm:*", "*") for a in actions):
                continue
            resources = statement.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            found.setdefault(logical, []).extend(resolve_join(r, template) for r in resources)
        assert "AWS-RunShellScript" not in text, logical
    return found


def _statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    docs = [properties.get("PolicyDocument")] + [p.get("PolicyDocument") for p in properties.get("Policies", [])]
    return [s for d in docs if d for s in d.get("Statement", [])]


@pytest.mark.parametrize("which", ["copy", "ebs"])
def test_each_operation_has_a_document_whose_parameters_are_all_restricted(
    which: str, copy_template: dict[str, Any], template: dict[str, Any]
) -> None:
    found = documents(copy_template if which == "copy" else template)
    # A stack deploys the operations its instances need: the host copies and the drill host, or the EBS home's.
    expected = set(OPERATIONS) - EBS_HOME - HOME_SNAPSHOT - {"MysqlDump"} if which == "copy" else EBS_HOME
    assert sorted(found) == sorted(PREFIX + name for name in expected)
    for name, props in found.items():
        assert props["DocumentType"] == "Command" and props["UpdateMethod"] == "NewVersion"
        content = props["Content"]
        assert content["schemaVersion"] == "2.2"
        (step,) = content["mainSteps"]
        assert step["action"] == "aws:runShellScript"
        for parameter, spec in content["parameters"].items():
            assert spec["type"] == "String", (name, parameter)
            pattern = spec["allowedPattern"]
            assert pattern.startswith("^") and pattern.endswith("$"), (name, parameter)
            # Nothing that could close the quotes a value is written in, or start a new line or a substitution.
            for hostile in ("'", "x'; id; '", "a\nb", "{{ssm:/x}}", "$(id)", "`id`"):
                assert not OPERATIONS[name.removeprefix(PREFIX)].parameter(parameter).accepts(hostile), (
                    name,
                    parameter,
                    hostile,
                )
        assert {"executionTimeout"} | {p.name for p in OPERATIONS[name.removeprefix(PREFIX)].parameters} == set(
            content["parameters"]
        )
        # SSM's limit for a document's content (runtime parameters included).
        assert len(json.dumps(content)) < 60_000, name
    assert TIMEOUT.accepts("3600") and not TIMEOUT.accepts("0")


@pytest.mark.parametrize("which", ["copy", "ebs"])
def test_no_role_may_send_a_generic_document(
    which: str, copy_template: dict[str, Any], template: dict[str, Any]
) -> None:
    chosen = copy_template if which == "copy" else template
    granted = send_command_resources(chosen)
    assert granted, "some functions send host commands"
    for policy, resources in granted.items():
        docs = [r for r in resources if ":document/" in r]
        assert docs, f"{policy}: SendCommand without a document of the stack's own"
        for arn in docs:
            name = arn.split(":document/", 1)[1]
            assert name.startswith(PREFIX) and name.removeprefix(PREFIX) in OPERATIONS, (policy, arn)
        assert not any(r.endswith(("document/*", ":*")) or r == "*" for r in resources), (policy, resources)


def test_each_function_may_send_only_what_its_step_runs(copy_template: dict[str, Any]) -> None:
    granted = {
        policy: sorted(r.split(":document/", 1)[1].removeprefix(PREFIX) for r in resources if ":document/" in r)
        for policy, resources in send_command_resources(copy_template).items()
    }

    def of(prefix: str) -> list[str]:
        (policy,) = [p for p in granted if p.startswith(prefix)]
        return granted[policy]

    assert of("PrepareHostRole") == ["InstallScript", "RsyncHome"]
    assert of("BackupDatabaseRole") == ["PgDump"]
    assert of("ArchiveRole") == ["ArchiveUpload"]
    assert of("RestoreHomeRole") == ["RestoreHome"]
    assert of("RestoreFailureRole") == ["DropRestoredDatabase", "RemoveRestoredHome"]
    assert of("DrillCheckRole") == ["DrillCheck", "InstallScript"]
    assert not any(p.startswith(("CheckHostRole", "RestoreCheckRole", "DrillStatusRole")) for p in granted)


def test_functions_find_the_documents_by_the_prefix_in_their_environment(copy_template: dict[str, Any]) -> None:
    functions = [r for r in copy_template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions
    assert {f["Properties"]["Environment"]["Variables"].get("HOST_DOCUMENT_PREFIX") for f in functions} == {PREFIX}


def test_every_operation_is_deployed_where_it_is_needed_and_a_snapshot_stack_carries_no_host_script(
    copy_template: dict[str, Any], template: dict[str, Any]
) -> None:
    assert {*documents(copy_template), *documents(template), PREFIX + "MysqlDump"} | {
        PREFIX + name for name in HOME_SNAPSHOT
    } == {PREFIX + name for name in OPERATIONS}
    assert PREFIX + "InstallScript" not in documents(template)


def test_a_mysql_stack_dumps_with_its_own_document_and_may_send_no_other_engines(
    mysql_template: dict[str, Any],
) -> None:
    """Each engine's dump is deployed only where an instance uses it, and the copy step may send only that one; the
    restore and drill documents pick the engine by a restricted parameter."""
    found = documents(mysql_template)
    assert PREFIX + "MysqlDump" in found and PREFIX + "PgDump" not in found
    # No home archive here: none of its documents either (nor the database's in a home-only stack, below).
    assert not {PREFIX + n for n in ("RsyncHome", "CheckTargetDirectory", "RestoreHome")} & set(found)
    granted = {
        policy: sorted(r.split(":document/", 1)[1].removeprefix(PREFIX) for r in resources if ":document/" in r)
        for policy, resources in send_command_resources(mysql_template).items()
    }
    (backup_database,) = [v for k, v in granted.items() if k.startswith("BackupDatabaseRole")]
    assert backup_database == ["MysqlDump"]
    body = "\n".join(found[PREFIX + "MysqlDump"]["Content"]["mainSteps"][0]["inputs"]["runCommand"])
    # The password is read on the host from its secret: never a parameter, a flag or an environment variable here.
    assert "mysql-dump --host '{{ host }}'" in body and "--password-secret '{{ passwordSecret }}'" in body
    assert "--password " not in body and "MYSQL_PWD" not in body
    assert [p for p in found[PREFIX + "MysqlDump"]["Content"]["parameters"] if "password" in p.lower()] == [
        "passwordSecret"
    ]
    engine = OPERATIONS["RestoreDatabase"].parameter("engine")
    assert engine.accepts("mysql") and engine.accepts("") and not engine.accepts("oracle")


def test_a_btrfs_home_deploys_the_snapshot_documents_and_each_step_may_send_its_own(
    snapshot_template: dict[str, Any], copy_template: dict[str, Any]
) -> None:
    assert {n.removeprefix(PREFIX) for n in documents(snapshot_template)} >= HOME_SNAPSHOT
    assert not {"CheckTargetDatabase", "RestoreDatabase", "PgDump"} & {
        n.removeprefix(PREFIX) for n in documents(snapshot_template)
    }
    assert not HOME_SNAPSHOT & {n.removeprefix(PREFIX) for n in documents(copy_template)}
    granted = {
        policy: sorted(r.split(":document/", 1)[1].removeprefix(PREFIX) for r in resources if ":document/" in r)
        for policy, resources in send_command_resources(snapshot_template).items()
    }

    def of(prefix: str) -> list[str]:
        (found,) = [v for k, v in granted.items() if k.startswith(prefix)]
        return found

    # The home's copy step removes the snapshot it took itself when its run had already failed (functions/backup.py).
    assert of("BackupHomeRole") == ["RemoveHomeSnapshot", "RsyncHome", "SnapshotHome"]
    assert of("PrepareHostRole") == ["InstallScript", "RsyncHome", "SnapshotHome"]
    assert of("ArchiveRole") == ["ArchiveHomeSnapshot", "ArchiveUpload"]
    # The failure path and the safety net remove a failed run's snapshot, and the copy step its own; nothing else may.
    assert of("HandleFailureRole") == ["RemoveHomeSnapshot"] and of("SafetyNetFnRole") == ["RemoveHomeSnapshot"]
    assert [k for k, v in granted.items() if "RemoveHomeSnapshot" in v] == [
        k for k in granted if k.startswith(("BackupHomeRole", "HandleFailureRole", "SafetyNetFnRole"))
    ]
    home = OPERATIONS["SnapshotHome"]
    assert home.parameter("checkOnly").accepts("true") and not home.parameter("checkOnly").accepts("yes")
