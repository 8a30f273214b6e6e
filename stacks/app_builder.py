"""Builds the CDK app from a config dict; app.py and the rehearsal both call this, so they synthesize the
same thing."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, CfnResource, Environment

from functions.models.config import ConfigError, parse_project_config
from functions.models.part_config import SelfManagedSearchConfig
from stacks import nag
from stacks.asset import ROOT
from stacks.backup_stack import BackupStack, StackSettings, network_groups
from stacks.constructs.backup_workflow import WorkflowTiming

CONTEXT_KEY = "bitbucket-backup"
STACK_NAME = "BitbucketDiyBackup"
# CloudFormation's limit per stack. Each network group costs about 120 resources (its backup and restore functions
# and state machines), each instance 2 to 4 (configuration parameter, schedule, staleness alarm, e-mail filter).
MAX_RESOURCES = 500


def build_app(
    raw_config: Any,
    *,
    outdir: str | None = None,
    env: Environment | None = None,
    timing: WorkflowTiming | None = None,
    checks: bool = True,
) -> tuple[App, BackupStack]:
    config = parse_project_config(raw_config)
    for instance in config.instances:
        # A bundle ships inside the Lambda asset, so it must exist in this checkout at synth time: Bitbucket's, and
        # a self-managed search cluster's.
        search = instance.search if isinstance(instance.search, SelfManagedSearchConfig) else None
        bundles = {"ca_bundle": instance.ca_bundle, "search.ca_bundle": search.ca_bundle if search else None}
        for field, bundle in bundles.items():
            if bundle and not (ROOT / bundle).is_file():
                raise ConfigError(
                    f"instance '{instance.name}': {field} '{bundle}' is not a file in this repository "
                    "(put the PEM under functions/, e.g. functions/certs/ca.pem)"
                )
    app = App(outdir=outdir) if outdir else App()
    stack = BackupStack(
        app,
        STACK_NAME,
        settings=StackSettings(config=config, timing=timing or WorkflowTiming()),
        env=env,
        description="Bitbucket DIY backup for AWS: scheduled, Bitbucket-aware backups",
    )
    count = sum(1 for c in stack.node.find_all() if isinstance(c, CfnResource))
    if count > MAX_RESOURCES:
        groups = len(network_groups(config.instances))
        raise ConfigError(
            f"this configuration needs {count} CloudFormation resources, more than the {MAX_RESOURCES} one stack may "
            f"have ({len(config.instances)} instances in {groups} networks; each network costs about 120): give "
            "instances of the same VPC the same network (subnet_ids, security_group_ids), or split the instances "
            "over several deployments (accounts or regions)"
        )
    if checks:
        nag.check(app, stack)
    return app, stack
