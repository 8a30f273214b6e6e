"""The restore's options: the target they make, and those that do not apply to an instance (refused)."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from bitbucket_backup_cli.aws import Aws
from bitbucket_backup_cli.base import USAGE, CliError

if TYPE_CHECKING:
    from functions.models.config import InstanceConfig


# Each restore option and the target fields it sets (functions/models/restore.py): an option applies when one of its
# fields is a field the part's strategy takes (its restorer's target_fields, which the state machine checks too).
RESTORE_OPTION_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "target_path": (("home", "path"),),
    "owner": (("home", "owner"),),
    "availability_zone": (("home", "availability_zone"),),
    "attach_to": (("home", "attach_to_instance_id"),),
    "mount": (("home", "mount"),),
    "writer_instance_id": (("database", "writer_instance_id"),),
    "db_instance_class": (("database", "instance_class"),),
    "target_host": (("home", "instance_id"), ("database", "host_instance_id")),
}


def refuse_inapplicable_options(config: InstanceConfig, wanted: list[str], args: argparse.Namespace) -> None:
    """An option this restore would not use is refused, never dropped: it names the option the user wrote."""
    from functions.strategies import restorers_for

    takes = {part: r.target_fields for part, r in restorers_for(config).items()}
    for option, places in RESTORE_OPTION_FIELDS.items():
        if not getattr(args, option, None):
            continue
        if any(part in wanted and field in takes.get(part, frozenset()) for part, field in places):
            continue
        reasons = []
        for part in dict.fromkeys(part for part, _ in places):
            if part not in config.parts:
                reasons.append(f"instance '{config.name}' backs up no {part}")
            elif part not in wanted:
                reasons.append(f"the {part} is not restored (--only {args.only})")
            else:
                strategy = config.home.strategy if part == "home" else config.database.strategy
                reasons.append(f"the {part} of '{config.name}' is backed up by the {strategy} strategy")
        flag = "--" + option.replace("_", "-")
        raise CliError(USAGE, f"{flag} does not apply to this restore: {'; '.join(reasons)}")


def restore_target(aws: Aws, config: InstanceConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The restore state machine's `target` (functions/models/restore.py), from the options."""
    from functions.models.part_config import EbsHomeConfig

    shared = [p for p in config.parts if p in ("home", "database")]
    wanted = [] if args.only in ("mesh", "search") else [args.only] if args.only else shared
    for part in wanted:
        if part not in config.parts:
            raise CliError(USAGE, f"instance '{config.name}' backs up no {part}")
    refuse_inapplicable_options(config, wanted, args)
    target: dict[str, Any] = {}
    nodes = mesh_targets(config, getattr(args, "mesh_node", None) or [])
    if nodes:
        target["mesh"] = nodes
    elif args.only == "mesh":
        raise CliError(USAGE, "--only mesh restores the nodes given with --mesh-node NAME=WHERE: give at least one")
    if "database" in wanted:
        if not args.target_db_id:
            raise CliError(
                USAGE,
                "give --target-db-id: the NEW database identifier to restore into (or --only home)",
            )
        if config.database.strategy == "amazon-aurora":
            writer = args.writer_instance_id or f"{args.target_db_id}-writer"
            target["database"] = {"cluster_id": args.target_db_id, "writer_instance_id": writer}
        elif config.database.strategy in ("postgresql", "mysql"):
            # An archive: the NEW database on the backed-up server, created from the dump on a host.
            target["database"] = {"dbname": args.target_db_id}
            if args.target_host:
                target["database"]["host_instance_id"] = args.target_host
        else:
            target["database"] = {"instance_id": args.target_db_id}
            if args.writer_instance_id:  # Aurora's: the state machine answers the mix-up with what to give
                target["database"]["writer_instance_id"] = args.writer_instance_id
        if args.db_instance_class:
            target["database"]["instance_class"] = args.db_instance_class
    elif args.target_db_id:
        raise CliError(USAGE, "--target-db-id is for the database, which --only home leaves out")
    if "home" in wanted and config.home.strategy == "rsync":
        if not args.target_path or args.availability_zone or args.attach_to or args.mount:
            raise CliError(
                USAGE,
                "this instance's home is an archive: give --target-path (an empty directory on the host), not "
                "--availability-zone, --attach-to or --mount",
            )
        target["home"] = {"path": args.target_path}
        if args.target_host:
            target["home"]["instance_id"] = args.target_host
        if args.owner:
            target["home"]["owner"] = args.owner
    elif "home" in wanted:
        home: dict[str, Any] = {}
        if args.attach_to:
            home["attach_to_instance_id"] = args.attach_to
        zone = args.availability_zone
        if not zone and not args.attach_to and isinstance(config.home, EbsHomeConfig):
            zone = _zone_of(aws, config.home.instance_id)
        if zone:
            home["availability_zone"] = zone
        if args.mount:
            home["mount"] = True
        target["home"] = home
    elif args.availability_zone or args.attach_to or args.mount:
        raise CliError(USAGE, "--availability-zone, --attach-to and --mount are for the home, which --only leaves out")
    prefix = getattr(args, "search_index_prefix", None)
    if args.only == "search" or getattr(args, "search_index", False) or prefix:
        if "search" not in config.parts:
            raise CliError(USAGE, f"instance '{config.name}' backs up no search index")
        target["search"] = {"index_prefix": prefix} if prefix else {}
    return target


def mesh_targets(config: InstanceConfig, given: list[str]) -> dict[str, dict[str, str]]:
    """`--mesh-node NAME=WHERE` as the target of each node: new volumes in zone WHERE (EBS), or extraction into the
    directory WHERE (rsync)."""
    from functions.models.part_config import EbsHomeConfig

    nodes = {node.name: node for node in config.mesh_nodes}
    found: dict[str, dict[str, str]] = {}
    for item in given:
        name, _, where = item.partition("=")
        node = nodes.get(name)
        if node is None:
            known = ", ".join(nodes) or "none"
            raise CliError(USAGE, f"--mesh-node {item}: instance '{config.name}' has no Mesh node '{name}' ({known})")
        if name in found:
            raise CliError(USAGE, f"--mesh-node {name} is given twice")
        if isinstance(node.home, EbsHomeConfig):
            if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d[a-z]", where):
                raise CliError(USAGE, f"--mesh-node {item}: node {name} is on EBS: give an availability zone")
            found[name] = {"availability_zone": where}
        else:
            if not where.startswith("/"):
                raise CliError(USAGE, f"--mesh-node {item}: node {name} is an archive: give an absolute directory")
            found[name] = {"path": where}
    return found


# The restore target's fields as the user gave them: the flags of `restore` (per part of the target).
RESTORE_FLAGS: dict[tuple[str, str], str] = {
    ("database", "instance_id"): "--target-db-id",
    ("database", "cluster_id"): "--target-db-id",
    ("database", "dbname"): "--target-db-id",
    ("database", "writer_instance_id"): "--writer-instance-id",
    ("database", "instance_class"): "--db-instance-class",
    ("database", "host_instance_id"): "--target-host",
    ("home", "availability_zone"): "--availability-zone",
    ("home", "attach_to_instance_id"): "--attach-to",
    ("home", "mount"): "--mount",
    ("home", "path"): "--target-path",
    ("home", "instance_id"): "--target-host",
    ("home", "owner"): "--owner",
}


def restore_problem(error: Any) -> str:
    """The first problem of a restore input's ValidationError, in the words of the command line: the flags the
    user typed, not the fields of the execution input."""
    problem = error.errors()[0]
    loc = [str(p) for p in problem["loc"]]
    message = str(problem["msg"]).removeprefix("Value error, ")
    part = loc[1] if len(loc) > 1 and loc[0] == "target" else ""
    flags = {field: flag for (of, field), flag in RESTORE_FLAGS.items() if of == part}
    if flags:
        words = re.compile(r"\b(" + "|".join(sorted(flags, key=len, reverse=True)) + r")\b")
        message = words.sub(lambda m: flags[m.group(1)], message)
    flag = flags.get(loc[2]) if len(loc) > 2 else None
    if flag is None and loc[:1] == ["backup_id"]:
        flag = "BACKUP_ID"
    return f"{flag}: {message}" if flag else message


def _zone_of(aws: Aws, instance_id: str) -> str:
    from botocore.exceptions import ClientError

    try:
        reservations = aws.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["Placement"]["AvailabilityZone"])
    except (ClientError, IndexError, KeyError):
        raise CliError(
            USAGE,
            f"give --availability-zone (or --attach-to): the original host {instance_id} cannot be described",
        ) from None
