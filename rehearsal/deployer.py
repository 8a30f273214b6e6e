"""Deploys a synthesized template into moto as CloudFormation would: each resource created in dependency order
(roles and policies first, the state machines last), its Ref and GetAtt recorded in the resolver for the resources
after it (rehearsal/cfn_resolver.py). The roles' policies are given to moto as it can evaluate them
(rehearsal/iam.py); EventBridge rules are kept for the rehearsal to deliver (moto's EventBridge does not see Step
Functions status changes)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bitbucket_backup_cli.base import DEFAULT_STACK
from rehearsal import iam, ssm_documents
from rehearsal.cfn_resolver import Resolver
from rehearsal.fake_account import REGION


@dataclass
class Deployed:
    """What the rehearsal needs to know of a deployed template."""

    state_machines: dict[str, str]  # logical id -> ARN
    topic_arn: str
    table: str
    parameters: dict[str, str]  # SSM name -> value
    archive_bucket: str | None
    definitions: dict[str, dict[str, Any]]  # logical id -> the state machine's definition
    rules: list[tuple[dict[str, Any], list[str]]]  # EventBridge: (pattern, target ARNs)


class Deployer:
    def __init__(self, client: Callable[[str], Any], resolver: Resolver) -> None:
        self.client = client
        self.resolver = resolver
        self.archive_bucket: str | None = None
        self.definitions: dict[str, dict[str, Any]] = {}
        self.rules: list[tuple[dict[str, Any], list[str]]] = []

    def deploy(self, template: dict[str, Any]) -> Deployed:
        resources: dict[str, dict[str, Any]] = template["Resources"]
        r = self.resolver
        # The state machines' role: moto's interpreter signs as the harness whatever it is (rehearsal/iam.py).
        role_arn = self.client("iam").create_role(
            RoleName="rehearsal-state-machines",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        order = [
            "AWS::IAM::Role",
            "AWS::IAM::ManagedPolicy",
            "AWS::IAM::Policy",
            "AWS::KMS::Key",
            "AWS::SNS::Topic",
            "AWS::DynamoDB::Table",
            "AWS::SSM::Parameter",
            "AWS::S3::Bucket",
            "AWS::SSM::Document",
            "AWS::Logs::LogGroup",
            "AWS::Lambda::Function",
            "AWS::StepFunctions::StateMachine",
            "AWS::Events::Rule",
        ]
        for kind in order:
            for logical, resource in resources.items():
                if resource["Type"] == kind:
                    self._create(logical, kind, resource.get("Properties", {}), role_arn)
        return Deployed(
            state_machines={
                logical: r.refs[logical]
                for logical, res in resources.items()
                if res["Type"] == "AWS::StepFunctions::StateMachine"
            },
            topic_arn=next(r.refs[k] for k, v in resources.items() if v["Type"] == "AWS::SNS::Topic"),
            table=next(r.refs[k] for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table"),
            parameters={
                v["Properties"]["Name"]: v["Properties"]["Value"]
                for v in resources.values()
                if v["Type"] == "AWS::SSM::Parameter"
            },
            archive_bucket=self.archive_bucket,
            definitions=self.definitions,
            rules=self.rules,
        )

    def _create(self, logical: str, kind: str, props: dict[str, Any], role_arn: str) -> None:
        r = self.resolver
        if kind.startswith("AWS::IAM::"):
            self._create_iam(logical, kind, props)
        elif kind == "AWS::KMS::Key":
            key = self.client("kms").create_key(Description=logical)["KeyMetadata"]
            r.refs[logical], r.attrs[(logical, "Arn")] = key["KeyId"], key["Arn"]
        elif kind == "AWS::SNS::Topic":
            arn = self.client("sns").create_topic(Name=logical)["TopicArn"]
            r.refs[logical], r.attrs[(logical, "TopicArn")] = arn, arn
        elif kind == "AWS::DynamoDB::Table":
            table = self.client("dynamodb").create_table(
                TableName=logical,
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode="PAY_PER_REQUEST",
            )["TableDescription"]
            r.refs[logical], r.attrs[(logical, "Arn")] = logical, table["TableArn"]
        elif kind == "AWS::SSM::Parameter":
            self.client("ssm").put_parameter(Name=props["Name"], Value=r(props["Value"]), Type="String")
            r.refs[logical] = props["Name"]
        elif kind == "AWS::SSM::Document":
            r.refs[logical] = ssm_documents.create(self.client("ssm"), props, r)
        elif kind == "AWS::S3::Bucket":
            s3 = self.client("s3")
            # Named as CloudFormation names a bucket: the stack's name, the logical id and a random suffix.
            name = props.get("BucketName") or f"{DEFAULT_STACK.lower()}-{logical.lower()}-{uuid.uuid4().hex[:12]}"[:63]
            locked = bool(props.get("ObjectLockEnabled"))
            s3.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=locked
            )
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            if locked and props.get("ObjectLockConfiguration"):
                s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=props["ObjectLockConfiguration"])
            r.refs[logical], r.attrs[(logical, "Arn")] = name, f"arn:aws:s3:::{name}"
            self.archive_bucket = name
        elif kind == "AWS::Logs::LogGroup":
            # As CloudFormation names a group the template does not name: the stack, the logical id, a suffix.
            name = props.get("LogGroupName") or f"{DEFAULT_STACK}-{logical}-{uuid.uuid4().hex[:12].upper()}"
            self.client("logs").create_log_group(logGroupName=name)
            r.refs[logical] = name
        elif kind == "AWS::Lambda::Function":
            code = io.BytesIO()
            with zipfile.ZipFile(code, "w") as archive:
                archive.writestr("README", "the rehearsal's workers run the bundled asset (rehearsal/lambda_asset.py)")
            fn = self.client("lambda").create_function(
                FunctionName=logical,
                Runtime="python3.13",
                Role=r(props["Role"]),
                Handler=props["Handler"],
                Code={"ZipFile": code.getvalue()},
                Timeout=props.get("Timeout", 60),
                MemorySize=props.get("MemorySize", 128),
                Environment={"Variables": r(props.get("Environment", {}).get("Variables", {}))},
                Description=r(props.get("Description", "")),
                **({"LoggingConfig": r(props["LoggingConfig"])} if props.get("LoggingConfig") else {}),
            )
            r.refs[logical], r.attrs[(logical, "Arn")] = logical, fn["FunctionArn"]
        elif kind == "AWS::Events::Rule":
            # Kept here and delivered by `wait`: moto's EventBridge does not see Step Functions status changes.
            self.rules.append((r(props["EventPattern"]), [r(t["Arn"]) for t in props.get("Targets", [])]))
        elif kind == "AWS::StepFunctions::StateMachine":
            definition = r(props["DefinitionString"])
            # A fixed name counts (the functions recognise the drill's restore machine by it); else the logical id.
            name = props.get("StateMachineName") or logical
            arn = self.client("stepfunctions").create_state_machine(name=name, definition=definition, roleArn=role_arn)[
                "stateMachineArn"
            ]
            r.refs[logical], r.attrs[(logical, "Name")] = arn, name
            self.definitions[logical] = json.loads(definition)

    def _create_iam(self, logical: str, kind: str, props: dict[str, Any]) -> None:
        """The template's roles and their policies, as moto can evaluate them (rehearsal/iam.py)."""
        client, r = self.client("iam"), self.resolver
        if kind == "AWS::IAM::Role":
            made = client.create_role(
                RoleName=logical[:64], AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"])
            )["Role"]
            r.refs[logical], r.attrs[(logical, "Arn")] = made["RoleName"], made["Arn"]
            for policy in props.get("Policies", []):
                inline = json.dumps(iam.for_moto(policy["PolicyDocument"]))
                client.put_role_policy(
                    RoleName=made["RoleName"], PolicyName=policy["PolicyName"], PolicyDocument=inline
                )
            for managed in props.get("ManagedPolicyArns", []):
                arn = r(managed)
                if arn.startswith("arn:aws:iam::aws:policy/"):  # AWS's own, e.g. basic execution: logs only
                    continue
                client.attach_role_policy(RoleName=made["RoleName"], PolicyArn=arn)
        elif kind == "AWS::IAM::ManagedPolicy":
            managed_document = json.dumps(iam.for_moto(props["PolicyDocument"]))
            arn = client.create_policy(PolicyName=logical[:128], PolicyDocument=managed_document)["Policy"]["Arn"]
            r.refs[logical] = arn
            for role in props.get("Roles", []):
                client.attach_role_policy(RoleName=r(role), PolicyArn=arn)
        elif kind == "AWS::IAM::Policy":
            document = json.dumps(iam.for_moto(props["PolicyDocument"]))
            for role in props.get("Roles", []):
                client.put_role_policy(RoleName=r(role), PolicyName=props["PolicyName"], PolicyDocument=document)
