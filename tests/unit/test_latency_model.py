"""The latency model (rehearsal/latency.py): off unless a world puts it in force; in force, each AWS call over the
rehearsal's HTTP endpoint waits for its service's round trip, and each is counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from rehearsal import latency
from rehearsal.aws_endpoint import moto_endpoint
from rehearsal.fake_account import REGION, set_fake_credentials


def _client(service: str) -> Any:
    set_fake_credentials()
    return boto3.client(service, region_name=REGION, endpoint_url=moto_endpoint())


def _seconds(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_the_service_is_read_from_the_signature() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/eu-west-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    assert latency.service_of(header) == "dynamodb"
    assert latency.service_of("") == ""


def test_published_figures_are_the_defaults() -> None:
    model = latency.LatencyModel()
    assert model.of("dynamodb") == 0.009 and model.of("s3") == 0.030
    assert model.of("no-such-service") == latency.UNKNOWN_SERVICE_S


def test_calls_wait_only_while_a_model_is_in_force() -> None:
    sns = _client("sns")
    sns.list_topics()  # the connection and the server's first request: outside the measurement
    slow = latency.LatencyModel(per_service_s={"sns": 0.4})
    assert latency.active() is None
    assert _seconds(sns.list_topics) < 0.3
    with latency.applied(slow):
        assert latency.active() is slow
        assert _seconds(sns.list_topics) >= 0.4
    assert latency.active() is None and slow.calls == {"sns": 1}
    assert _seconds(sns.list_topics) < 0.3


def test_the_recorder_logs_every_call_without_waiting() -> None:
    sns = _client("sns")
    recorder = latency.LatencyModel.recorder()
    with latency.applied(recorder):
        before = time.monotonic()
        sns.list_topics()
    assert recorder.log is not None and [s for _, s in recorder.log] == ["sns"]
    assert recorder.log[0][0] >= before


@pytest.mark.parametrize("service", ["sts", "kms", "ec2", "rds", "ssm", "secretsmanager", "states", "lambda"])
def test_every_service_the_stack_calls_has_a_figure(service: str) -> None:
    assert service in latency.LATENCY_DEFAULTS_S
