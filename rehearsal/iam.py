"""IAM in the rehearsal: the template's roles and policies created in moto, moto's authorization switched on, each
Lambda function calling AWS with its own role's credentials, and the harness (the rehearsal itself, the hosts' AWS
CLI, moto's Step Functions interpreter) signing as administrators.

What moto can evaluate (moto/iam/access_control.py, moto 5.2.5), and so what a rehearsal proves - the one place
that says so:
- Actions. A call whose action no statement of its role allows fails with AccessDenied, as in AWS. That is what the
  rehearsal enforces: a step whose role lacks an action fails here, not after `cdk deploy`.
- Not resources. moto passes the resource "*" for every service but S3, IAM and STS, so a statement scoped to an ARN
  would never match: each statement goes to moto with `Resource: "*"`.
- Not conditions. moto has none of the request's context keys (`aws:ResourceTag/...`, `ec2:CreateAction`,
  `kms:ViaService`) and applies a statement with such a condition as if it had none (checked for the operators the
  stack uses: tests/unit/test_rehearsal_iam.py). The reduction makes that explicit: conditions are dropped from
  Allow statements, and conditional Deny statements left out (the stack has none).
- Not resource policies (KMS key policies, bucket and topic policies), nor the state machines' roles (the
  interpreter signs as the harness), nor the destination accounts' roles of DR copies (the user's, not the stack's:
  calls in another account are not checked).
Resources and conditions are asserted against the synthesized template instead: tests/infra/test_catalog_iam.py,
tests/infra/test_template.py and tests/infra/test_invokers.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rehearsal.fake_account import ACCOUNT, ADMIN_KEY_ID, ADMIN_SECRET, REGION

ADMIN_USER = "rehearsal-harness"
# moto's Step Functions interpreter signs its Lambda invocations and SDK tasks with these fixed keys.
INTERPRETER_USER, INTERPRETER_KEY_ID, INTERPRETER_SECRET = "rehearsal-step-functions", "ak", "sk"
# The operator command line signs with these against a local endpoint when it has no credentials
# (bitbucket_backup_cli/aws.py).
OPERATOR_USER, OPERATOR_KEY_ID, OPERATOR_SECRET = "rehearsal-operator", "testing", "testing"
LAMBDA_SERVICE = "lambda.amazonaws.com"


class _ServiceCall(threading.local):
    active = False  # set while an AWS service (Lambda) assumes a role on a function's behalf


SERVICE_CALL = _ServiceCall()
EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class Denied:
    caller: str  # the role (or user) that asked
    action: str  # e.g. ec2:CreateSnapshots

    def __str__(self) -> str:
        return f"{self.caller} may not {self.action}"


@dataclass(frozen=True)
class RoleCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str


class Enforcement:
    """moto's authorization on for the stack's account while `enforced()` runs; every refusal is recorded."""

    def __init__(self) -> None:
        self.denied: list[Denied] = []
        self.active = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        from unittest import mock

        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.iam.access_control import IAMRequestBase

        authorize = ActionAuthenticatorMixin._authenticate_and_authorize_action
        check = IAMRequestBase.check_action_permitted
        enforcement = self

        def authenticate_and_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
            # Only the stack's own account: another account's roles are the user's (see the module docstring).
            if getattr(self, "current_account", ACCOUNT) == ACCOUNT:
                authorize(self, iam_request_cls, resource)

        def check_action_permitted(self: Any, resource: str) -> None:
            try:
                check(self, resource)
            except Exception:
                with enforcement._lock:
                    enforcement.denied.append(Denied(caller=self._access_key.arn, action=self._action))
                raise

        before = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
        try:
            with (
                mock.patch.object(
                    ActionAuthenticatorMixin, "_authenticate_and_authorize_action", authenticate_and_authorize
                ),
                mock.patch.object(IAMRequestBase, "check_action_permitted", check_action_permitted),
            ):
                self.active = True
                yield
        finally:
            self.active = False
            settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = before


def create_harness_identities() -> None:
    """The administrators the harness signs as: the rehearsal and the hosts (the keys of fake_account), moto's
    interpreter (its fixed keys) and the operator command line against `rehearsal serve`. Made in the backend
    directly, before authorization is on."""
    from moto.iam.models import iam_backends

    iam = iam_backends[ACCOUNT]["aws"]
    for user, key_id, secret in (
        (ADMIN_USER, ADMIN_KEY_ID, ADMIN_SECRET),
        (INTERPRETER_USER, INTERPRETER_KEY_ID, INTERPRETER_SECRET),
        (OPERATOR_USER, OPERATOR_KEY_ID, OPERATOR_SECRET),
    ):
        iam.create_user(REGION, user, path="/", tags=[])
        iam.put_user_policy(user, "everything", json.dumps(EVERYTHING))
        _set_keys(iam, iam.create_access_key(user), key_id, secret)


def for_moto(document: dict[str, Any]) -> dict[str, Any]:
    """A policy document as moto can evaluate it: its actions only (see the module docstring)."""
    statements = document.get("Statement", [])
    kept = []
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Condition") and statement.get("Effect") == "Deny":
            continue
        projected = {k: v for k, v in statement.items() if k not in ("Condition", "Resource", "NotResource", "Sid")}
        kept.append({**projected, "Resource": "*"})
    return {**document, "Statement": kept}


def assume_role_principals(policy: Any, kind: str) -> list[Any]:
    """The principals of one kind ("AWS" or "Service") that a role's trust policy allows to assume it (a bare
    principal such as "*" counts as an "AWS" one)."""
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = document.get("Statement", [])
    found: list[Any] = []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if statement.get("Effect") != "Allow" or not {"sts:AssumeRole", "sts:*", "*"} & set(actions):
            continue
        principal = statement.get("Principal", {})
        bare = [principal] if kind == "AWS" else []
        named = principal.get(kind, []) if isinstance(principal, dict) else bare
        found.extend(named if isinstance(named, list) else [named])
    return found


def trusts_service(policy: Any, service: str) -> bool:
    """Whether a role's trust policy lets this service principal assume it."""
    return service in assume_role_principals(policy, "Service")


def _set_keys(iam: Any, key: Any, key_id: str, secret: str) -> None:
    """Give an access key moto made fixed keys, re-indexed under its new id (moto finds a request's account by it)."""
    iam.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id, key.secret_access_key = key_id, secret
    iam.access_keys[key.physical_resource_id] = key


def lambda_credentials(role_arn: str) -> RoleCredentials:
    """What the Lambda service hands a function: its role's temporary credentials, which only a role that trusts
    Lambda gets. Fixed per role, so that a process's clients outlive one rehearsal's moto."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    iam = iam_backends[ACCOUNT]["aws"]
    role = iam.get_role_by_arn(role_arn)
    if not trusts_service(role.assume_role_policy_document, LAMBDA_SERVICE):
        raise PermissionError(f"role {role.name} does not trust {LAMBDA_SERVICE}: Lambda cannot run with it")
    SERVICE_CALL.active = True
    try:
        assumed = sts_backends[ACCOUNT]["aws"].assume_role(
            region_name=REGION,
            role_session_name=role.name[:64],
            role_arn=role_arn,
            policy="",
            duration=43200,
            external_id="",
        )
    finally:
        SERVICE_CALL.active = False
    digest = hashlib.sha256(role_arn.encode()).hexdigest()
    key_id, secret = f"ASIA{digest[:16].upper()}", digest[16:56]
    _set_keys(iam, assumed.access_key, key_id, secret)
    assumed.access_key_id, assumed.secret_access_key = key_id, secret
    assumed.session_token = f"rehearsal-{digest[:32]}"
    return RoleCredentials(assumed.access_key_id, assumed.secret_access_key, assumed.session_token)


def secret_of(access_key_id: str) -> str | None:
    """The secret key of an access key moto knows (a user's, or a role's as the rehearsal's Lambdas use it): what a
    request signed outside moto (the search domain's, SigV4) is verified with."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    for assumed in sts_backends[ACCOUNT]["aws"].assumed_roles:
        if assumed.access_key_id == access_key_id:
            return str(assumed.secret_access_key)
    key = iam_backends[ACCOUNT]["aws"].access_keys.get(access_key_id)
    return str(key.secret_access_key) if key is not None else None


def allows(enforcement: Enforcement, access_key_id: str, action: str) -> bool:
    """Whether the identity of this access key may do `action` (its actions only, as moto evaluates them: see the
    module docstring); a refusal is recorded as moto's are. For requests moto does not serve (the search domain's)."""
    from moto.iam.access_control import AssumedRoleAccessKey, IAMPolicy, IAMUserAccessKey, PermissionResult
    from moto.sts.models import sts_backends

    token = next(
        (a.session_token for a in sts_backends[ACCOUNT]["aws"].assumed_roles if a.access_key_id == access_key_id),
        None,
    )
    key: Any
    if token is not None:
        key = AssumedRoleAccessKey(ACCOUNT, "aws", access_key_id, {"X-Amz-Security-Token": token})
    else:
        key = IAMUserAccessKey(ACCOUNT, "aws", access_key_id, {})
    results = [IAMPolicy(policy).is_action_permitted(action) for policy in key.collect_policies()]
    permitted = PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results
    if not permitted:
        with enforcement._lock:
            enforcement.denied.append(Denied(caller=key.arn, action=action))
    return permitted
