"""Step Functions fails an execution whose state input or output exceeds 256 KiB (States.DataLimitExceeded). The
rehearsal relies on moto's interpreter failing it the same way, and a backup's data stays far from the limit."""

from __future__ import annotations

import json

from rehearsal.runtime import STATE_PAYLOAD_LIMIT, largest_payload
from tests.integration.conftest import World


def _machine(w: World, size: int) -> str:
    sfn = w.r.client("stepfunctions")
    role = sfn.describe_state_machine(stateMachineArn=w.r.state_machine_arn)["roleArn"]
    definition = {"StartAt": "Grow", "States": {"Grow": {"Type": "Pass", "Result": {"data": "x" * size}, "End": True}}}
    return str(
        sfn.create_state_machine(name=f"grow-{size}", definition=json.dumps(definition), roleArn=role)[
            "stateMachineArn"
        ]
    )


def test_a_state_output_over_256_kib_fails_the_execution_as_in_aws(world: World) -> None:
    result = world.r.wait(world.r.start({}, state_machine_arn=_machine(world, STATE_PAYLOAD_LIMIT)))
    assert result.status == "FAILED" and result.error == "States.DataLimitExceeded", (result.error, result.cause)
    within = world.r.wait(world.r.start({}, state_machine_arn=_machine(world, STATE_PAYLOAD_LIMIT - 1024)))
    assert within.status == "SUCCEEDED"
    size, where = largest_payload(within.history)
    assert STATE_PAYLOAD_LIMIT - 1024 < size <= STATE_PAYLOAD_LIMIT and where.startswith("output of Grow"), where


def test_a_backup_stays_far_below_the_limit(world: World) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    size, where = largest_payload(result.history)
    # A tenth of the limit: room for larger instances (more parts, more host commands).
    assert 0 < size < STATE_PAYLOAD_LIMIT // 10, (size, where)
