"""The functions' AWS clients: a process keeps one per service and region; a caller can pass its own in."""

from __future__ import annotations

from typing import Any

from functions.clients import aws


def test_clients_passed_in_are_used_within_the_block_and_leave_the_process_cache_alone() -> None:
    before = dict(aws._clients)
    given: list[tuple[str, str | None]] = []
    made = aws.new_client("sqs", "eu-west-1")

    def factory(service: str, region: str | None = None) -> Any:
        given.append((service, region))
        return made

    with aws.clients_from(factory):
        assert aws.client("sqs", "eu-west-1") is made
        assert aws.client("sns") is made
    assert given == [("sqs", "eu-west-1"), ("sns", None)]
    assert aws._clients == before  # nothing was cached for the process

    cached = aws.client("sqs", "eu-west-1")  # outside the block: the process's own, made once
    assert cached is not made and aws.client("sqs", "eu-west-1") is cached
    assert cached.meta.region_name == "eu-west-1" and made.meta.config.retries == cached.meta.config.retries
    aws._clients.pop(("sqs", "eu-west-1"))
