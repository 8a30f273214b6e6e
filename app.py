#!/usr/bin/env python3
"""CDK entry point: reads the `bitbucket-backup` context from cdk.json, validates it, synthesizes the stack.
A configuration error prints one message per wrong field and exits 1, without a traceback."""

from __future__ import annotations

import json
import os
import sys

from aws_cdk import App, Environment

from functions.models.config import ConfigError
from stacks.app_builder import CONTEXT_KEY, build_app


def main() -> int:
    probe = App()  # only to read the context the CLI passes in
    raw = probe.node.try_get_context(CONTEXT_KEY)
    if isinstance(raw, str):  # `cdk synth -c bitbucket-backup='{…}'` passes JSON as a string
        try:
            raw = json.loads(raw)
        except ValueError as error:
            print(f"cdk.json context '{CONTEXT_KEY}' is not valid JSON: {error}", file=sys.stderr)
            return 1
    env = Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    try:
        app, _ = build_app(raw, env=env)
    except ConfigError as error:
        print(f"cdk.json context '{CONTEXT_KEY}' is invalid:\n{error}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
