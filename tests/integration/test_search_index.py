"""The search index (issue 14, item 2): a snapshot in the cluster's repository, started under the lock, waited for
after the unlock, cataloged, pruned and restored into new indices; against the snapshot-API simulator (no OpenSearch
server can be installed here), an Amazon OpenSearch domain (SigV4, the functions' roles) or a self-managed cluster
(basic authentication from Secrets Manager)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from functions.models.steps import BACKUP
from functions.strategies import COMPLETE
from rehearsal.bitbucket_simulator import RedirectTarget
from rehearsal.runtime import SEARCH_PASSWORD
from tests.integration.conftest import World, assert_failed_cleanly, backup_id_of

BITBUCKET_INDICES = ["bitbucket-index-version", "bitbucket-search-v1"]


def _call(w: World, handler: str) -> tuple[float, float]:
    (call,) = [c for c in w.r.runtime.invocations if c.handler == handler and not c.event.get("warm")]
    return call.started, call.ended


def _snapshots(w: World) -> list[dict[str, object]]:
    assert w.r.search is not None
    return w.r.search.snapshots("bitbucket-backup")


def _entries(w: World) -> list[str]:
    """The search snapshots' catalog entries in the archive bucket."""
    listed = w.r.client("s3").list_objects_v2(Bucket=w.r.archive_bucket, Prefix="demo/").get("Contents", [])
    return sorted(str(o["Key"]) for o in listed if str(o["Key"]).endswith("-search.json"))


def test_an_amazon_domains_snapshot_is_started_under_the_lock_and_waited_for_after_it(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(search="amazon-opensearch")
    assert w.r.search is not None
    w.r.search.snapshot_seconds = 4.0  # longer than the lock window: it must not extend it
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    (snapshot,) = _snapshots(w)
    assert str(snapshot["snapshot"]).startswith(f"{backup_id}-") and snapshot["state"] == "SUCCESS"
    assert sorted(snapshot["indices"]) == BITBUCKET_INDICES, "Bitbucket's indices only, not another application's"
    metadata = snapshot["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["instance"] == "demo" and metadata["backup-id"] == backup_id and metadata["part"] == "search"
    # Started between the lock and the unlock; completed after the unlock, which did not wait for it.
    locked, unlocked = _call(w, BACKUP.lock.handler)[1], _call(w, BACKUP.unlock.handler)[1]
    started, ended = _call(w, BACKUP.copy_search.handler)
    assert locked < started and ended < unlocked
    assert int(str(snapshot["end_time_in_millis"])) / 1000 > unlocked, "waited for after the unlock"
    # The domain's repository: registered by the backup in the archive bucket, with the stack's role.
    settings = w.r.search.repositories["bitbucket-backup"]["settings"]
    assert settings["bucket"] == w.r.archive_bucket and settings["base_path"] == "search-repository/demo"
    roles = [r["Arn"] for r in w.r.client("iam").list_roles()["Roles"] if "SearchSnapshotRole" in r["RoleName"]]
    assert [settings["role_arn"]] == roles
    # Cataloged: one complete artifact of the backup, its entry in the archive bucket.
    found = {s["part"]: s for s in w.r.snapshots(backup_id)}
    assert found["search"]["status"] == COMPLETE and found["search"]["kind"] == "search-snapshot"
    assert _entries(w) == [f"demo/{backup_id}/{backup_id}-search.json"]
    assert w.r.cold_starts_while_locked() == []
    assert not w.r.iam.denied
    assert w.r.search.auth_failures == 0, "every request signed as the functions' roles sign"


def test_a_self_managed_cluster_is_reached_with_the_secrets_user_and_never_shows_it(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(search="opensearch")
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    (snapshot,) = _snapshots(w)
    assert snapshot["state"] == "SUCCESS"
    assert w.r.search is not None and w.r.search.auth_failures == 0
    assert SEARCH_PASSWORD not in w.all_text(result)
    assert not w.r.iam.denied


def test_a_failed_search_snapshot_fails_the_run_cleanly(world_factory: Callable[..., World]) -> None:
    w = world_factory(search="opensearch")
    assert w.r.search is not None
    w.r.search.fail_next_snapshot(state="PARTIAL", reason="shard [bitbucket-search-v1][0] failed")
    result = w.r.run_backup()
    assert_failed_cleanly(w, result, BACKUP.wait_snapshots.label, after_unlock=True)
    assert "ended in state 'error'" in str(result.cause)
    assert _snapshots(w) == [], "the failed snapshot was deleted"
    assert _entries(w) == [], "and its catalog entry"
    assert w.r.snapshots() == [], "nothing of the run is left"


def test_the_cluster_refusing_the_snapshot_fails_the_run_under_the_lock_and_unlocks(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(search="opensearch")
    assert w.r.search is not None
    body = '{"error":{"root_cause":[],"type":"snapshot_creation_exception","reason":"no space"},"status":400}'
    w.r.search.inject("snapshot-create", status=400, body=body)
    result = w.r.run_backup()
    assert_failed_cleanly(w, result, BACKUP.copy.label)  # the copy's Parallel, of which it is a branch
    assert "copy-search: the search cluster refused: no space (HTTP 400)" in str(result.cause)
    assert _entries(w) == [] and w.r.snapshots() == []


def test_a_redirect_from_the_cluster_is_never_followed(world_factory: Callable[..., World]) -> None:
    w = world_factory(search="opensearch")
    assert w.r.search is not None
    with RedirectTarget() as elsewhere:
        w.r.search.inject("repository-get", redirect_to=elsewhere.url, times=None)
        result = w.r.run_backup()
        assert result.status == "FAILED"
        assert "redirect" in str(result.cause) and "never followed" in str(result.cause)
        assert elsewhere.arrived == [], "nothing, and no credentials, went to the other origin"
    assert "locked" not in w.sim.event_names(), "refused at validate, while Bitbucket was live"


def test_old_search_snapshots_are_pruned_with_their_backups(world_factory: Callable[..., World]) -> None:
    w = world_factory(search="amazon-opensearch")
    ids = []
    for n in range(3):  # keep_backups is 2: the third run prunes the first
        if n:
            time.sleep(1.05)
        result = w.r.run_backup()
        assert result.status == "SUCCEEDED", result.cause
        ids.append(backup_id_of(result))
    names = sorted(str(s["snapshot"]) for s in _snapshots(w))
    assert [n.rsplit("-", 1)[0] for n in names] == ids[1:], names
    assert _entries(w) == [f"demo/{b}/{b}-search.json" for b in ids[1:]]
    assert not w.r.iam.denied


@pytest.mark.parametrize("strategy", ["amazon-opensearch", "opensearch"])
def test_the_index_is_restored_into_new_indices_beside_the_live_ones(
    world_factory: Callable[..., World], strategy: str
) -> None:
    w = world_factory(search=strategy)
    sim = w.r.search
    assert sim is not None
    backup_id = backup_id_of(w.r.run_backup())
    result = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": {"search": {}}})
    assert result.status == "SUCCEEDED", result.cause
    prefix = f"restored-{backup_id}-"
    indices = sim.indices()
    for name in BITBUCKET_INDICES:
        assert indices[prefix + name]["documents"] == indices[name]["documents"]
    assert result.output["search"]["indices"] == [prefix + n for n in BITBUCKET_INDICES]
    # Without aliases: the live alias still names the live index only.
    assert sim.aliases()["bitbucket-search"] == ["bitbucket-search-v1"]
    assert "other-application" in indices and f"{prefix}other-application" not in indices
    assert not w.r.iam.denied
    # The same names again: refused before anything is restored.
    again = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": {"search": {}}})
    assert again.status == "FAILED" and "already exists in the search cluster" in str(again.cause)
    # A prefix under which the copy would look live to Bitbucket: refused.
    live = w.r.run_restore(
        {"instance": "demo", "backup_id": backup_id, "target": {"search": {"index_prefix": "bitbucket-old-"}}}
    )
    assert live.status == "FAILED" and "would match the live indices' pattern" in str(live.cause)


def test_a_failed_index_restore_removes_the_indices_it_restored_and_nothing_else(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(search="opensearch")
    sim = w.r.search
    assert sim is not None
    backup_id = backup_id_of(w.r.run_backup())
    sim.inject("recovery", status=403, body='{"error":{"type":"security_exception","reason":"no"},"status":403}')
    result = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": {"search": {"index_prefix": "x-"}}})
    assert result.status == "FAILED"
    failures = [n for n in w.r.notifications() if "restore FAILED" in (n["subject"] or "")]
    assert len(failures) == 1 and "removed search index x-bitbucket-search-v1" in failures[0]["message"]
    assert not [i for i in sim.indices() if i.startswith("x-")]
    assert sorted(i for i in sim.indices() if i.startswith("bitbucket-")) == BITBUCKET_INDICES


def test_a_snapshot_whose_metadata_is_not_this_deployments_is_never_deleted(
    world_factory: Callable[..., World],
) -> None:
    """A snapshot named as ours whose metadata names another deployment (one backing up an instance of the same name
    into the same repository, or a forged one): pruning and the failure path leave it, and say why."""
    import os

    from functions.errors import BackupError
    from functions.models.config import parse_instance_config
    from functions.strategies import acting_for, parts_for

    w = world_factory(search="opensearch")
    sim = w.r.search
    assert sim is not None
    backup_id = backup_id_of(w.r.run_backup())
    (name,) = [str(s["snapshot"]) for s in _snapshots(w)]
    stored = sim._snapshots_of("bitbucket-backup")[name]
    assert stored.metadata is not None
    stored.metadata["deployment"] = "123456789012/eu-west-1/another-stack"
    config = parse_instance_config(w.r.instance_config)
    with acting_for(os.environ["DEPLOYMENT_ID"], w.r.archive_bucket):
        strategy = parts_for(config).snapshots["search"]
        (artifact,) = strategy.artifacts(backup_id)
        with pytest.raises(BackupError, match="does not carry this deployment's metadata"):
            strategy.delete(artifact)
    assert [str(s["snapshot"]) for s in _snapshots(w)] == [name], "the snapshot stayed"
    assert _entries(w) == [f"demo/{backup_id}/{backup_id}-search.json"], "and so did its catalog entry"


def test_the_domain_refuses_a_role_without_its_es_permission(world_factory: Callable[..., World]) -> None:
    """The simulated domain authorizes each signed request with the caller's role, as moto does AWS calls: the copy
    step's role without es:ESHttpPut fails the run under the lock, which is then released."""
    import json

    from tests.integration.test_iam_enforced import _roles_allowing

    w = world_factory(search="amazon-opensearch")
    iam = w.r.client("iam")
    copying = [(r, p, d) for r, p, d in _roles_allowing(w, "es:ESHttpPut") if "BackupSearchIndex" in r]
    ((owner, policy, document),) = copying
    for statement in document["Statement"]:
        if "es:ESHttpPut" in json.dumps(statement["Action"]):
            statement["Action"] = ["es:ESHttpGet"]
    iam.put_role_policy(RoleName=owner, PolicyName=policy, PolicyDocument=json.dumps(document))
    result = w.r.run_backup()
    assert_failed_cleanly(w, result, BACKUP.copy.label)
    assert "is not authorized to perform: es:ESHttpPut" in str(result.cause), result.cause
    assert [d for d in w.r.iam.denied if d.action == "es:ESHttpPut" and owner in d.caller], w.r.iam.denied
    assert _snapshots(w) == [] and _entries(w) == []


def test_the_command_line_lists_the_search_part_and_restores_only_it(
    world_factory: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from bitbucket_backup_cli.base import OK
    from bitbucket_backup_cli.main import main
    from rehearsal.fake_account import REGION
    from rehearsal.serve import LocalEndpoint

    w = world_factory(search="amazon-opensearch")
    sim = w.r.search
    assert sim is not None
    backup_id = backup_id_of(w.r.run_backup())
    with LocalEndpoint(w.r) as endpoint:
        assert main(["--endpoint-url", endpoint.url, "--region", REGION, "list", "--json"]) == OK
        (row,) = [r for r in json.loads(capsys.readouterr().out)["backups"] if r["backup_id"] == backup_id]
        assert row["parts"] == ["home", "database", "search"] and row["status"] == "complete"
        base = ["--endpoint-url", endpoint.url, "--region", REGION, "restore", str(backup_id), "--instance", "demo"]
        code = main([*base, "--only", "search", "--search-index-prefix", "copy-", "--wait", "--poll-interval", "0.05"])
        out = capsys.readouterr().out
        assert code == OK, out
    assert "search indices copy-bitbucket-index-version, copy-bitbucket-search-v1" in out, out
    assert "copy-bitbucket-search-v1" in sim.indices()
    restored = [v for v in w.r.client("ec2").describe_volumes()["Volumes"] if "Tags" in v]
    assert restored == [], "only the search index was restored"


def test_a_zero_downtime_backup_snapshots_the_search_index_without_a_lock(world_factory: Callable[..., World]) -> None:
    w = world_factory(search="amazon-opensearch", instance_overrides={"zero_downtime": True})
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert "locked" not in w.sim.event_names()
    (snapshot,) = _snapshots(w)
    assert snapshot["state"] == "SUCCESS"
    assert sorted(s["part"] for s in w.r.snapshots(backup_id_of(result))) == ["database", "home", "search"]


def test_a_cluster_that_cannot_delete_the_failed_snapshot_still_ends_unlocked_and_says_so(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(search="opensearch")
    sim = w.r.search
    assert sim is not None
    sim.fail_next_snapshot(state="FAILED", reason="disk")
    sim.inject("snapshot-delete", status=503, body="{}", times=None)
    result = w.r.run_backup()
    assert_failed_cleanly(w, result, BACKUP.wait_snapshots.label, after_unlock=True)
    (note,) = w.failure_notifications()
    assert "not deleted (delete-search: the search cluster answered HTTP 503): delete it by hand" in note["message"]
    assert len(_snapshots(w)) == 1


def test_a_start_whose_answer_was_lost_is_found_and_the_run_goes_on(world_factory: Callable[..., World]) -> None:
    """The cluster started the snapshot but the connection broke before its answer: the copy step finds the
    snapshot of that name with this run's metadata and goes on; it never starts a second one."""
    w = world_factory(search="opensearch")
    sim = w.r.search
    assert sim is not None
    sim.inject("snapshot-create", drop=True, after_action=True)
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    (snapshot,) = _snapshots(w)
    assert snapshot["state"] == "SUCCESS"
    creates = [r for r in sim.requests if r[0] == "PUT" and r[1].startswith("/_snapshot/bitbucket-backup/")]
    assert len(creates) == 1, creates


def test_a_search_snapshot_started_after_the_failure_path_listed_is_removed_by_its_copy(
    world_factory: Callable[..., World],
) -> None:
    """The database's copy fails at once; the cluster takes its time over the snapshot's start, which it makes
    after the failure path removed the run's catalog entry: the copy step finds its run discarded and deletes the
    snapshot it started (Step Functions does not stop a running invocation)."""
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    from functions.handlers._step import is_warm_up
    from tests.integration.conftest import fail_backend, wait_for

    w = world_factory(search="opensearch")
    sim = w.r.search
    assert sim is not None
    sim.inject("snapshot-create", delay=3.0)

    def copies() -> list[object]:
        return [
            i
            for i in list(w.r.runtime.invocations)
            if i.handler == BACKUP.copy_search.handler and not is_warm_up(i.event)
        ]

    with fail_backend(RDSBackend, "create_db_snapshot", RDSClientError("InvalidDBInstanceState", "injected")):
        result = w.r.run_backup()
    assert result.status == "FAILED"
    wait_for(lambda: len(copies()) == 1, seconds=60)
    (copy,) = copies()
    assert copy.error == "RunDiscarded", copy  # type: ignore[attr-defined]
    assert _snapshots(w) == [], "the snapshot made after the failure path's listing was left behind"
    assert _entries(w) == []
    assert not w.r.iam.denied
