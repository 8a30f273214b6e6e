"""CloudFormation intrinsic functions (Ref, Fn::GetAtt, Fn::Join) of the synthesized template, resolved to plain
values: by the rehearsal against the resources it created in moto, by the infrastructure tests (tests/infra) to
placeholder ARNs, as no resource exists there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rehearsal.fake_account import ACCOUNT, REGION

PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "BitbucketDiyBackup",
}


class Resolver:
    """Resolves a template value against `refs` and `attrs` (what was created) and the pseudo parameters.

    With `placeholder`, a Ref or GetAtt it does not know, and any other intrinsic function, becomes what the
    placeholder names it; without one, an unknown Ref or GetAtt is a KeyError (the rehearsal created everything)."""

    def __init__(
        self, pseudo: dict[str, str] | None = None, placeholder: Callable[[dict[str, Any]], str] | None = None
    ) -> None:
        self.refs: dict[str, str] = {}
        self.attrs: dict[tuple[str, str], str] = {}
        self.pseudo = dict(PSEUDO if pseudo is None else pseudo)
        self.placeholder = placeholder

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(self(p)) for p in parts)
            if self.placeholder is not None and (key == "Ref" or key.startswith("Fn::")) and not self._knows(key, arg):
                return self.placeholder(value)
            if key == "Ref":
                return self.pseudo.get(arg) or self.refs[arg]
            if key == "Fn::GetAtt":
                return self.attrs[_logical_and_attribute(arg)]
        return {k: self(v) for k, v in value.items()}

    def _knows(self, key: str, arg: Any) -> bool:
        if key == "Ref":
            return bool(self.pseudo.get(arg)) or arg in self.refs
        return key == "Fn::GetAtt" and _logical_and_attribute(arg) in self.attrs


def _logical_and_attribute(arg: Any) -> tuple[str, str]:
    logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
    return str(logical), str(attr)
