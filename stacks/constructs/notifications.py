"""The SNS topic every outcome goes to, KMS-encrypted, with each instance's e-mail subscribers filtered to
their own instance's messages."""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from functions.models.config import ProjectConfig


class Notifications(Construct):
    def __init__(self, scope: Construct, id: str, *, config: ProjectConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Topic", display_name="Bitbucket DIY backup", master_key=key, enforce_ssl=True)
        for email in config.notification_emails:
            self.topic.add_subscription(subs.EmailSubscription(email))
        # One subscription per address, filtered to every instance that lists it (an on-call address is often
        # shared by many instances; SNS allows one subscription per address and topic).
        instances_of: dict[str, list[str]] = {}
        for instance in config.instances:
            for email in instance.notification_emails:
                if email not in config.notification_emails:  # those are already subscribed to everything
                    instances_of.setdefault(email, []).append(instance.name)
        for email, names in instances_of.items():
            self.topic.add_subscription(
                subs.EmailSubscription(
                    email, filter_policy={"instance": sns.SubscriptionFilter.string_filter(allowlist=names)}
                )
            )
