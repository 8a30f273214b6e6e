"""The stack's own SSM Command documents: one per host operation (functions.models.host_operations), each with
its parameters restricted by allowedPattern. The functions may send only these, never AWS-RunShellScript."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from functions.models.host_operations import OPERATIONS, content


def document_prefix(stack: Stack) -> str:
    """Names are fixed (the functions find a document by the prefix in their environment): `<stack>-host-<Op>`."""
    return f"{stack.stack_name}-host-"


class HostDocuments(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.prefix = document_prefix(stack)
        self.documents: dict[str, ssm.CfnDocument] = {}
        for name, operation in OPERATIONS.items():
            self.documents[name] = ssm.CfnDocument(
                self,
                name,
                name=f"{self.prefix}{name}",
                document_type="Command",
                document_format="JSON",
                target_type="/AWS::EC2::Instance",
                # A changed document becomes a new default version under the same name (the functions' names hold).
                update_method="NewVersion",
                content=content(operation),
            )

    def arns(self, *names: str) -> list[str]:
        """The ARNs of these operations' documents (what ssm:SendCommand may name)."""
        stack = Stack.of(self)
        return [stack.format_arn(service="ssm", resource="document", resource_name=f"{self.prefix}{n}") for n in names]
