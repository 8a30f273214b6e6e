"""What the rehearsal deploys: its project config, synthesized by the CDK app into a CloudFormation template (cached
per process here, and on disk by rehearsal/template_cache.py)."""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from rehearsal.fake_account import ACCOUNT, REGION


def rehearsal_project_config(
    home: str = "amazon-ebs", database: str = "amazon-rds", drill: bool = False
) -> dict[str, Any]:
    """What the rehearsal synthesizes: one instance 'demo' with placeholder ids, replaced at run time by the
    ids of the resources created in moto (the definition does not depend on them). With drill, a weekly restore
    drill (its drill host is created in moto, its Run Commands run in the local host)."""
    home_cfg: dict[str, Any] = {"strategy": "none"}
    if home == "amazon-ebs":
        home_cfg = {
            "strategy": "amazon-ebs",
            "instance_id": "i-00000000000000000",
            "volumes": ["/dev/xvdf"],
            "mount_points": [],
        }
    elif home == "rsync":
        home_cfg = {
            "strategy": "rsync",
            "instance_id": "i-00000000000000000",
            "home_path": "/var/atlassian/application-data/bitbucket",
            "staging_path": "/var/tmp/bitbucket-staging",
        }
    db_cfg: dict[str, Any] = {"strategy": "none"}
    if database == "postgresql":
        db_cfg = {
            "strategy": "postgresql",
            "instance_id": "i-00000000000000000",
            "user": "bitbucket",
            "dbname": "bitbucket",
            "password_secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/demo/db-AbCdEf",
            "dump_path": "/var/tmp/bitbucket-dumps",
        }
    elif database == "amazon-rds":
        db_cfg = {"strategy": "amazon-rds", "instance_id": "bitbucket-demo"}
    elif database == "amazon-aurora":
        db_cfg = {"strategy": "amazon-aurora", "cluster_id": "bitbucket-demo"}
    return {
        "bundling": "none",
        "notification_emails": [],
        "instances": [
            {
                "name": "demo",
                "base_url": "http://127.0.0.1:7990",
                # The simulator speaks plain http on 127.0.0.1; a real instance needs https (every run warns).
                "insecure_connection_allowed_for_testing": True,
                "credentials_secret": "bitbucket/demo/backup-user",
                "home": home_cfg,
                "database": db_cfg,
                "keep_backups": 2,
                "schedule": "rate(1 day)",
                **({"drill": {"schedule": "rate(7 days)", "host_instance_id": "i-00000000000000000"}} if drill else {}),
            }
        ],
    }


@lru_cache(maxsize=8)
def _synth(config_json: str, retry_interval_s: int) -> str:
    from aws_cdk import Environment

    from rehearsal.template_cache import cached_template
    from stacks.app_builder import STACK_NAME, build_app
    from stacks.constructs.backup_workflow import WorkflowTiming

    def synthesize() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="rehearsal-cdk-") as outdir:
            app, _ = build_app(
                json.loads(config_json),
                outdir=outdir,
                env=Environment(account=ACCOUNT, region=REGION),
                timing=WorkflowTiming(retry_interval_s=retry_interval_s),
                checks=False,
            )
            app.synth()
            return dict(json.loads((Path(outdir) / f"{STACK_NAME}.template.json").read_text()))

    return json.dumps(cached_template(config_json + f"|retry={retry_interval_s}", synthesize))


def synth_template(config: dict[str, Any], retry_interval_s: int = 1) -> dict[str, Any]:
    """The CloudFormation template the CDK app synthesizes for this config (cached per process and on disk)."""
    return dict(json.loads(_synth(json.dumps(config, sort_keys=True), retry_interval_s)))
