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
        for instance in config.instances:
            for email in instance.notification_emails:
                if email in config.notification_emails:
                    continue  # already subscribed to everything
                self.topic.add_subscription(
                    subs.EmailSubscription(
                        email,
                        filter_policy={"instance": sns.SubscriptionFilter.string_filter(allowlist=[instance.name])},
                    )
                )
