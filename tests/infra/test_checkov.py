"""checkov, as a gate: the synthesized templates of the default cdk.json and of a configuration with every feature
(every strategy, copies to another region and another account, restore drills, Object Lock) have no failed check.

A check that does not apply is skipped in the resource's own metadata with its reason (stacks/nag.py, `skip_checkov`),
so a resource added later is checked in full. checkov runs in its own environment (`make checkov`: its pins conflict
with the project's), once for all templates of the session.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import ACCOUNT, PROD, REGION, STAGING

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".checkov" / "bin" / "checkov"

REMOTE = "210987654321"
REMOTE_ROLE = f"arn:aws:iam::{REMOTE}:role/bitbucket-dr-copies"
REMOTE_KEY = f"arn:aws:kms:us-east-1:{REMOTE}:key/0987dcba-12ab-34cd-56ef-1234567890ab"
DR_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DRILL_HOST = "i-0d0d0d0d0d0d0d0d0"
TO_ANOTHER_REGION = {"region": "eu-central-1", "kms_key_id": DR_KEY, "archive_bucket": "dr-archives-eu-central-1"}
TO_ANOTHER_ACCOUNT = {
    "region": "us-east-1",
    "account_id": REMOTE,
    "role_arn": REMOTE_ROLE,
    "kms_key_id": REMOTE_KEY,
    "archive_bucket": "dr-archives-us-east-1",
}
ARCHIVED = {
    "name": "archived",
    "base_url": "https://bitbucket-archived.example.com",
    "credentials_secret": "bitbucket/archived/backup-user",
    "home": {
        "strategy": "rsync",
        "instance_id": "i-0a0a0a0a0a0a0a0a0",
        "home_path": "/var/atlassian/application-data/bitbucket",
        "staging_path": "/backup/staging",
    },
    "database": {
        "strategy": "postgresql",
        "instance_id": "i-0a0a0a0a0a0a0a0a0",
        "user": "bitbucket",
        "dbname": "bitbucket",
        "password_secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/archived/db-AbCdEf",
        "dump_path": "/backup/dumps",
    },
    "schedule": "cron(0 3 * * ? *)",
    "copies": [TO_ANOTHER_REGION, TO_ANOTHER_ACCOUNT],
    "drill": {"schedule": "cron(0 6 ? * SUN *)", "host_instance_id": DRILL_HOST},
}


def default_config() -> dict[str, Any]:
    """cdk.json's configuration as shipped; sources-only bundling changes nothing but the asset's hash."""
    config: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]["bitbucket-backup"]
    return {**config, "bundling": "none"}


def full_config() -> dict[str, Any]:
    """Every strategy (EBS + RDS, EBS + Aurora, rsync + pg_dump), copies to another region and to another account,
    restore drills, Object Lock on the archives, instances in a VPC and outside one."""
    prod = {
        **PROD,
        "copies": [{k: v for k, v in TO_ANOTHER_REGION.items() if k != "archive_bucket"}],
        "drill": {"schedule": "rate(7 days)", "host_instance_id": DRILL_HOST},
    }
    staging = {**STAGING, "copies": [{k: v for k, v in TO_ANOTHER_ACCOUNT.items() if k != "archive_bucket"}]}
    return {
        "bundling": "none",
        "notification_emails": ["bitbucket-admins@example.com"],
        "archive_object_lock": {"mode": "COMPLIANCE", "days": 30},
        "instances": [prod, staging, ARCHIVED],
    }


CONFIGS = {"default": default_config, "full": full_config}


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    resource: str  # e.g. AWS::Lambda::Function.LockFn0A1B2C3D
    comment: str  # a skip's reason; empty for a failure

    def __str__(self) -> str:
        return f"{self.check_id} {self.resource}: {self.comment or self.check_name}"


@dataclass(frozen=True)
class Report:
    passed: int
    failed: list[Finding]
    skipped: list[Finding]


def _findings(checks: list[dict[str, Any]]) -> list[Finding]:
    return [
        Finding(
            check_id=c["check_id"],
            check_name=c.get("check_name") or "",
            resource=c["resource"],
            comment=((c.get("check_result") or {}).get("suppress_comment") or "").strip(),
        )
        for c in checks
    ]


def run_checkov(paths: list[Path]) -> dict[str, Report]:
    """One checkov run over these templates (it takes seconds to start), its report per file name."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed: run `make checkov` (it installs into {CHECKOV.parent.parent})")
    args = [str(CHECKOV), "--framework", "cloudformation", "--output", "json", "--compact", "--skip-download"]
    for path in paths:
        args += ["--file", str(path)]
    # Offline: no look-up of Prisma Cloud's check mapping, no version check against PyPI.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False, env=env)
    try:
        raw = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not answer in JSON (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    # Exit code 1 means failed checks; anything else but 0 is an error of the run itself.
    assert result.returncode in (0, 1), result.stderr
    checks: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for report in raw if isinstance(raw, list) else [raw]:
        assert not report["results"].get("parsing_errors"), report["results"]["parsing_errors"]
        for key in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"].get(key, []):
                checks.setdefault(Path(check["file_path"]).name, {}).setdefault(key, []).append(check)
    return {
        name: Report(
            passed=len(found.get("passed_checks", [])),
            failed=_findings(found.get("failed_checks", [])),
            skipped=_findings(found.get("skipped_checks", [])),
        )
        for name, found in checks.items()
    }


# A queue nobody encrypted: checkov must fail it, or a clean report above proves nothing.
CANARY = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {"Canary": {"Type": "AWS::SQS::Queue", "Properties": {"MessageRetentionPeriod": 60}}},
}


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this pytest run sees, so that the synthesis and the checkov run (a minute on
    two busy cores) happen once per run, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "checkov-shared"
    shared.mkdir(exist_ok=True)
    return shared


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each configuration synthesized once per run (rehearsal/synth.py shares it between workers), with cdk-nag as
    `cdk synth` runs it, written where checkov and cfn-lint read it."""
    from rehearsal.synth import synthesized

    shared = _shared(tmp_path_factory)
    paths = {name: shared / f"{name}.template.json" for name in CONFIGS}
    with _exclusive(shared / "synth.lock"):
        for name, make in CONFIGS.items():
            if not paths[name].exists():
                paths[name].write_text(json.dumps(synthesized(make(), checks=True).template, indent=1))
    return paths


@pytest.fixture(scope="module")
def reports(templates: dict[str, Path]) -> dict[str, Report]:
    """checkov once per run over both templates and the canary."""
    shared = next(iter(templates.values())).parent
    cached = shared / "checkov-reports.json"
    with _exclusive(shared / "checkov.lock"):
        if not cached.exists():
            canary = shared / "canary.template.json"
            canary.write_text(json.dumps(CANARY))
            by_file = run_checkov([*templates.values(), canary])
            named = {**templates, "canary": canary}
            found = {name: by_file.get(path.name, Report(0, [], [])) for name, path in named.items()}
            cached.write_text(json.dumps({name: asdict(report) for name, report in found.items()}))
    return {
        name: Report(
            passed=report["passed"],
            failed=[Finding(**f) for f in report["failed"]],
            skipped=[Finding(**f) for f in report["skipped"]],
        )
        for name, report in json.loads(cached.read_text()).items()
    }


def _template(templates: dict[str, Path], name: str) -> dict[str, Any]:
    return dict(json.loads(templates[name].read_text()))


# --- the gate ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_checkov_finds_nothing_unexplained(reports: dict[str, Report], config: str) -> None:
    report = reports[config]
    assert report.passed > 500, f"checkov passed only {report.passed} checks: is it reading the template?"
    assert not report.failed, f"{len(report.failed)} failed checks:\n" + "\n".join(map(str, report.failed))


@pytest.mark.slow
def test_checkov_does_fail_what_is_wrong(reports: dict[str, Report]) -> None:
    assert [f.check_id for f in reports["canary"].failed] == ["CKV_AWS_27"]


@pytest.mark.slow
@pytest.mark.long
def test_cfn_lint_finds_no_errors_in_the_full_template(templates: dict[str, Path]) -> None:
    """tests/infra/test_lint.py lints the shared synthesis; this one has every feature (and the skips' metadata)."""
    from tests.infra.test_lint import BIN, CFN_LINT_IGNORED

    args = [str(BIN / "cfn-lint"), "--ignore-checks", *CFN_LINT_IGNORED, "--", str(templates["full"])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    # Exit code is a bit mask: 1 fatal, 2 error, 4 warning, 8 informational. Warnings alone are acceptable.
    assert result.returncode in (0, 4, 8, 12), result.stdout + result.stderr


@pytest.mark.slow
def test_every_skip_has_one_of_the_reasons_and_each_reason_is_used(reports: dict[str, Report]) -> None:
    from stacks import nag

    reasons = {(s.id, s.comment) for s in nag.CHECKOV_SKIPS}
    assert len({s.comment for s in nag.CHECKOV_SKIPS}) == len(nag.CHECKOV_SKIPS), "a reason is listed twice"
    for skip in nag.CHECKOV_SKIPS:
        assert skip.id.startswith("CKV_") and len(skip.comment.split()) >= 8, skip
    used = set()
    for config in CONFIGS:
        for finding in reports[config].skipped:
            assert (finding.check_id, finding.comment) in reasons, (
                f"a skip without a reason of stacks/nag.py: {finding}"
            )
            used.add((finding.check_id, finding.comment))
    assert used == reasons, f"reasons no resource uses any more (remove them): {reasons - used}"


def test_a_skip_is_kept_per_resource_and_added_to_not_replaced() -> None:
    from aws_cdk import App, CfnResource, Stack

    from stacks import nag

    stack = Stack(App(), "S")
    queue = CfnResource(stack, "Q", type="AWS::SQS::Queue")
    other = CfnResource(stack, "Other", type="AWS::SQS::Queue")
    nag.skip_checkov(queue, nag.LAMBDA_CONCURRENCY)
    nag.skip_checkov(queue, nag.LAMBDA_ENVIRONMENT, nag.LAMBDA_CONCURRENCY)
    assert queue.get_metadata("checkov") == {
        "skip": [
            {"id": nag.LAMBDA_CONCURRENCY.id, "comment": nag.LAMBDA_CONCURRENCY.comment},
            {"id": nag.LAMBDA_ENVIRONMENT.id, "comment": nag.LAMBDA_ENVIRONMENT.comment},
        ]
    }
    assert other.get_metadata("checkov") is None


# --- what checkov does not see: keys, the safety nets' failures, logs (issue 10, finding 11) -------------------------


def _of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def _key_of(value: Any) -> str:
    """The logical id of the key a KmsKeyId / KMSMasterKeyId / KmsMasterKeyId property refers to."""
    assert isinstance(value, dict) and "Fn::GetAtt" in value, value
    return str(value["Fn::GetAtt"][0])


def _statements(key: dict[str, Any]) -> list[dict[str, Any]]:
    return list(key["Properties"]["KeyPolicy"]["Statement"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_cross_account_roles_may_decrypt_archives_only_through_s3(templates: dict[str, Path]) -> None:
    template = _template(templates, "full")
    (key,) = {
        _key_of(
            b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
                "ServerSideEncryptionByDefault"
            ]["KMSMasterKeyID"]
        )
        for b in _of_type(template, "AWS::S3::Bucket").values()
    }
    readers = [s for s in _statements(template["Resources"][key]) if s["Principal"].get("AWS") == REMOTE_ROLE]
    assert readers, "the cross-account copy role must be able to read the archives"
    for statement in readers:
        assert statement["Effect"] == "Allow" and _as_list(statement["Action"]) == ["kms:Decrypt"]
        # The archives' region (copies read from it) and the target's (where the copy runs), through S3 only.
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        assert sorted(_as_list(via)) == [f"s3.{REGION}.amazonaws.com", "s3.us-east-1.amazonaws.com"]
        assert set(statement["Condition"]) == {"StringEquals"}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_run_table_has_a_key_of_its_own(templates: dict[str, Path], config: str) -> None:
    template = _template(templates, config)
    ((table_id, table),) = _of_type(template, "AWS::DynamoDB::Table").items()
    runs_key = _key_of(table["Properties"]["SSESpecification"]["KMSMasterKeyId"])
    others = {_key_of(t["Properties"]["KmsMasterKeyId"]) for t in _of_type(template, "AWS::SNS::Topic").values()}
    others |= {_key_of(q["Properties"]["KmsMasterKeyId"]) for q in _of_type(template, "AWS::SQS::Queue").values()}
    others |= {_key_of(g["Properties"]["KmsKeyId"]) for g in _of_type(template, "AWS::Logs::LogGroup").values()}
    assert others and runs_key not in others
    key = template["Resources"][runs_key]
    assert key["Properties"]["EnableKeyRotation"] is True
    # Only the account (whose IAM policies decide): no service, no other account.
    assert [s["Principal"] for s in _statements(key)] == [
        {"AWS": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":iam::{ACCOUNT}:root"]]}}
    ]
    # Whoever may use the key may use the table: no role gets the tokens' key for anything else.
    for name, policy in _of_type(template, "AWS::IAM::Policy").items():
        text = json.dumps(policy["Properties"]["PolicyDocument"])
        if runs_key in text:
            assert table_id in text, name


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_failed_safety_net_is_retried_then_kept_in_an_encrypted_dead_letter_queue(
    templates: dict[str, Path], config: str
) -> None:
    template = _template(templates, config)
    resources = template["Resources"]
    rules = _of_type(template, "AWS::Events::Rule")
    assert len(rules) == 2 * (1 if config == "default" else 2)  # backup and restore, per network
    queues = set()
    for name, rule in rules.items():
        ((target),) = rule["Properties"]["Targets"]
        function = target["Arn"]["Fn::GetAtt"][0]
        assert resources[function]["Type"] == "AWS::Lambda::Function"
        # Delivery: EventBridge retries, then writes the event to the queue.
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 3, name
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600, name
        queue = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        queues.add(queue)
        # The function failed: Lambda retries, then writes the event to the same queue.
        assert resources[function]["Properties"]["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": [queue, "Arn"]}}
        (invoke,) = [
            c["Properties"]
            for c in _of_type(template, "AWS::Lambda::EventInvokeConfig").values()
            if c["Properties"]["FunctionName"] == {"Ref": function}
        ]
        assert invoke["MaximumRetryAttempts"] == 2 and invoke["MaximumEventAgeInSeconds"] >= 3600
        # The queue is encrypted with a key EventBridge may use (for this account's rules), and keeps 14 days.
        props = resources[queue]["Properties"]
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600
        key = resources[_key_of(props["KmsMasterKeyId"])]
        (events,) = [s for s in _statements(key) if s["Principal"] == {"Service": "events.amazonaws.com"}]
        assert set(events["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
        assert events["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        # ... and the queue's policy lets this rule, and only it, send to it.
        (policy,) = [
            p
            for p in _of_type(template, "AWS::SQS::QueuePolicy").values()
            if p["Properties"]["Queues"] == [{"Ref": queue}]
        ]
        (allow,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [name, "Arn"]}}}
    assert len(queues) == len(rules)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_log_groups_are_explicit_kept_with_the_stack_gone_and_encrypted(
    templates: dict[str, Path], config: str
) -> None:
    template = _template(templates, config)
    groups = _of_type(template, "AWS::Logs::LogGroup")
    for name, group in groups.items():
        assert group["DeletionPolicy"] == group["UpdateReplacePolicy"] == "Retain", name
        assert group["Properties"]["RetentionInDays"] >= 90, name
    # Every function and state machine logs to one of them (none to a group Lambda would create on its own).
    for name, fn in _of_type(template, "AWS::Lambda::Function").items():
        assert fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups, name
    for name, machine in _of_type(template, "AWS::StepFunctions::StateMachine").items():
        (destination,) = machine["Properties"]["LoggingConfiguration"]["Destinations"]
        assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0] in groups, name
    (logs_key,) = {_key_of(g["Properties"]["KmsKeyId"]) for g in groups.values()}
    key = template["Resources"][logs_key]
    assert key.get("DeletionPolicy") == "Retain", "retained logs must stay readable"
    (service,) = [s for s in _statements(key) if "Service" in s["Principal"]]
    assert service["Principal"] == {"Service": f"logs.{REGION}.amazonaws.com"}
    context = service["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert context["Fn::Join"][1][-1] == f":logs:{REGION}:{ACCOUNT}:log-group:*"
