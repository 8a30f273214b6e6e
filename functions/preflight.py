"""The checks of the validate step, made while Bitbucket is live and before anything is locked: what each storage
strategy needs, whether Bitbucket answers (and, for zero-downtime backup, its version), and the repositories that
home.exclude_repos names, resolved to ids."""

from __future__ import annotations

import re

from functions.errors import BackupError, PreflightFailed
from functions.models.config import InstanceConfig
from functions.models.part_config import RsyncHomeConfig
from functions.observability import logger, redact
from functions.steps import bitbucket

ZERO_DOWNTIME_MIN_VERSION = (4, 8)


def resolve_excluded_repos(config: InstanceConfig) -> InstanceConfig:
    """home.exclude_repos may name repositories as PROJECT/slug; the host script takes ids. Resolved while Bitbucket
    is live, once per run: the run carries the resolved ids (a renamed repository keeps its id)."""
    home = config.home
    if not isinstance(home, RsyncHomeConfig) or all(isinstance(r, int) for r in home.exclude_repos):
        return config
    client = bitbucket(config)
    ids: list[int | str] = []
    for repo in home.exclude_repos:
        if isinstance(repo, str):
            project, slug = repo.split("/", 1)
            try:
                repo = client.repository_id(project, slug, step="validate")
            except BackupError as error:
                reason = redact(str(error)).removeprefix("validate: ")
                raise PreflightFailed(f"validate: home.exclude_repos: {reason}") from None
        ids.append(repo)
    return config.model_copy(update={"home": home.model_copy(update={"exclude_repos": ids})})


def check(config: InstanceConfig) -> dict[str, object]:
    """Raises PreflightFailed if this run must not lock; returns the facts it learned (logged, and the version kept
    for the archives' manifests)."""
    from functions.strategies import strategies_for

    facts: dict[str, object] = {}
    for strategy in strategies_for(config):
        facts.update(strategy.preflight())
    if config.zero_downtime:
        # No maintenance call at all: the version answer also proves Bitbucket reachable and the credentials good.
        try:
            version = bitbucket(config).version(step="validate")
        except BackupError as error:
            raise PreflightFailed(
                "validate: zero_downtime needs Bitbucket's version (application-properties), which could not be "
                f"read: {redact(str(error)).removeprefix('validate: ')}"
            ) from None
        facts["bitbucket_version"] = check_zero_downtime_version(version)
        return facts
    try:
        state = bitbucket(config).maintenance(step="validate")
    except BackupError as error:
        raise PreflightFailed(redact(str(error))) from None
    if state.task_state == "RUNNING":
        raise PreflightFailed("validate: Bitbucket already has a backup task running; not locking")
    if config.uses_archive:
        # For the archives' manifests only: a backup is not refused for it.
        try:
            facts["bitbucket_version"] = bitbucket(config).version(step="validate")
        except BackupError as error:
            logger.warning(f"Bitbucket's version is not in the manifest: {redact(str(error))}")
    return facts


def check_zero_downtime_version(version: str) -> str:
    """Zero-downtime backup needs Bitbucket Data Center 4.8 or later (Atlassian's DIY backup checks the same).

    Whether the instance is Data Center cannot be read from the documented API (application-properties names both
    editions "Bitbucket"; 9.0 and later exist only as Data Center), so it is not checked: setting zero_downtime
    says so."""
    found = re.match(r"^\s*(\d+)\.(\d+)", version)
    if found is None:
        raise PreflightFailed(
            f"validate: cannot read Bitbucket's version from '{version[:40]}'; zero_downtime needs Bitbucket "
            f"Data Center {ZERO_DOWNTIME_MIN_VERSION[0]}.{ZERO_DOWNTIME_MIN_VERSION[1]} or later"
        )
    if (int(found[1]), int(found[2])) < ZERO_DOWNTIME_MIN_VERSION:
        raise PreflightFailed(
            f"validate: Bitbucket {version[:40]} does not support zero-downtime backup; zero_downtime needs Bitbucket "
            f"Data Center {ZERO_DOWNTIME_MIN_VERSION[0]}.{ZERO_DOWNTIME_MIN_VERSION[1]} or later "
            "(set zero_downtime to false to back it up with the lock)"
        )
    return version
