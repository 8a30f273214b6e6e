"""Each fix of rehearsal/moto_fixes.py is still needed: every `test_moto_still_` test calls moto without the fix and
fails once moto behaves like AWS (then drop that fix). The others check a fix does what AWS does. All are direct
moto calls: no state machine runs."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from rehearsal import moto_fixes
from rehearsal.fake_account import ACCOUNT, REGION
from rehearsal.lambda_runtime import LambdaRuntime, LogCapture
from rehearsal.local_host import LocalHost

OTHER_ACCOUNT = "210987654321"
AMI = "ami-12c6146b"  # moto's own example image


@pytest.fixture
def fixed(tmp_path: Path) -> Iterator[LocalHost]:
    """moto with every fix of the rehearsal applied; the local host that runs the Run Commands."""
    host = LocalHost(tmp_path)
    with mock_aws(), moto_fixes.patched(LambdaRuntime(LogCapture()), host):
        yield host


def _instance(ec2: Any) -> str:
    return str(ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"])


# --- Lambda: moto without Docker does not run the function's code ------------------------------------------------


def test_moto_still_answers_an_invocation_without_running_the_handler() -> None:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="fn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def handler(event, context):\n    return {'ran': True}\n")
        aws_lambda = boto3.client("lambda", region_name=REGION)
        aws_lambda.create_function(
            FunctionName="fn", Runtime="python3.13", Role=role, Handler="app.handler", Code={"ZipFile": code.getvalue()}
        )
        answer = aws_lambda.invoke(FunctionName="fn", Payload=b'{"event": 1}')["Payload"].read()
    assert json.loads(answer) == {"event": 1}, "moto runs a function's code without Docker now: drop the routing"


def _function_with_its_own_log_group() -> dict[str, Any]:
    """A function created with a LoggingConfig naming its log group, as the stack creates each; its configuration."""
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="fn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName="Stack-FnLogs-ABC")
    aws_lambda = boto3.client("lambda", region_name=REGION)
    aws_lambda.create_function(
        FunctionName="fn",
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        LoggingConfig={"LogGroup": "Stack-FnLogs-ABC"},
    )
    return dict(aws_lambda.get_function_configuration(FunctionName="fn"))


def test_moto_still_drops_a_functions_logging_config() -> None:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        configuration = _function_with_its_own_log_group()
    assert (configuration.get("LoggingConfig") or {}).get("LogGroup") != "Stack-FnLogs-ABC", (
        "moto keeps a function's LoggingConfig now: drop the fix's own"
    )


def test_a_function_keeps_its_log_group_where_its_lines_go(fixed: LocalHost) -> None:
    configuration = _function_with_its_own_log_group()
    assert configuration["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "Stack-FnLogs-ABC"}


# --- EC2 CreateSnapshots: ExcludeDataVolumeIds ---------------------------------------------------------------------


def _snapshotted_volumes(ec2: Any) -> tuple[set[str], str]:
    """The volumes CreateSnapshots snapshotted with one of two data volumes excluded, and the excluded one."""
    instance = _instance(ec2)
    zone = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["Placement"]
    volumes = []
    for device in ("/dev/xvdf", "/dev/xvdg"):
        volume = ec2.create_volume(AvailabilityZone=zone["AvailabilityZone"], Size=1)["VolumeId"]
        ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device=device)
        volumes.append(volume)
    snapshots = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance, "ExcludeBootVolume": True, "ExcludeDataVolumeIds": volumes[1:]}
    )["Snapshots"]
    return {s["VolumeId"] for s in snapshots}, volumes[1]


def test_moto_still_ignores_exclude_data_volume_ids() -> None:
    with mock_aws():
        snapshotted, excluded = _snapshotted_volumes(boto3.client("ec2", region_name=REGION))
    assert excluded in snapshotted, "moto honours ExcludeDataVolumeIds now: drop the create_snapshots fix"


def test_an_excluded_data_volume_is_not_snapshotted(fixed: LocalHost) -> None:
    snapshotted, excluded = _snapshotted_volumes(boto3.client("ec2", region_name=REGION))
    assert snapshotted and excluded not in snapshotted


# --- SSM SendCommand ----------------------------------------------------------------------------------------------

DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "echo a word",
    "parameters": {"word": {"type": "String", "allowedPattern": "^[a-z]+$"}},
    "mainSteps": [
        {"action": "aws:runShellScript", "name": "echo", "inputs": {"runCommand": ["echo {{ word }}"]}},
    ],
}


def _ssm_world() -> tuple[Any, list[str]]:
    """An SSM client with the echo document, and two instances."""
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.create_document(Name="Echo", Content=json.dumps(DOCUMENT), DocumentType="Command", DocumentFormat="JSON")
    ec2 = boto3.client("ec2", region_name=REGION)
    return ssm, [_instance(ec2), _instance(ec2)]


def test_moto_still_accepts_a_command_of_an_unknown_document() -> None:
    with mock_aws():
        ssm, (instance, _) = _ssm_world()
        ssm.send_command(DocumentName="NoSuchDocument", InstanceIds=[instance])  # SSM: InvalidDocument


def test_moto_still_accepts_a_parameter_its_document_rejects() -> None:
    with mock_aws():
        ssm, (instance, _) = _ssm_world()
        ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["NOT; a word"]})


def test_moto_still_sends_a_command_to_every_instance_of_the_account() -> None:
    with mock_aws():
        ssm, (instance, other) = _ssm_world()
        command = ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["hi"]})["Command"]
        ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=other)  # SSM: InvocationDoesNotExist
    assert other in command["InstanceIds"], "moto sends a command to its InstanceIds only now: drop that part"


def test_moto_still_reports_a_command_it_never_ran_as_a_success() -> None:
    with mock_aws():
        ssm, (instance, _) = _ssm_world()
        command = ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["hi"]})["Command"]
        ran = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance)
    assert ran["Status"] == "Success" and "hi" not in ran["StandardOutputContent"]


def test_a_command_runs_in_the_background_and_is_in_progress_until_it_ends(fixed: LocalHost) -> None:
    ssm, (instance, _) = _ssm_world()
    gate = fixed.root / "gate"
    fixed.before_run.append(lambda *_: _wait_for(gate))
    command = ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["hi"]})["Command"]
    running = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance)
    assert running["Status"] == "InProgress" and running["StandardOutputContent"] == ""
    gate.touch()
    fixed.stop()  # waits for the command's thread
    ended = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance)
    assert ended["Status"] == "Success" and ended["StandardOutputContent"].strip() == "hi"


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


NAP = {
    "schemaVersion": "2.2",
    "description": "a long command: a child process that outlives its shell unless the whole group is killed",
    "mainSteps": [
        {"action": "aws:runShellScript", "name": "nap", "inputs": {"runCommand": ["sleep 30 && touch woke"]}}
    ],
}


def test_moto_still_lacks_cancel_command() -> None:
    with mock_aws():
        ssm, (instance, _) = _ssm_world()
        command = ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["hi"]})["Command"]
        with pytest.raises(Exception) as lacking:
            ssm.cancel_command(CommandId=command["CommandId"], InstanceIds=[instance])
    assert "not" in str(lacking.value).lower() and "implement" in str(lacking.value).lower(), (
        "moto implements CancelCommand now: drop the fix's own"
    )


def test_a_cancelled_command_ends_cancelled_with_every_process_it_started(fixed: LocalHost) -> None:
    ssm, (instance, _) = _ssm_world()
    ssm.create_document(Name="Nap", Content=json.dumps(NAP), DocumentType="Command", DocumentFormat="JSON")
    command = ssm.send_command(DocumentName="Nap", InstanceIds=[instance])["Command"]["CommandId"]
    deadline = time.monotonic() + 20
    while not fixed._running and time.monotonic() < deadline:  # its process is running
        time.sleep(0.01)
    started = time.monotonic()
    ssm.cancel_command(CommandId=command, InstanceIds=[instance])
    while fixed._running and time.monotonic() - started < 10:  # the command's process ends with the cancel
        time.sleep(0.01)
    assert not fixed._running, "the command still runs after the cancel"
    fixed.stop()
    assert time.monotonic() - started < 10, "the sleep went on: only the shell was killed"
    ended = ssm.get_command_invocation(CommandId=command, InstanceId=instance)
    assert ended["Status"] == "Cancelled" and not (fixed.root / "woke").exists()
    (listed,) = ssm.list_commands(CommandId=command)["Commands"]
    assert listed["Status"] == "Cancelled"


def test_a_command_is_checked_and_runs_on_its_instances_only(fixed: LocalHost) -> None:
    ssm, (instance, other) = _ssm_world()
    for document, parameters in (("NoSuchDocument", {}), ("Echo", {"word": ["NOT; a word"]})):
        with pytest.raises(ClientError):
            ssm.send_command(DocumentName=document, InstanceIds=[instance], Parameters=parameters)
    command = ssm.send_command(DocumentName="Echo", InstanceIds=[instance], Parameters={"word": ["hi"]})["Command"]
    assert command["InstanceIds"] == [instance]
    with pytest.raises(ClientError):
        ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=other)
    # It runs in the background, as the agent runs it: the caller polls until it ended.
    deadline = time.monotonic() + 20
    while (ran := ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance))["Status"] in (
        "Pending",
        "InProgress",
    ):
        assert ran["StandardOutputContent"] == "", "no output before the end, as SSM answers"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ran["Status"] == "Success" and ran["StandardOutputContent"].strip() == "hi"
    assert [c.instance_id for c in fixed.commands] == [instance]
    assert other not in [c.instance_id for c in fixed.commands]


# --- Step Functions: the stepfunctions service integration's casing -------------------------------------------------


def _sfn_task() -> Any:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_sfn

    cls = state_task_service_sfn.StateTaskServiceSfn
    task = cls.__new__(cls)  # only the normalisation is called, which reads nothing of the state
    task._get_boto_service_action = lambda *args, **kwargs: "start_execution"
    return task


def test_moto_still_passes_a_sfn_task_s_parameters_to_boto3_as_written() -> None:
    parameters: dict[str, Any] = {"StateMachineArn": "arn:aws:states:::stateMachine:restore", "Input": {"a": 1}}
    _sfn_task()._normalise_parameters(parameters)
    assert "StateMachineArn" in parameters, "moto maps a sfn task's parameters to camelCase now: drop the fix"


def test_moto_still_hands_back_a_sfn_task_s_response_as_boto3_returns_it() -> None:
    response = {"executionArn": "arn:aws:states:::execution:restore:one", "output": "{}"}
    _sfn_task()._normalise_response(response)
    assert "executionArn" in response, "moto maps a sfn task's response to PascalCase now: drop the fix"


def _started_by_a_sfn_task() -> dict[str, Any]:
    """What a `startExecution` task puts on the interpreter's stack (the response of the call it makes)."""
    from types import SimpleNamespace

    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    arn = sfn.create_state_machine(name="restore", definition=definition, roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn")
    task = _sfn_task()
    task._get_boto_service_name = lambda *args, **kwargs: "stepfunctions"
    env = SimpleNamespace(stack=[])
    parameters = {"stateMachineArn": arn["stateMachineArn"], "input": "{}"}
    task._eval_service_task(env, SimpleNamespace(region=REGION), parameters, None)
    return dict(env.stack[-1])


def test_moto_still_puts_a_sfn_task_s_response_on_the_stack_as_boto3_returns_it() -> None:
    with mock_aws():
        assert "executionArn" in _started_by_a_sfn_task(), "moto maps the response to PascalCase now: drop the fix"


def test_a_sfn_task_s_parameters_and_response_are_mapped(fixed: LocalHost) -> None:
    task = _sfn_task()
    parameters: dict[str, Any] = {"StateMachineArn": "arn", "Input": {"a": 1}}
    task._normalise_parameters(parameters)
    assert parameters == {"stateMachineArn": "arn", "input": '{"a":1}'}
    response = {"executionArn": "arn", "output": "{}"}
    task._normalise_response(response)
    assert response == {"ExecutionArn": "arn", "Output": "{}"}
    assert {"ExecutionArn", "StartDate"} <= set(_started_by_a_sfn_task())


# --- accounts: AssumeRole, and snapshots shared by another account ---------------------------------------------------


def test_moto_still_lets_any_account_assume_any_role() -> None:
    with mock_aws():
        sts = boto3.client("sts", region_name=REGION)
        sts.assume_role(RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/missing", RoleSessionName="any")


@pytest.mark.filterwarnings("ignore:Exception\\(STSClientError\\) with code AccessDenied")  # moto serialises it anyway
def test_a_role_is_assumed_only_if_it_exists_and_trusts_the_caller(fixed: LocalHost) -> None:
    sts = boto3.client("sts", region_name=REGION)
    with pytest.raises(ClientError) as refused:
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/missing", RoleSessionName="any")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    iam = boto3.client("iam", region_name=REGION)
    for name, principal in (("trusting", ACCOUNT), ("distrusting", OTHER_ACCOUNT)):
        trust = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{principal}:root"}, "Action": "sts:AssumeRole"}
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Statement": [trust]}))
    sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/trusting", RoleSessionName="any")
    with pytest.raises(ClientError):
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/distrusting", RoleSessionName="any")


def _shared_ebs_snapshot() -> str:
    """A snapshot of ACCOUNT that OTHER_ACCOUNT may create volumes from (and so copy)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
    snapshot = str(ec2.create_snapshot(VolumeId=volume)["SnapshotId"])
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission", OperationType="add", UserIds=[OTHER_ACCOUNT]
    )
    return snapshot


def test_moto_still_copies_only_an_account_s_own_ebs_snapshots() -> None:
    from moto.ec2.exceptions import InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends

    with mock_aws():
        snapshot = _shared_ebs_snapshot()
        with pytest.raises(InvalidSnapshotIdError):
            ec2_backends[OTHER_ACCOUNT][REGION].copy_snapshot(snapshot, REGION, "copy", None)


def test_a_shared_ebs_snapshot_is_copied_by_the_account_it_was_shared_with(fixed: LocalHost) -> None:
    from moto.ec2.exceptions import InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends

    snapshot = _shared_ebs_snapshot()
    copy = ec2_backends[OTHER_ACCOUNT][REGION].copy_snapshot(snapshot, REGION, "copy", None)
    assert copy.id in ec2_backends[OTHER_ACCOUNT][REGION].snapshots
    with pytest.raises(InvalidSnapshotIdError):
        ec2_backends["111111111111"][REGION].copy_snapshot(snapshot, REGION, "copy", None)


def _shared_rds_snapshot() -> str:
    """The ARN of a DB snapshot of ACCOUNT that OTHER_ACCOUNT may restore (and so copy)."""
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_instance(
        DBInstanceIdentifier="db",
        DBInstanceClass="db.t3.medium",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="bitbucket",
        MasterUserPassword="not-a-real-secret-1",
    )
    arn = rds.create_db_snapshot(DBInstanceIdentifier="db", DBSnapshotIdentifier="shared")["DBSnapshot"]
    rds.modify_db_snapshot_attribute(
        DBSnapshotIdentifier="shared", AttributeName="restore", ValuesToAdd=[OTHER_ACCOUNT]
    )
    return str(arn["DBSnapshotArn"])


def test_moto_still_looks_up_a_db_snapshot_arn_in_the_caller_s_own_account() -> None:
    from moto.rds.exceptions import DBSnapshotNotFoundFault
    from moto.rds.models import rds_backends

    with mock_aws():
        arn = _shared_rds_snapshot()
        with pytest.raises(DBSnapshotNotFoundFault):
            rds_backends[OTHER_ACCOUNT][REGION].get_db_snapshot(arn)


def test_a_shared_db_snapshot_is_found_by_the_account_it_was_shared_with(fixed: LocalHost) -> None:
    from moto.rds.exceptions import DBSnapshotNotFoundFault
    from moto.rds.models import rds_backends

    arn = _shared_rds_snapshot()
    shared = rds_backends[ACCOUNT][REGION].database_snapshots["shared"]
    assert rds_backends[OTHER_ACCOUNT][REGION].get_db_snapshot(arn) is shared
    with pytest.raises(DBSnapshotNotFoundFault):
        rds_backends["111111111111"][REGION].get_db_snapshot(arn)


# --- DynamoDB: one request at a time ----------------------------------------------------------------------------------


def _second_request_finishes_while_the_first_runs() -> bool:
    """Holds a GetItem inside moto's backend and tells whether a PutItem from another thread completes meanwhile."""
    from moto.dynamodb.models import DynamoDBBackend

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="runs",
        KeySchema=[{"AttributeName": "instance", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "instance", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    inside, release = threading.Event(), threading.Event()
    original = DynamoDBBackend.get_item

    def held_get_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        inside.set()
        release.wait(5)
        return original(self, *args, **kwargs)

    item = {"instance": {"S": "demo"}}
    with mock.patch.object(DynamoDBBackend, "get_item", held_get_item):
        reader = threading.Thread(target=lambda: dynamodb.get_item(TableName="runs", Key=item))
        reader.start()
        assert inside.wait(5)
        writer = threading.Thread(target=lambda: dynamodb.put_item(TableName="runs", Item=item), daemon=True)
        writer.start()
        writer.join(1)
        overlapped = not writer.is_alive()
        release.set()
        reader.join(5)
        writer.join(5)
    return overlapped


def test_moto_still_runs_two_dynamodb_requests_at_once() -> None:
    with mock_aws():
        assert _second_request_finishes_while_the_first_runs(), "moto serialises requests now: drop the DynamoDB lock"


def test_dynamodb_requests_run_one_at_a_time(fixed: LocalHost) -> None:
    assert not _second_request_finishes_while_the_first_runs()


# --- IAM enforced: the signature of a request without a body -------------------------------------------------------


def _signed_list_functions() -> None:
    """ListFunctions (a GET without a body) signed by a user allowed everything, with moto's IAM checks on."""
    from moto.core import set_initial_no_auth_action_count

    iam_ = boto3.client("iam", region_name=REGION)
    iam_.create_user(UserName="operator")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam_.put_user_policy(UserName="operator", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam_.create_access_key(UserName="operator")["AccessKey"]
    lambda_ = boto3.client(
        "lambda",
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    set_initial_no_auth_action_count(0)(lambda: lambda_.list_functions())()


def test_moto_still_refuses_the_signature_of_a_get_without_a_body() -> None:
    with mock_aws(), pytest.raises(ClientError, match=r"SignatureDoesNotMatch|403"):
        _signed_list_functions()


def test_a_get_without_a_body_is_checked_against_the_empty_payload(fixed: LocalHost) -> None:
    _signed_list_functions()
