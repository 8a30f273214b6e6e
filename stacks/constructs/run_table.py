"""The run table: concurrency guard and the only store of unlock/cancel tokens (see functions/runs.py)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct


class RunTable(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        # Its own key: the tokens it holds unlock Bitbucket, so no grant made for the topic or the archives (other
        # roles, other accounts, AWS services) reaches them.
        self.key = kms.Key(
            self, "Key", enable_key_rotation=True, description="Bitbucket DIY backup: run table (unlock tokens)"
        )
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="instance", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            # Set only while an item holds no unlock token (functions/runs.py): a token is never expired away.
            time_to_live_attribute="expires_at",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Holds live runs, and the token of a lock a run could not release until someone unlocks by hand (the
            # notification says so): unlock before deleting the stack. Otherwise nothing in it outlives a backup.
            removal_policy=RemovalPolicy.DESTROY,
        )
