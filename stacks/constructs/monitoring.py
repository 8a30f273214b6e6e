"""Monitoring: the staleness check (a scheduled Lambda), the alarms (to the notification topic) and the dashboard.

- A failed, timed-out or aborted execution of any backup or restore state machine raises that machine's alarm.
- Each instance with a staleness limit (config `max_backup_age_hours`, by default derived from its schedule) has an
  alarm on HoursSinceLastCompleteBackup, which the check publishes every hour whether or not a backup ran. Missing
  data counts as breaching: a check that stops running, or cannot read an instance's catalog, alarms too.
- Each instance with a restore drill has an alarm on DrillFailed (published by every drill, 1 when it failed).
- Each safety net's dead-letter queue alarms as soon as it holds a message: a safety net that could not run (an
  execution that ended without its own cleanup may have left Bitbucket locked).
- The dashboard uses SEARCH expressions over the per-instance metrics, so its size does not grow with the fleet.

`encrypt_logs`: every log group of the stack is encrypted with a key of its own (logs are kept after the stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import jsii
from aws_cdk import Aspects, Aws, Duration, IAspect, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from functions.models import metrics as names
from functions.models.config import InstanceConfig
from functions.models.steps import OPERATIONS
from stacks import nag
from stacks.constructs.functions import FunctionFactory

if TYPE_CHECKING:
    from stacks.constructs.safety_net import SafetyNet

EXECUTION_PERIOD = Duration.minutes(5)
# The check runs every CHECK_INTERVAL_MINUTES; two missing or stale hours in a row alarm, one late check does not.
STALENESS_PERIOD = Duration.minutes(names.CHECK_INTERVAL_MINUTES)
STALENESS_PERIODS = 2
ALARMS_PER_STATUS_WIDGET = 100  # CloudWatch's limit for one alarm status widget


@dataclass(frozen=True)
class MonitoredMachine:
    kind: str  # Backup | Restore | Drill
    state_machine: sfn.StateMachine
    instances: list[str]


def _search(metric: str, statistic: str) -> cw.MathExpression:
    """One line per instance, however many there are (and whichever appear later)."""
    schema = f"{{{names.NAMESPACE},{names.INSTANCE_DIMENSION},service}}"
    period = int(STALENESS_PERIOD.to_seconds())
    return cw.MathExpression(
        expression=f"SEARCH('{schema} MetricName=\"{metric}\"', '{statistic}', {period})",
        label="${PROP('Dim.instance')}",  # CloudWatch's dynamic label: the line's instance
        period=STALENESS_PERIOD,
    )


def _per_instance(metric: str, instance: str, period: Duration) -> cw.Metric:
    return cw.Metric(
        namespace=names.NAMESPACE,
        metric_name=metric,
        dimensions_map=names.dimensions(instance),
        statistic="Maximum",
        period=period,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        instances: list[InstanceConfig],
        machines: list[MonitoredMachine],
        safety_nets: list[SafetyNet],
        topic: sns.ITopic,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        step = OPERATIONS.staleness_check
        self.check: lambda_.Function = factory.make(
            step.function_id, step.handler, timeout_s=step.timeout_s, description=step.description, synchronous=False
        )
        nag.skip_checkov(self.check, nag.STALENESS_CHECK_ASYNC)
        self.schedule = scheduler.Schedule(
            self,
            "StalenessCheckSchedule",
            schedule=scheduler.ScheduleExpression.rate(Duration.minutes(names.CHECK_INTERVAL_MINUTES)),
            target=targets.LambdaInvoke(self.check, retry_attempts=2),
            description="Bitbucket DIY backup: hours since each instance's newest complete backup",
        )
        self._allow_alarms_to_publish(stack, topic, key)
        action = cw_actions.SnsAction(topic)

        self.execution_alarms: list[cw.Alarm] = []
        for machine in machines:
            sm = machine.state_machine
            workflow = sm.node.scope.node.id if sm.node.scope else machine.kind  # Backup, Restore2, …
            failed = cw.MathExpression(
                expression="FILL(failed, 0) + FILL(timedout, 0) + FILL(aborted, 0)",
                using_metrics={
                    "failed": sm.metric_failed(period=EXECUTION_PERIOD, statistic="Sum"),
                    "timedout": sm.metric_timed_out(period=EXECUTION_PERIOD, statistic="Sum"),
                    "aborted": sm.metric_aborted(period=EXECUTION_PERIOD, statistic="Sum"),
                },
                label="failed, timed out or aborted executions",
                period=EXECUTION_PERIOD,
            )
            alarm = failed.create_alarm(
                self,
                f"{workflow}Failed",
                alarm_name=f"{stack.stack_name}-{workflow}-failed",
                alarm_description=(
                    f"A {machine.kind.lower()} execution of {', '.join(machine.instances)} failed, timed out or was "
                    "aborted. The run's own notification names the step and says whether Bitbucket is unlocked."
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.execution_alarms.append(alarm)

        self.staleness_alarms: dict[str, cw.Alarm] = {}
        for instance in instances:
            limit = instance.staleness_limit_hours
            if limit is None:
                continue
            alarm = cw.Alarm(
                self,
                f"Stale-{instance.name}",
                alarm_name=f"{stack.stack_name}-{instance.name}-no-recent-backup",
                alarm_description=(
                    f"'{instance.name}' has had no complete backup for more than {limit} h (max_backup_age_hours), "
                    "or the staleness check could not tell. Check the schedule, skipped and failed runs, and the "
                    "StalenessCheck function's log."
                ),
                metric=_per_instance(names.HOURS_SINCE_COMPLETE, instance.name, STALENESS_PERIOD),
                threshold=limit,
                evaluation_periods=STALENESS_PERIODS,
                datapoints_to_alarm=STALENESS_PERIODS,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.BREACHING,
            )
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            self.staleness_alarms[instance.name] = alarm

        # A failed restore drill: its backup could not be restored, or the copy failed its checks.
        self.drill_alarms: dict[str, cw.Alarm] = {}
        for instance in instances:
            if instance.drill is None:
                continue
            alarm = cw.Alarm(
                self,
                f"DrillFailed-{instance.name}",
                alarm_name=f"{stack.stack_name}-{instance.name}-restore-drill-failed",
                alarm_description=(
                    f"The restore drill of '{instance.name}' failed: its newest backup did not restore, or the "
                    "restored copy failed its checks (the backup is tagged bitbucket-backup:verify-failed). The "
                    "drill's own notification names the step and the cause."
                ),
                metric=_per_instance(names.DRILL_FAILED, instance.name, EXECUTION_PERIOD),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.drill_alarms[instance.name] = alarm

        # A safety net whose deliveries and retries all failed: its dead-letter queue holds the execution's event.
        self.dead_letter_alarms: list[cw.Alarm] = []
        for net in safety_nets:
            alarm = cw.Alarm(
                self,
                f"{net.node.id}DeadLetters",
                alarm_name=f"{stack.stack_name}-{net.node.id}-failed",
                alarm_description=(
                    f"The safety net ({net.description}) could not run for an execution that ended without its own "
                    "cleanup: Bitbucket may still be in maintenance mode and that run's resources not cleaned up. "
                    "The dead-letter queue holds the execution's event, the function's log says why; check Bitbucket "
                    "and clean up by hand, then delete the message."
                ),
                metric=net.dead_letters.metric_approximate_number_of_messages_visible(
                    period=EXECUTION_PERIOD, statistic="Maximum"
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.dead_letter_alarms.append(alarm)

        self.dashboard = self._dashboard(stack, instances, machines)

    def _allow_alarms_to_publish(self, stack: Stack, topic: sns.ITopic, key: kms.IKey) -> None:
        """The topic is encrypted and has a resource policy: CloudWatch needs both to deliver alarm actions."""
        alarms = f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*"
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": alarms},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsToTheEncryptedTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )

    def _dashboard(
        self, stack: Stack, instances: list[InstanceConfig], machines: list[MonitoredMachine]
    ) -> cw.Dashboard:
        limits = [f"{i.name}: {i.staleness_limit_hours} h" for i in instances if i.staleness_limit_hours]
        header = cw.TextWidget(
            markdown=(
                f"# Bitbucket DIY backup ({len(instances)} instance{'s' if len(instances) != 1 else ''})\n"
                "Per-instance lines come from the runs (finalize and failure steps) and the hourly staleness check. "
                f"Staleness limits: {', '.join(limits) if limits else 'none configured'}."
            ),
            width=24,
            height=3,
        )
        alarms: list[cw.Alarm] = [
            *self.execution_alarms,
            *self.staleness_alarms.values(),
            *self.drill_alarms.values(),
            *self.dead_letter_alarms,
        ]
        status = [
            cw.AlarmStatusWidget(
                title="Alarms" if n == 0 else f"Alarms ({n // ALARMS_PER_STATUS_WIDGET + 1})",
                alarms=alarms[n : n + ALARMS_PER_STATUS_WIDGET],
                sort_by=cw.AlarmStatusWidgetSortBy.STATE_UPDATED_TIMESTAMP,
                width=24,
                height=6,
            )
            for n in range(0, len(alarms), ALARMS_PER_STATUS_WIDGET)
        ]

        def graph(title: str, metric: str, statistic: str, unit: str) -> cw.GraphWidget:
            return cw.GraphWidget(
                title=title, left=[_search(metric, statistic)], left_y_axis=cw.YAxisProps(label=unit), width=12
            )

        executions = [
            cw.GraphWidget(
                title=f"{m.kind} executions: {', '.join(m.instances)}"[:200],
                left=[
                    m.state_machine.metric_started(statistic="Sum"),
                    m.state_machine.metric_succeeded(statistic="Sum"),
                    m.state_machine.metric_failed(statistic="Sum"),
                    m.state_machine.metric_timed_out(statistic="Sum"),
                    m.state_machine.metric_aborted(statistic="Sum"),
                ],
                width=12,
            )
            for m in machines
        ]
        per_instance = [
            graph("Hours since the last complete backup", names.HOURS_SINCE_COMPLETE, "Maximum", "hours"),
            graph("Backups succeeded", names.BACKUP_SUCCEEDED, "Sum", "runs"),
            graph("Backups failed", names.BACKUP_FAILED, "Sum", "runs"),
            graph("Lock window (Bitbucket in maintenance)", names.LOCK_WINDOW, "Maximum", "seconds"),
            graph("Drain time", names.DRAIN, "Maximum", "seconds"),
            graph("Total duration", names.DURATION, "Maximum", "seconds"),
            graph("Size copied", names.BACKUP_SIZE, "Maximum", "GB"),
            *([graph("Restore drills failed", names.DRILL_FAILED, "Sum", "drills")] if self.drill_alarms else []),
        ]
        return cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{stack.stack_name}-{Aws.REGION}",
            default_interval=Duration.days(14),
            widgets=[[header], *[[w] for w in status], per_instance, executions],
        )


@jsii.implements(IAspect)
class _EncryptLogGroups:
    def __init__(self, key: kms.IKey) -> None:
        self._key = key

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, logs.CfnLogGroup) and node.kms_key_id is None:
            node.kms_key_id = self._key.key_arn


def encrypt_logs(stack: Stack) -> kms.Key:
    """A key for the stack's log groups (every one, including those added later), usable by CloudWatch Logs for this
    account's log groups only. Like the log groups, it stays when the stack is deleted."""
    key = kms.Key(stack, "LogsKey", enable_key_rotation=True, description="Bitbucket DIY backup: log groups")
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="CloudWatchLogsOfThisAccount",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": (
                        f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                    )
                }
            },
        )
    )
    Aspects.of(stack).add(_EncryptLogGroups(key))
    return key
