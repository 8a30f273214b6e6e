"""What the rehearsal deploys and the template tests read: a project config synthesized by the CDK app (cached per
process here, and on disk by rehearsal/template_cache.py, so that each synthesis happens once for all workers)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rehearsal.fake_account import ACCOUNT, REGION


def rehearsal_project_config(
    home: str = "amazon-ebs",
    database: str = "amazon-rds",
    drill: bool = False,
    mesh_nodes: int = 0,
    mesh_strategy: str = "amazon-ebs",
    search: str = "none",
) -> dict[str, Any]:
    """What the rehearsal synthesizes: one instance 'demo' with placeholder ids, replaced at run time by the
    ids of the resources created in moto (the definition does not depend on them). With drill, a weekly restore
    drill (its drill host is created in moto, its Run Commands run in the local host). With mesh_nodes, that many
    Mesh nodes `node1`… whose homes are copied by mesh_strategy (amazon-ebs or rsync). With search, the search
    index's snapshots (amazon-opensearch or opensearch; its endpoint is the simulator's at run time)."""
    home_cfg: dict[str, Any] = {"strategy": "none"}
    if home == "amazon-ebs":
        home_cfg = {
            "strategy": "amazon-ebs",
            "instance_id": "i-00000000000000000",
            "volumes": ["/dev/xvdf"],
            "mount_points": [],
        }
    elif home in ("rsync", "btrfs"):
        home_cfg = {
            "strategy": "rsync",
            "instance_id": "i-00000000000000000",
            "home_path": "/var/atlassian/application-data/bitbucket",
            "staging_path": "/var/tmp/bitbucket-staging",
        }
        if home == "btrfs":  # rsync from a btrfs snapshot taken under the lock
            home_cfg |= {"snapshot": "btrfs", "snapshot_path": "/var/atlassian/application-data/snapshots"}
    db_cfg: dict[str, Any] = {"strategy": "none"}
    if database in ("postgresql", "mysql"):
        db_cfg = {
            "strategy": database,
            "instance_id": "i-00000000000000000",
            "user": "bitbucket",
            "dbname": "bitbucket",
            "password_secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/demo/db-AbCdEf",
            "dump_path": "/var/tmp/bitbucket-dumps",
        }
    elif database == "postgresql-fslevel":  # in the (btrfs) home: its snapshot is the database's copy
        db_cfg = {"strategy": database, "data_directory": "/var/atlassian/application-data/bitbucket/pgdata"}
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
                **(
                    {"mesh_nodes": [mesh_node(n, mesh_strategy) for n in range(1, mesh_nodes + 1)]}
                    if mesh_nodes
                    else {}
                ),
                **({"search": search_index(search)} if search != "none" else {}),
                "keep_backups": 2,
                "schedule": "rate(1 day)",
                **({"drill": {"schedule": "rate(7 days)", "host_instance_id": "i-00000000000000000"}} if drill else {}),
            }
        ],
    }


SEARCH_DOMAIN_ARN = f"arn:aws:es:{REGION}:{ACCOUNT}:domain/bitbucket-demo"
SEARCH_SECRET = "bitbucket/demo/search-user"


def search_index(strategy: str) -> dict[str, Any]:
    """The demo instance's search index, with a placeholder endpoint (the simulator's at run time)."""
    if strategy == "amazon-opensearch":
        return {
            "strategy": strategy,
            "endpoint": f"https://search-bitbucket-demo.{REGION}.es.amazonaws.com",
            "domain_arn": SEARCH_DOMAIN_ARN,
        }
    return {
        "strategy": "opensearch",
        "endpoint": "https://search.demo.internal:9200",
        "repository": "bitbucket-backup",
        "credentials_secret": SEARCH_SECRET,
    }


def mesh_node(n: int, strategy: str) -> dict[str, Any]:
    """Mesh node `node<n>` with placeholder ids (each its own host)."""
    instance_id = f"i-{0xA0 + n:017x}"
    if strategy == "amazon-ebs":
        home = {"strategy": "amazon-ebs", "instance_id": instance_id, "volumes": ["/dev/xvdf"]}
    else:
        home = {
            "strategy": "rsync",
            "instance_id": instance_id,
            "home_path": f"/var/atlassian/application-data/mesh{n}",
            "staging_path": f"/var/tmp/mesh{n}-staging",
        }
    return {"name": f"node{n}", "home": home}


@dataclass(frozen=True)
class Synthesized:
    """What one synthesis of the CDK app says: the template and, with cdk-nag on, what it acknowledged."""

    template: dict[str, Any]
    acknowledged: dict[str, str]  # the cdk-nag finding ids stacks/nag.py acknowledged, with their reasons
    violations: list[Any]  # validation-report.json's violations: none, or app.synth() would have raised


@lru_cache(maxsize=16)
def _synthesized(config_json: str, checks: bool, retry_interval_s: int | None) -> str:
    from rehearsal.template_cache import cached_template

    def synthesize() -> dict[str, Any]:
        # Imported here: with the cache warm, a process never starts the jsii runtime.
        from aws_cdk import Environment

        from stacks import nag
        from stacks.app_builder import STACK_NAME, build_app
        from stacks.constructs.backup_workflow import WorkflowTiming

        timing = None if retry_interval_s is None else WorkflowTiming(retry_interval_s=retry_interval_s)
        with tempfile.TemporaryDirectory(prefix="rehearsal-cdk-") as outdir:
            app, stack = build_app(
                json.loads(config_json),
                outdir=outdir,
                env=Environment(account=ACCOUNT, region=REGION),
                timing=timing,
                checks=checks,
            )
            app.synth()  # with checks, raises on any cdk-nag finding stacks/nag.py does not acknowledge
            report = Path(outdir) / "validation-report.json"
            plugins = json.loads(report.read_text()).get("pluginReports", []) if report.exists() else []
            return {
                "template": json.loads((Path(outdir) / f"{STACK_NAME}.template.json").read_text()),
                "acknowledged": nag.acknowledged(stack),
                "violations": [v for plugin in plugins for v in plugin.get("violations", [])],
            }

    key = f"{config_json}|checks={checks}|retry={retry_interval_s}|{ACCOUNT}|{REGION}"
    return json.dumps(cached_template(key, synthesize))


def synthesized(config: dict[str, Any], *, checks: bool = True, retry_interval_s: int | None = None) -> Synthesized:
    """The CDK app synthesized for this config in the rehearsal's account and region (cached per process and on
    disk). checks=True runs cdk-nag as `cdk synth` does; retry_interval_s shortens the workflow's retry waits."""
    record = json.loads(_synthesized(json.dumps(config, sort_keys=True), checks, retry_interval_s))
    return Synthesized(
        template=record["template"], acknowledged=record["acknowledged"], violations=record["violations"]
    )


def synth_template(config: dict[str, Any], retry_interval_s: int = 1) -> dict[str, Any]:
    """The CloudFormation template the rehearsal deploys for this config (no cdk-nag: the template tests run it)."""
    return synthesized(config, checks=False, retry_interval_s=retry_interval_s).template
