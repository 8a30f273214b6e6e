"""SSM Command documents in the rehearsal, as SSM treats them: the stack's documents are created in moto from the
synthesized template, and a SendCommand is resolved here against the named document: unknown documents and
parameters, missing required ones and values that do not match their allowedPattern are refused (SSM's
InvalidDocument / InvalidParameters) before anything runs; then `{{ name }}` is substituted into the
aws:runShellScript commands, which the local host runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from moto.core.exceptions import JsonRESTError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.:-]+)\s*\}\}")


class InvalidDocument(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__("InvalidDocument", message)


class InvalidParameters(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__("InvalidParameters", message)


def create(ssm: Any, props: dict[str, Any], resolve: Any) -> str:
    """Creates one AWS::SSM::Document of the template in moto; returns its name."""
    name = str(props["Name"])
    ssm.create_document(
        Name=name,
        Content=json.dumps(resolve(props["Content"])),
        DocumentType=props.get("DocumentType", "Command"),
        DocumentFormat="JSON",
        **({"TargetType": props["TargetType"]} if props.get("TargetType") else {}),
    )
    return name


@dataclass(frozen=True)
class Rendered:
    script: str
    timeout: int


def render(backend: Any, document_name: str | None, parameters: dict[str, list[str]] | None) -> Rendered:
    """The shell script SSM would run for this SendCommand, or SSM's refusal."""
    documents = getattr(backend, "_documents", {}).get(document_name or "")
    if documents is None:
        raise InvalidDocument(f"The document {document_name} does not exist in this account and region.")
    return render_content(documents.get_default_version().content_json, str(document_name), parameters)


def render_content(content: dict[str, Any], document_name: str, parameters: dict[str, list[str]] | None) -> Rendered:
    """A document's (parsed) content and SendCommand's parameters: the script, or SSM's refusal."""
    declared: dict[str, dict[str, Any]] = content.get("parameters") or {}
    given = dict(parameters or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidParameters(f"Document {document_name} does not support parameters: {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
                raise InvalidParameters(f"Parameter {name} of type String takes exactly one value")
            text = value[0]
        elif "default" in spec:
            text = str(spec["default"])
        else:
            raise InvalidParameters(f"Document {document_name} requires parameter {name}")
        pattern = spec.get("allowedPattern")
        # The whole value must match (a trailing newline does not slip past `$`).
        if pattern is not None and re.fullmatch(pattern, text) is None:
            raise InvalidParameters(
                f"Parameter {name} value {text!r} failed to satisfy constraint: allowedPattern {pattern}"
            )
        values[name] = text

    def substitute(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise InvalidParameters(f"Document {document_name} refers to an undeclared parameter {match.group(1)}")
            return values[match.group(1)]

        return _PLACEHOLDER.sub(one, text)

    steps = [s for s in content.get("mainSteps", []) if s.get("action") == "aws:runShellScript"]
    if len(steps) != 1:
        raise InvalidDocument(f"The rehearsal runs documents of one aws:runShellScript step; {document_name} is not")
    inputs = steps[0]["inputs"]
    commands = inputs["runCommand"]
    script = "\n".join(substitute(line) for line in (commands if isinstance(commands, list) else [commands]))
    timeout = int(substitute(str(inputs.get("timeoutSeconds", "3600"))))
    return Rendered(script, timeout)
