"""`bitbucket-backup drill` and `status` with its filters, against the local runtime served over HTTP: a drill started
and followed from the command line, found again by its kind, its instance, its state and the backup id it drilled."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bitbucket_backup_cli.base import FAILED, NOT_FOUND, OK
from rehearsal.serve import LocalEndpoint
from tests.integration.conftest import World, command_line


@pytest.mark.long
def test_a_drill_from_the_command_line_and_status_by_kind_backup_id_and_state(
    served: Callable[..., tuple[World, LocalEndpoint]],
) -> None:
    w, endpoint = served(drill=True)
    made = w.r.run_backup()
    assert made.status == "SUCCEEDED" and made.output is not None, made.cause
    backup_id = str(made.output["backup_id"])

    code, out, err = command_line(endpoint, "drill", "--instance", "demo", "--wait", "--poll-interval", "0.1")
    assert code == OK, out + err
    assert f"Restore drill of {backup_id}: SUCCEEDED" in out and "verified on " in out, out
    assert "teardown: " in out

    code, out, _ = command_line(endpoint, "--json", "status", "--kind", "drill")
    (drill,) = json.loads(out)["executions"]
    assert code == OK and drill["kind"] == "drill" and drill["backup_id"] == backup_id
    assert drill["output"]["verified"] is True and drill["lock_window_s"] is None and drill["duration_s"] > 0

    # By the backup id: the backup that made it and the drill that verified it (not the drill's own restore's
    # executions, which run on the drill's restore state machine, not the operators').
    code, out, _ = command_line(endpoint, "--json", "status", backup_id)
    found = json.loads(out)["executions"]
    assert code == OK and sorted(e["kind"] for e in found) == ["backup", "drill"]
    backup = next(e for e in found if e["kind"] == "backup")
    assert backup["lock_window_s"] == made.output["lock_window_s"]

    code, out, _ = command_line(endpoint, "status", "--instance", "demo")
    assert code == OK
    header = out.splitlines()[0].split()
    assert header[-3:] == ["TOOK", "LOCKED", "STEP"] and f"{made.output['lock_window_s']:.1f} s" in out

    code, out, _ = command_line(endpoint, "--json", "status", "--state", "failed")
    assert code == OK and json.loads(out)["executions"] == []
    code, out, _ = command_line(endpoint, "status", "--state", "FAILED", "--kind", "backup")
    assert code == OK and out.strip() == "no executions match"

    code, _, err = command_line(endpoint, "status", "--instance", "nosuch")
    assert code == NOT_FOUND and "nosuch" in err


def test_drill_of_an_instance_without_one_is_refused_before_anything_starts(
    served: Callable[..., tuple[World, LocalEndpoint]],
) -> None:
    w, endpoint = served()
    code, out, err = command_line(endpoint, "drill", "--instance", "demo")
    assert code == FAILED and out == ""
    assert "instance 'demo' has no restore drill" in err and "Traceback" not in err
    sfn = w.r.client("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    assert not [e for m in machines for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]]
