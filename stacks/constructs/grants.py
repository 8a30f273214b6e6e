"""Each function's IAM grants, typed: every construct that makes functions declares a dataclass with one field per
function (next to the construct), and apply() gives each function exactly its field's statements. A function
without a field, or a field without a function, fails the synth instead of being skipped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns


@dataclass(frozen=True)
class FunctionGrants:
    """One function's statements; `publishes`: it may also send to the notification topic (and use its key)."""

    statements: tuple[iam.PolicyStatement, ...] = ()
    publishes: bool = False


def apply(grants: object, functions: Mapping[str, lambda_.Function], topic: sns.ITopic, key: kms.IKey) -> None:
    assert is_dataclass(grants) and not isinstance(grants, type), "grants are a dataclass instance"
    declared = {f.name: getattr(grants, f.name) for f in fields(grants)}
    declared = {name: value for name, value in declared.items() if value is not None}
    if set(declared) != set(functions):
        raise ValueError(
            f"{type(grants).__name__} does not match the construct's functions: without grants "
            f"{sorted(set(functions) - set(declared))}, without a function {sorted(set(declared) - set(functions))}"
        )
    for name, granted in declared.items():
        assert isinstance(granted, FunctionGrants)
        function = functions[name]
        for statement in granted.statements:
            function.add_to_role_policy(statement)
        if granted.publishes:
            topic.grant_publish(function)
            key.grant_encrypt_decrypt(function)
