"""The rehearsal's speed-ups of moto (rehearsal/moto_speed.py) change nothing moto answers, and are still needed
(the `still_` tests fail once moto caches these itself: then drop the patch)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.config import DefaultConfig

from rehearsal import moto_speed
from rehearsal.fake_account import REGION

ROLE = "arn:aws:iam::123456789012:role/sfn"
VALID = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
INVALID = json.dumps({"StartAt": "Missing", "States": {"Done": {"Type": "NoSuchType"}}})


# As the rehearsal runs it: the state machine interpreter (moto's parser backend) on.
INTERPRETER: DefaultConfig = {"stepfunctions": {"execute_state_machine": True}}


@pytest.fixture
def sfn() -> Iterator[Any]:
    with mock_aws(config=INTERPRETER), moto_speed.patched():
        yield boto3.client("stepfunctions", region_name=REGION)


def test_moto_still_parses_the_whole_definition_on_every_create() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    with mock.patch.object(AmazonStateLanguageParser, "parse", wraps=AmazonStateLanguageParser.parse) as parse:
        StepFunctionsParserBackend._validate_definition(VALID)
        StepFunctionsParserBackend._validate_definition(VALID)
    assert parse.call_count == 2, "moto validates a definition once now: drop moto_speed's validation cache"


def test_moto_still_makes_a_client_per_lambda_task() -> None:
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    with mock_aws():
        assert boto_client_for(REGION, "lambda") is not boto_client_for(REGION, "lambda"), (
            "moto reuses its clients now: drop moto_speed's client cache"
        )


def test_moto_still_generates_a_private_key_per_symmetric_key() -> None:
    with mock_aws(), mock.patch("moto.kms.models.generate_private_key") as generate:
        kms = boto3.client("kms", region_name=REGION)
        kms.create_key()
        kms.create_key()
    assert generate.call_count == 2, "moto makes key material lazily now: drop moto_speed's key cache"


def test_a_valid_definition_is_parsed_once_and_still_makes_a_state_machine(sfn: Any) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    with mock.patch.object(AmazonStateLanguageParser, "parse", wraps=AmazonStateLanguageParser.parse) as parse:
        first = sfn.create_state_machine(name="one", definition=VALID, roleArn=ROLE)["stateMachineArn"]
        second = sfn.create_state_machine(name="two", definition=VALID, roleArn=ROLE)["stateMachineArn"]
    assert parse.call_count <= 1
    assert first != second
    assert sfn.describe_state_machine(stateMachineArn=second)["definition"] == VALID


def test_an_invalid_definition_is_refused_every_time(sfn: Any) -> None:
    for name in ("one", "two"):
        with pytest.raises(ClientError) as raised:
            sfn.create_state_machine(name=name, definition=INVALID, roleArn=ROLE)
        assert "NoSuchType" in raised.value.response["Error"]["Message"]  # moto 5.2 sends no error code
    assert sfn.list_state_machines()["stateMachines"] == []


def test_the_interpreter_reuses_one_client_per_region_and_service(sfn: Any) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    make = lambda_eval_utils.boto_client_for  # type: ignore[attr-defined]
    first = make(region=REGION, service="lambda", state_credentials=None)
    assert make(region=REGION, service="lambda", state_credentials=None) is first
    assert make(region="us-east-1", service="lambda", state_credentials=None) is not first


def test_symmetric_keys_still_encrypt_and_decrypt_with_their_own_key(sfn: Any) -> None:
    kms = boto3.client("kms", region_name=REGION)
    one, two = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    blob = kms.encrypt(KeyId=one, Plaintext=b"secret")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(one)
    assert not kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(two)


def test_moto_still_parses_the_definition_on_every_execution() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    worker = mock.Mock()
    worker._evaluation_details.state_machine_details.definition = VALID
    with mock.patch.object(AmazonStateLanguageParser, "parse", wraps=AmazonStateLanguageParser.parse) as parse:
        ExecutionWorker._get_evaluation_entrypoint(worker)
        ExecutionWorker._get_evaluation_entrypoint(worker)
    assert parse.call_count == 2, "moto caches parsed programs now: drop moto_speed's program pool"


# Choice, Parallel, Map and Wait: each execution's result must depend only on its own input.
BRANCHY = json.dumps(
    {
        "StartAt": "Which",
        "States": {
            "Which": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Both"}],
                "Default": "Small",
            },
            "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "Next": "Both"},
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "Pause",
                        "States": {"Pause": {"Type": "Wait", "Seconds": 0, "End": True}},
                    },
                    {
                        "StartAt": "Each",
                        "States": {
                            "Each": {
                                "Type": "Map",
                                "ItemsPath": "$.items",
                                "Iterator": {
                                    "StartAt": "Echo",
                                    "States": {"Echo": {"Type": "Pass", "End": True}},
                                },
                                "End": True,
                            }
                        },
                    },
                ],
                "End": True,
            },
        },
    }
)


def test_executions_of_one_definition_reuse_a_program_and_keep_their_own_results(sfn: Any) -> None:
    import time

    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    arn = sfn.create_state_machine(name="branchy", definition=BRANCHY, roleArn=ROLE)["stateMachineArn"]
    inputs = [{"n": n, "items": list(range(n))} for n in (1, 2, 3, 1, 5)]
    with mock.patch.object(AmazonStateLanguageParser, "parse", wraps=AmazonStateLanguageParser.parse) as parse:
        outputs = []
        for batch in (inputs[:2], inputs[2:]):  # two at once, then three at once
            started = [
                sfn.start_execution(stateMachineArn=arn, name=f"run-{len(outputs)}-{k}", input=json.dumps(i))[
                    "executionArn"
                ]
                for k, i in enumerate(batch)
            ]
            for execution in started:
                for _ in range(200):
                    described = sfn.describe_execution(executionArn=execution)
                    if described["status"] != "RUNNING":
                        break
                    time.sleep(0.02)
                assert described["status"] == "SUCCEEDED", described
                outputs.append(json.loads(described["output"]))
    assert parse.call_count <= 3, "at most one parse per execution running at the same time"
    for given, output in zip(inputs, outputs, strict=True):
        expected = {**given, "size": "small"} if given["n"] <= 1 else given
        assert output == [expected, given["items"]], (given, output)
