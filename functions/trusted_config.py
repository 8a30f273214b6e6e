"""An instance's configuration, only ever from the copy the stack deployed (its SSM parameter), never from an event.

The validate step reads the parameter's newest version; every later step of the same execution reads exactly that
version (the event names it, as a number), so a redeploy in the middle of a run cannot change where the run
connects. A warm process keeps what it read for a few minutes: a version's value never changes, but a parameter
that is deleted and made again (an instance removed from cdk.json and added back) starts at version 1 again.
"""

from __future__ import annotations

import json
import time

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import ConfigInvalid, UnknownInstance
from functions.models import environment
from functions.models.config import INSTANCE_NAME, ConfigError, InstanceConfig, parse_instance_config

CACHE_SECONDS = 300
_cache: dict[tuple[str, int], tuple[float, InstanceConfig]] = {}


def parameter_name(instance: str) -> str:
    return environment.config_prefix() + "/" + instance


def load(instance: str, version: int | None = None, *, step: str = "validate") -> tuple[InstanceConfig, int]:
    """(config, version): the newest version without `version`, else exactly that one (cached per process)."""
    if not INSTANCE_NAME.match(instance):  # never a path of our choosing: the name selects one parameter
        raise UnknownInstance(f"{step}: '{instance[:40]}' is not an instance name")
    name = parameter_name(instance)
    if version is not None:
        cached = _cache.get((name, version))
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1], version
    try:
        found = client("ssm").get_parameter(Name=name if version is None else f"{name}:{version}")["Parameter"]
    except ClientError as error:
        if error_code(error) in ("ParameterNotFound", "ParameterVersionNotFound"):
            which = "" if version is None else f" (version {version})"
            raise UnknownInstance(f"{step}: no instance '{instance}'{which} is configured in this deployment") from None
        raise
    try:
        config = parse_instance_config(json.loads(found["Value"]))
    except (ValueError, ConfigError) as error:
        raise ConfigInvalid(f"{step}: the stored configuration of '{instance}' is invalid: {error}") from None
    if config.name != instance:
        raise ConfigInvalid(f"{step}: the stored configuration of '{instance}' names another instance")
    number = int(found["Version"])
    _cache[(name, number)] = (time.monotonic(), config)
    return config, number


def clear_cache() -> None:
    _cache.clear()
