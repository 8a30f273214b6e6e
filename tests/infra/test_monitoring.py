"""Monitoring in the template: the alarms (failed executions, staleness per instance) go to the notification topic,
which lets CloudWatch publish; the staleness check is scheduled and may only read; the dashboard shows the
per-instance metrics the Lambdas emit (functions/models/metrics.py) and every state machine's executions."""

from __future__ import annotations

import json
from typing import Any

from functions.models import metrics as names
from functions.models.config import parse_project_config
from functions.models.steps import OPERATIONS
from tests.infra.conftest import CONFIG, PROD, STAGING, StateMachine, resolve_join


def _alarms(resources: Any) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources("AWS::CloudWatch::Alarm").items()}


def _topic(resources: Any) -> str:
    (logical,) = resources("AWS::SNS::Topic")
    return str(logical)


def test_a_failed_timed_out_or_aborted_execution_alarms(
    resources: Any, state_machines: dict[str, StateMachine]
) -> None:
    every_machine = set(resources("AWS::StepFunctions::StateMachine"))
    assert len(every_machine) == 4  # backup and restore, two networks
    watched = set()
    for alarm in _alarms(resources).values():
        if "Metrics" not in alarm:
            continue
        stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
        assert {s["Metric"]["MetricName"] for s in stats.values()} == {
            "ExecutionsFailed",
            "ExecutionsTimedOut",
            "ExecutionsAborted",
        }
        machines = {d["Value"]["Ref"] for s in stats.values() for d in s["Metric"]["Dimensions"]}
        assert len(machines) == 1
        watched |= machines
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == [{"Ref": _topic(resources)}]
    assert watched == every_machine


def test_a_staleness_alarm_per_scheduled_instance(resources: Any) -> None:
    config = parse_project_config(CONFIG)
    stale = {
        a["Dimensions"][0]["Value"]: a
        for a in _alarms(resources).values()
        if a.get("MetricName") == names.HOURS_SINCE_COMPLETE
    }
    # staging has no schedule (manual runs only) and no max_backup_age_hours: nothing to be late for.
    assert set(stale) == {PROD["name"]} and "schedule" not in STAGING
    alarm = stale[PROD["name"]]
    assert alarm["Namespace"] == names.NAMESPACE and alarm["MetricName"] == names.HOURS_SINCE_COMPLETE
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == names.dimensions(PROD["name"])
    assert alarm["Threshold"] == config.instances[0].staleness_limit_hours == 48  # daily: twice the interval
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Statistic"] == "Maximum"
    assert alarm["TreatMissingData"] == "breaching", "a dead check must alarm too"
    assert alarm["Period"] == 3600 and alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 2
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": _topic(resources)}]
    assert PROD["name"] in alarm["AlarmName"] and "48 h" in alarm["AlarmDescription"]


def test_cloudwatch_may_publish_to_the_encrypted_topic(resources: Any) -> None:
    (policy,) = resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert allow["Action"] == "sns:Publish" and allow["Effect"] == "Allow"
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    (topic,) = resources("AWS::SNS::Topic").values()
    key = resources("AWS::KMS::Key")[topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]]
    kms = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Principal"].get("Service")]
    (cloudwatch,) = [s for s in kms if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_a_safety_net_that_could_not_run_alarms(resources: Any) -> None:
    """What a safety net could not process (after EventBridge's and Lambda's retries) waits in its dead-letter queue
    (tests/infra/test_checkov.py): one message there alarms, to the topic, saying what may be left locked."""
    queues = {
        target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for rule in resources("AWS::Events::Rule").values()
        for target in rule["Properties"]["Targets"]
    }
    assert len(queues) == 4 and queues <= set(resources("AWS::SQS::Queue"))  # backup and restore, two networks
    watched = {}
    for alarm in _alarms(resources).values():
        if alarm.get("Namespace") == "AWS/SQS":
            ((dimension),) = alarm["Dimensions"]
            watched[dimension["Value"]["Fn::GetAtt"][0]] = alarm
            assert dimension["Name"] == "QueueName" and dimension["Value"]["Fn::GetAtt"][1] == "QueueName"
    assert set(watched) == queues
    for alarm in watched.values():
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Statistic"] == "Maximum"
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["EvaluationPeriods"] == 1 and alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == [{"Ref": _topic(resources)}]
        assert "Bitbucket may still be in maintenance mode" in alarm["AlarmDescription"]


def test_the_staleness_check_is_scheduled_and_only_reads(resources: Any, template: dict[str, Any]) -> None:
    functions = {k: v for k, v in resources("AWS::Lambda::Function").items() if k.startswith("StalenessCheck")}
    ((logical, fn),) = functions.items()
    assert fn["Properties"]["Handler"] == OPERATIONS.staleness_check.handler
    assert "VpcConfig" not in fn["Properties"], "it calls only AWS APIs: no VPC, one for every network"
    (schedule,) = [
        s["Properties"]
        for s in resources("AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [logical, "Arn"]}
    ]
    assert schedule["ScheduleExpression"] == f"rate({names.CHECK_INTERVAL_MINUTES // 60} hour)"
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    actions = {
        action
        for policy in resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert "ssm:GetParametersByPath" in actions
    writes = {a for a in actions if not a.split(":")[1].startswith(("Get", "Describe", "List"))}
    assert writes <= {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    (parameters,) = [
        s
        for p in resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == "ssm:GetParametersByPath"
    ]
    assert resolve_join(parameters["Resource"], template).endswith(
        ":parameter/bitbucket-diy-backup/BitbucketDiyBackup/instances"
    )


def test_dashboard_shows_runs_per_instance_and_executions(resources: Any, template: dict[str, Any]) -> None:
    (dashboard,) = resources("AWS::CloudWatch::Dashboard").values()
    body = json.loads(resolve_join(dashboard["Properties"]["DashboardBody"], template))
    metric_widgets = [w["properties"] for w in body["widgets"] if w["type"] == "metric"]
    searched = " ".join(m[0]["expression"] for w in metric_widgets for m in w["metrics"] if isinstance(m[0], dict))
    for metric in (
        names.HOURS_SINCE_COMPLETE,
        names.LOCK_WINDOW,
        names.DRAIN,
        names.DURATION,
        names.BACKUP_SUCCEEDED,
        names.BACKUP_FAILED,
        names.BACKUP_SIZE,
    ):
        assert f"SEARCH('{{{names.NAMESPACE},instance,service}} MetricName=\"{metric}\"'" in searched, metric
    executions = [w for w in metric_widgets if "executions" in w["title"]]
    assert len(executions) == 4
    assert all("ExecutionsFailed" in json.dumps(w["metrics"]) for w in executions)
    (status,) = [w["properties"] for w in body["widgets"] if w["type"] == "alarm"]
    assert len(status["alarms"]) == len(resources("AWS::CloudWatch::Alarm"))
    outputs = template["Outputs"]
    assert outputs["Dashboard"]["Value"] == {"Ref": next(iter(resources("AWS::CloudWatch::Dashboard")))}
