"""Each instance's validated configuration as an SSM parameter, read by the Lambdas at run time.
A parameter per instance keeps the Lambda environment small however many instances a deployment has."""

from __future__ import annotations

from aws_cdk import aws_ssm as ssm
from constructs import Construct

from functions.models.config import InstanceConfig


class InstanceConfigParameters(Construct):
    def __init__(self, scope: Construct, id: str, *, prefix: str, instances: list[InstanceConfig]) -> None:
        super().__init__(scope, id)
        self.prefix = prefix
        self.parameters = {
            instance.name: ssm.StringParameter(
                self,
                f"Instance-{instance.name}",
                parameter_name=f"{prefix}/{instance.name}",
                string_value=instance.model_dump_json(),
                description=f"Bitbucket DIY backup configuration of '{instance.name}' (no secrets)",
            )
            for instance in instances
        }
