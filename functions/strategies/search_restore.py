"""Restores a search index snapshot into NEW indices: each index of the snapshot as `<prefix><name>` (default prefix
`restored-<backup id>-`), never over a live index (a name that a configured pattern matches, or that exists, is
refused before anything is made), without its aliases (a live alias would point at the copy too) and without the
cluster's global state. The failure path deletes exactly the indices this restore named, never a pattern."""

from __future__ import annotations

import fnmatch
from typing import Any

from functions.errors import BackupError, RestoreFailed, RestoreRefused
from functions.models.part_config import SEARCH_PART
from functions.models.restore import RestoreTarget, SearchTarget
from functions.models.restore_plans import SearchCreated, SearchPlan
from functions.strategies import Artifact, RestoreProgress, Restorer
from functions.strategies.search_snapshot import cluster, search_config


class SearchRestorer(Restorer[SearchPlan, SearchCreated]):
    part = SEARCH_PART
    target_fields = frozenset(SearchTarget.model_fields)

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> SearchPlan:
        step = "validate"
        if len(artifacts) != 1:
            raise RestoreRefused(f"{step}: the backup has {len(artifacts)} search snapshots; exactly one is restored")
        artifact = artifacts[0]
        config = search_config(self.instance)
        chosen = target.search.index_prefix if target.search else None
        prefix = chosen or f"restored-{artifact.backup_id}-"
        search = cluster(self.instance)
        info = search.snapshot(step, artifact.details["snapshot"])
        if info is None or info.state != "SUCCESS":
            state = info.state if info else "gone from the repository"
            raise RestoreRefused(f"{step}: search snapshot {artifact.id} is {state}; only a complete one is restored")
        indices = sorted(i for i in info.indices if any(fnmatch.fnmatchcase(i, p) for p in config.indices))
        if not indices:
            raise RestoreRefused(f"{step}: search snapshot {artifact.id} holds none of the indices {config.indices}")
        restored = [prefix + index for index in indices]
        live = [r for r in restored if any(fnmatch.fnmatchcase(r, p) for p in config.indices)]
        if live:
            raise RestoreRefused(
                f"{step}: the restored index {live[0]} would match the live indices' pattern "
                f"({', '.join(config.indices)}): choose another target.search.index_prefix"
            )
        taken = sorted(set(restored) & set(search.indices(step, prefix + "*")))
        if taken:
            raise RestoreRefused(
                f"{step}: index {taken[0]} already exists in the search cluster: nothing is restored over an index; "
                "choose another target.search.index_prefix or delete it"
            )
        return {
            "repository": artifact.details["repository"],
            "snapshot": artifact.details["snapshot"],
            "indices": indices,
            "prefix": prefix,
            "restored": restored,
        }

    def _checked(self, plan: SearchPlan) -> SearchPlan:
        """A plan handed back by the state machine: its names must still follow from its prefix and indices."""
        config = search_config(self.instance)
        if plan["repository"] != config.repository or plan["restored"] != [plan["prefix"] + i for i in plan["indices"]]:
            raise RestoreRefused("restore-search: the plan's indices are not its snapshot's under its prefix")
        if any(any(fnmatch.fnmatchcase(r, p) for p in config.indices) for r in plan["restored"]):
            raise RestoreRefused("restore-search: the plan would restore over the live indices' pattern")
        return plan

    def start(self, plan: SearchPlan, execution: str) -> SearchCreated:
        plan = self._checked(plan)
        search = cluster(self.instance)
        existing = set(search.indices("restore-search", plan["prefix"] + "*"))
        if not set(plan["restored"]) <= existing:  # a retried invocation finds them restoring already
            try:
                search.restore("restore-search", plan["snapshot"], plan["indices"], plan["prefix"])
            except BackupError as error:
                raise RestoreFailed(str(error)) from None
        return {
            "restored": plan["restored"],
            "started": f"search indices {', '.join(plan['restored'])} from snapshot {plan['snapshot']}",
        }

    def progress(self, plan: SearchPlan, created: SearchCreated) -> RestoreProgress:
        plan = self._checked(plan)
        stages = cluster(self.instance).recovery("wait-restore", plan["restored"])
        pending = [
            f"search index {name}"
            for name in plan["restored"]
            if not stages.get(name) or any(stage != "DONE" for stage in stages[name])
        ]
        result = {
            "indices": plan["restored"],
            "prefix": plan["prefix"],
            "endpoint": search_config(self.instance).endpoint,
            "snapshot": plan["snapshot"],
        }
        return RestoreProgress(ready=not pending, pending=pending, result=result)

    def complete(self, plan: SearchPlan, created: SearchCreated) -> None:
        """Nothing to hand over: indices carry no tags, and the tool never deletes them after a success."""

    def cleanup(self, plan: SearchPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        if keep:
            return [f"kept search indices {', '.join(plan['restored'])} for inspection (keep_on_failure)"]
        try:
            plan = self._checked(plan)
            deleted = cluster(self.instance).delete_indices("handle-restore-failure", plan["restored"])
        except BackupError as error:
            return [f"search indices {', '.join(plan['restored'])} not removed ({error}): delete them by hand"]
        return [f"removed search index {name}" for name in deleted] or ["no restored search index to remove"]
