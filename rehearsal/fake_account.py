"""The one AWS account and region the rehearsal's moto world lives in, and the fake credentials it signs with."""

from __future__ import annotations

import os

ACCOUNT = "123456789012"
REGION = "eu-west-1"


def set_fake_credentials() -> None:
    """moto needs credentials to sign with; never real ones."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        os.environ[key] = value
    os.environ.pop("AWS_PROFILE", None)
    # moto's thousands of public AMIs cost seconds per world and nothing here uses them.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
