"""The one AWS account and region the rehearsal's moto world lives in, and the fake credentials it signs with."""

from __future__ import annotations

import os

ACCOUNT = "123456789012"
REGION = "eu-west-1"
# The harness's administrator (rehearsal/iam.py makes it in each world's moto): an IAM user's long-term keys.
ADMIN_KEY_ID = "AKIAREHEARSALHARNESS"
ADMIN_SECRET = "rehearsal-harness-secret-not-a-real-key0"


def set_fake_credentials() -> None:
    """moto needs credentials to sign with; never real ones."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": ADMIN_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        os.environ[key] = value
    # A user's long-term keys carry no session token (moto refuses one with them, as AWS does).
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(key, None)
    # moto's thousands of public AMIs cost seconds per world and nothing here uses them.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
