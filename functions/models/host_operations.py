"""What the stack may run on an EC2 host: one SSM Command document per operation, nothing else.

The table is shared: stacks/constructs/host_documents.py deploys each operation as a document of the stack's own,
the functions send it by name with its parameters (functions.clients.host), the rehearsal runs it, the tests read it.
A function's role may send only these documents, so it cannot run an arbitrary command as root on a host.

Every parameter is a String restricted by `allowedPattern`: SSM substitutes `{{ name }}` into the command text, so
a value must never be able to leave the single quotes it is written in (no quote, no newline, no `{`). The commands
run under `sh`; each document hands its body to bash at once. Those that run the host script first check it: owned
by the running user (root), mode 0700, not a link, in a 0700 directory of that user under safe parents, and its
SHA-256 is the one this stack was built with.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SCRIPT_PATH = Path(__file__).resolve().parent.parent / "host" / "bitbucket-backup-host.sh"
# Root-owned and 0700 on a real host; the variable (set only in the SSM agent's environment, which only root
# controls) lets the rehearsal and the tests use a directory of their own.
INSTALL_DIR = "/opt/bitbucket-diy-backup"
DIR_VARIABLE = "BITBUCKET_BACKUP_HOST_DIR"
# Exit codes of the documents' own checks (the host script's codes are listed in its header).
NOT_INSTALLED, UNSAFE = 11, 12

# Plain characters only: each pattern keeps a value inside its single quotes.
_PATH = r"/(?!.*/\.{1,2}(?:/|$))[A-Za-z0-9._/-]{0,1023}"
# Up to 20 such paths separated by single spaces (no `.` or `..` component in any of them).
_PATHS = r"(?!.*/\.{1,2}(?:/| |$))/[A-Za-z0-9._/-]{0,1023}(?: /[A-Za-z0-9._/-]{0,1023}){0,19}"
_NAME = r"[A-Za-z0-9._-]{1,255}"
_PG_NAME = r"[A-Za-z_][A-Za-z0-9_$-]{0,62}"
_SECRET = r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}"
_REGION = r"[a-z]{2}(?:-[a-z]+)+-[0-9]"
_HOST = r"[A-Za-z0-9._:-]{1,253}"
_PORT = r"[0-9]{1,5}"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_KEY = r"[A-Za-z0-9._/-]{1,1024}"
_USER = r"[a-z_][a-z0-9_-]{0,31}"
_EXCLUDE = r"[A-Za-z0-9._/*?!\[\] +@%=,:~#-]{1,200}"


def full(pattern: str) -> str:
    return f"^(?:{pattern})$"


def optional(pattern: str) -> str:
    return f"^(?:{pattern})?$"


@dataclass(frozen=True)
class Parameter:
    name: str
    pattern: str  # the document's allowedPattern, anchored
    description: str
    optional: bool = False  # an empty default; the body leaves the flag out

    def accepts(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None


def _p(name: str, pattern: str, description: str, *, optional_: bool = False) -> Parameter:
    return Parameter(name, optional(pattern) if optional_ else full(pattern), description, optional_)


TIMEOUT = Parameter("executionTimeout", full(r"[1-9][0-9]{1,5}"), "Seconds the command may run (30 to 172800)")


@dataclass(frozen=True)
class Operation:
    name: str  # the document's name is the stack's prefix and this
    description: str
    parameters: tuple[Parameter, ...]
    body: str  # bash; `{{ name }}` only inside single quotes; HOST_SCRIPT calls the checked host script
    runs_script: bool = True

    def parameter(self, name: str) -> Parameter:
        return next(p for p in (*self.parameters, TIMEOUT) if p.name == name)


_PG = (
    _p("host", _HOST, "Database server address"),
    _p("port", _PORT, "Database server port"),
    _p("user", _PG_NAME, "Database user"),
    _p("dbname", _PG_NAME, "Database name"),
    _p("passwordSecret", _SECRET, "ARN of the Secrets Manager secret with the password (read on the host)"),
    _p("region", _REGION, "Region of the secret"),
)
_PG_FLAGS = (
    "--host '{{ host }}' --port '{{ port }}' --user '{{ user }}' --dbname '{{ dbname }}' "
    "--password-secret '{{ passwordSecret }}' --region '{{ region }}'"
)
# The dump's engine in the restore, drill and cleanup documents: PostgreSQL (the default, empty) or MySQL/MariaDB.
_ENGINE = _p("engine", r"postgresql|mysql", "The database engine (default postgresql)", optional_=True)
# Where the long copies report their progress (the host script's --progress-*: a CloudWatch Logs stream of the
# stack's group, which `bitbucket-backup backup --wait` reads for its bar). Empty: not reported.
_PROGRESS = (
    _p("progressGroup", r"[A-Za-z0-9._/#-]{1,512}", "Log group the progress is reported to", optional_=True),
    _p("progressStream", r"[A-Za-z0-9._/-]{1,512}", "Log stream of this part's progress", optional_=True),
    _p("progressRegion", _REGION, "Region of the log group", optional_=True),
)
_PROGRESS_LINES = """progress=()
[ -z '{{ progressGroup }}' ] || progress=(--progress-group '{{ progressGroup }}' \\
  --progress-stream '{{ progressStream }}')
[ -z '{{ progressGroup }}' ] || [ -z '{{ progressRegion }}' ] || progress+=(--progress-region '{{ progressRegion }}')
"""
_DOWNLOAD = (
    _p("bucket", _BUCKET, "Bucket of the archive"),
    _p("key", _KEY, "Key of the archive"),
    _p("versionId", r"[A-Za-z0-9._-]{1,1024}", "Version of the archive object", optional_=True),
    _p("workPath", _PATH, "Work directory on the host (created 0700)"),
    _p("region", _REGION, "Region of the bucket", optional_=True),
)
_DOWNLOAD_LINES = """HOST_SCRIPT workdir --path '{{ workPath }}'
work=$(mktemp -d '{{ workPath }}'/.restore-PART.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
args=(--bucket '{{ bucket }}' --key '{{ key }}' --file "$work/archive.tar")
[ -z '{{ versionId }}' ] || args+=(--version-id '{{ versionId }}')
[ -z '{{ region }}' ] || args+=(--region '{{ region }}')
HOST_SCRIPT download "${args[@]}"
"""

# What an archive takes and does (ArchiveUpload; ArchiveHomeSnapshot first makes the copy from a snapshot).
_ARCHIVE = (
    _p("staging", _PATH, "The home's staging copy", optional_=True),
    _p("dump", _PATH, "The database dump directory", optional_=True),
    _p("workPath", _PATH, "Work directory for the archive (created 0700)"),
    _p("fileName", _NAME, "The archive's file name"),
    _p("backupId", _NAME, "The backup id"),
    _p("instance", r"[a-z][a-z0-9-]{0,62}", "The instance name"),
    _p("compressor", r"auto|gzip|zstd", "Compressor"),
    _p("bitbucketVersion", r"[A-Za-z0-9._-]{1,64}", "Bitbucket's version", optional_=True),
    _p("bucket", _BUCKET, "The archive bucket"),
    _p("key", _KEY, "The archive's key"),
    _p("tags", r"[A-Za-z0-9%._~+=&-]{1,2048}", "The catalog tags, URL-encoded"),
    _p("region", _REGION, "Region of the bucket", optional_=True),
    _p("removeDump", r"true|false", "Remove the dump once it is uploaded"),
    *_PROGRESS,
)
_ARCHIVE_LINES = """HOST_SCRIPT workdir --path '{{ workPath }}'
out='{{ workPath }}'/'{{ fileName }}'
# A cancelled run's archive of this part (its process killed, its EXIT trap never run) goes before a new one.
part=${out#'{{ workPath }}'/'{{ backupId }}'}
for old in '{{ workPath }}'/'{{ instance }}'-[0-9]*-[0-9]*"$part"; do [ "$old" = "$out" ] || rm -f -- "$old"; done
trap 'rm -f -- "$out"' EXIT
staging='{{ staging }}'
if [ -z "$staging" ]; then
  # The archive format always has a home/ part: a database-only archive gets an empty one.
  staging=$(mktemp -d '{{ workPath }}'/.empty-home.XXXXXX)
  trap 'rm -f -- "$out"; rm -rf -- "$staging"' EXIT
fi
args=(--staging "$staging" --out "$out" --backup-id '{{ backupId }}' --instance '{{ instance }}')
args+=(--compressor '{{ compressor }}' --overwrite)
[ -z '{{ dump }}' ] || args+=(--dump '{{ dump }}')
[ -z '{{ bitbucketVersion }}' ] || args+=(--bitbucket-version '{{ bitbucketVersion }}')
HOST_SCRIPT archive "${args[@]}" "${progress[@]}"
up=(--file "$out" --bucket '{{ bucket }}' --key '{{ key }}' --tags '{{ tags }}')
[ -z '{{ region }}' ] || up+=(--region '{{ region }}')
HOST_SCRIPT upload "${up[@]}" --sha256 "$(sha256sum < "$out" | cut -c1-64)" "${progress[@]}"
if [ '{{ removeDump }}' = true ] && [ -n '{{ dump }}' ]; then rm -rf -- '{{ dump }}'; fi
"""
_DUMP_LINE = "[ -z '{{ dump }}' ] || args+=(--dump '{{ dump }}')\n"
_REMOVE_DUMP_LINE = "if [ '{{ removeDump }}' = true ] && [ -n '{{ dump }}' ]; then rm -rf -- '{{ dump }}'; fi\n"
assert _DUMP_LINE in _ARCHIVE_LINES and _REMOVE_DUMP_LINE in _ARCHIVE_LINES
_EXCLUDE_LINES = """IFS='|' read -r -a list <<< '{{ excludes }}'
for e in "${list[@]}"; do args+=(--exclude "$e"); done
IFS=',' read -r -a list <<< '{{ excludeRepos }}'
for e in "${list[@]}"; do args+=(--exclude-repo "$e"); done
"""
_EXCLUDES = (
    _p("excludes", rf"{_EXCLUDE}(?:\|{_EXCLUDE})*", "Extra rsync excludes, separated by |", optional_=True),
    _p("excludeRepos", r"[0-9]{1,12}(?:,[0-9]{1,12})*", "Repository ids left out", optional_=True),
)

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation(
            "InstallScript",
            "Install the Bitbucket DIY backup host script into its root-only directory (a no-op when it is there)",
            (),
            "",  # built by install_body(): the script itself travels inside the document
            runs_script=False,
        ),
        Operation(
            "RsyncHome",
            "rsync the Bitbucket home into the staging directory (live pass, then locked pass)",
            (
                _p("home", _PATH, "The Bitbucket home directory"),
                _p("staging", _PATH, "The staging directory (created 0700)"),
                *_EXCLUDES,
                _p("parallel", r"[1-9][0-9]?", "rsyncs over shards of the repositories", optional_=True),
                _p(
                    "scan",
                    r"full|changed",
                    "full: rsync compares every file; changed: only what changed",
                    optional_=True,
                ),
                *_PROGRESS,
            ),
            _PROGRESS_LINES
            + """args=(--home '{{ home }}' --staging '{{ staging }}')
[ -z '{{ parallel }}' ] || args+=(--parallel '{{ parallel }}')
[ -z '{{ scan }}' ] || args+=(--scan '{{ scan }}')
"""
            + _EXCLUDE_LINES
            + """HOST_SCRIPT rsync-home "${args[@]}" "${progress[@]}"
""",
        ),
        Operation(
            "PgDump",
            "pg_dump -Fd the Bitbucket database into the dump directory",
            (
                *_PG,
                _p("jobs", r"[1-9][0-9]?", "Parallel jobs"),
                _p("dumpPath", _PATH, "Directory of the dumps (created 0700)"),
                _p("backupId", _NAME, "The backup id (the dump's directory name)"),
                *_PROGRESS,
            ),
            _PROGRESS_LINES
            + f"""HOST_SCRIPT pg-dump {_PG_FLAGS} --jobs '{{{{ jobs }}}}' \\
  --out '{{{{ dumpPath }}}}'/'{{{{ backupId }}}}' "${{progress[@]}}"
""",
        ),
        Operation(
            "MysqlDump",
            "mysqldump --single-transaction the Bitbucket database into the dump directory",
            (
                *_PG,
                _p("dumpPath", _PATH, "Directory of the dumps (created 0700)"),
                _p("backupId", _NAME, "The backup id (the dump's directory name)"),
                *_PROGRESS,
            ),
            _PROGRESS_LINES
            + f"""HOST_SCRIPT mysql-dump {_PG_FLAGS} \\
  --out '{{{{ dumpPath }}}}'/'{{{{ backupId }}}}' "${{progress[@]}}"
""",
        ),
        Operation(
            "ArchiveUpload",
            "Archive a part's copy (manifest of SHA-256 sums), upload it to the stack's bucket with its tags",
            _ARCHIVE,
            _PROGRESS_LINES + _ARCHIVE_LINES,
        ),
        Operation(
            "SnapshotHome",
            "Take a read-only btrfs snapshot of the home (or only check that one can be taken)",
            (
                _p("home", _PATH, "The Bitbucket home directory (a btrfs subvolume)"),
                _p("snapshotPath", _PATH, "Directory of the snapshots, on the home's file system"),
                _p("backupId", _NAME, "The backup id (the snapshot's name)"),
                _p("checkOnly", r"true|false", "Only check"),
            ),
            """args=(--home '{{ home }}' --snapshots '{{ snapshotPath }}' --name '{{ backupId }}')
[ '{{ checkOnly }}' != true ] || args+=(--check-only)
HOST_SCRIPT fs-snapshot "${args[@]}"
""",
        ),
        Operation(
            "ArchiveHomeSnapshot",
            "rsync the home's snapshot into the staging directory, remove the snapshot, archive and upload the copy",
            (
                *(p for p in _ARCHIVE if p.name not in ("dump", "removeDump", "staging")),
                _p("staging", _PATH, "The staging directory (created 0700)"),
                _p("snapshotPath", _PATH, "Directory of the snapshots"),
                *_EXCLUDES,
            ),
            _PROGRESS_LINES
            + """args=(--home '{{ snapshotPath }}'/'{{ backupId }}' --staging '{{ staging }}')
"""
            + _EXCLUDE_LINES
            + """# The snapshot goes as soon as it is copied, whatever the copy's outcome (a cancelled command's
# snapshot is removed by the run's failure path).
rc=0
HOST_SCRIPT rsync-home "${args[@]}" "${progress[@]}" || rc=$?
HOST_SCRIPT fs-snapshot --remove --snapshots '{{ snapshotPath }}' --name '{{ backupId }}'
[ "$rc" = 0 ] || exit "$rc"
"""
            + _ARCHIVE_LINES.replace(_DUMP_LINE, "").replace(_REMOVE_DUMP_LINE, ""),
        ),
        Operation(
            "RemoveHomeSnapshot",
            "Remove a run's read-only snapshot of the home, if it is there",
            (
                _p("snapshotPath", _PATH, "Directory of the snapshots"),
                _p("backupId", _NAME, "The backup id (the snapshot's name)"),
            ),
            """HOST_SCRIPT fs-snapshot --remove --snapshots '{{ snapshotPath }}' --name '{{ backupId }}'
""",
        ),
        Operation(
            "CheckTargetDirectory",
            "Check that a restore's target directory is missing or empty (exit 6 otherwise)",
            (_p("path", _PATH, "The restore's target directory"),),
            """p='{{ path }}'
if [ -e "$p" ] || [ -L "$p" ]; then [ -d "$p" ] && [ ! -L "$p" ] && [ -z "$(ls -A -- "$p")" ] || exit 6; fi
""",
            runs_script=False,
        ),
        Operation(
            "RestoreHome",
            "Download a home archive into a private directory and extract it into the (empty) target",
            (
                *_DOWNLOAD,
                _p("target", _PATH, "The (empty or missing) directory to restore into"),
                _p("owner", _USER, "The user Bitbucket runs as (owner of what is restored)"),
            ),
            _DOWNLOAD_LINES.replace("PART", "home")
            + """HOST_SCRIPT extract --archive "$work/archive.tar" --target '{{ target }}' --owner '{{ owner }}'
""",
        ),
        Operation(
            "RestoreDatabase",
            "Download a database archive into a private directory and restore it into a NEW database",
            (
                *_DOWNLOAD,
                *_PG,
                _p("jobs", r"[1-9][0-9]?", "Parallel jobs (pg_restore)"),
                _p("comment", r"[A-Za-z0-9 :._/-]{1,300}", "The new database's comment (the restore's marker)"),
                _ENGINE,
            ),
            _DOWNLOAD_LINES.replace("PART", "db")
            + f"""HOST_SCRIPT extract --archive "$work/archive.tar" --target "$work/extracted"
if [ '{{{{ engine }}}}' = mysql ]; then
  HOST_SCRIPT mysql-restore --dump "$work/extracted/db" {_PG_FLAGS} --comment '{{{{ comment }}}}'
else
  HOST_SCRIPT pg-restore --dump "$work/extracted/db" {_PG_FLAGS} --jobs '{{{{ jobs }}}}' --comment '{{{{ comment }}}}'
fi
""",
        ),
        Operation(
            "CheckTargetDatabase",
            "Check that a restore's NEW database does not exist and the credentials work (exit 6 if it exists)",
            (*_PG, _ENGINE),
            f"""if [ '{{{{ engine }}}}' = mysql ]; then sub=mysql-restore; else sub=pg-restore; fi
HOST_SCRIPT "$sub" --check-only {_PG_FLAGS}
""",
        ),
        Operation(
            "DropRestoredDatabase",
            "Drop a database only if it carries this restore's marker",
            (*_PG, _p("comment", r"[A-Za-z0-9 :._/-]{1,300}", "The restore's marker"), _ENGINE),
            f"""if [ '{{{{ engine }}}}' = mysql ]; then sub=mysql-drop; else sub=pg-drop; fi
HOST_SCRIPT "$sub" {_PG_FLAGS} --comment '{{{{ comment }}}}'
""",
        ),
        Operation(
            "RemoveRestoredHome",
            "Remove what a restore extracted into a directory, only if its manifest is that backup's",
            (
                _p("path", _PATH, "The restore's target directory"),
                _p("backupId", _NAME, "The restored backup's id"),
                _p("removeDirectory", r"true|false", "Also remove the (then empty) directory"),
            ),
            """cd -- '{{ path }}' 2>/dev/null || exit 0
if grep -qF '"backup_id": "{{ backupId }}"' manifest.json 2>/dev/null; then
  rm -rf -- manifest.json home db .extract.*
else
  rm -rf -- .extract.*
fi
cd /
if [ '{{ removeDirectory }}' = true ]; then rmdir -- '{{ path }}' 2>/dev/null || true; fi
""",
            runs_script=False,
        ),
        Operation(
            "DrillCheck",
            "The restore drill's checks: git fsck of a sample of repositories, Bitbucket's tables in the database",
            (
                _p("home", _PATH, "The restored home", optional_=True),
                _p("meshHomes", _PATHS, "The restored Mesh nodes' homes, separated by spaces", optional_=True),
                _p("sample", r"[0-9]{1,4}", "Repositories to fsck"),
                _p("host", _HOST, "Database server address", optional_=True),
                _p("port", _PORT, "Database server port", optional_=True),
                _p("user", _PG_NAME, "Database user", optional_=True),
                _p("dbname", _PG_NAME, "Database name", optional_=True),
                _p("passwordSecret", _SECRET, "ARN of the password's secret", optional_=True),
                _p("region", _REGION, "Region of the secret", optional_=True),
                _p("tables", r"[a-z_][a-z0-9_]{0,62}(?:,[a-z_][a-z0-9_]{0,62})*", "Tables", optional_=True),
                _ENGINE,
            ),
            """args=()
[ -z '{{ home }}' ] || args+=(--home '{{ home }}' --sample '{{ sample }}')
[ -z '{{ meshHomes }}' ] || args+=(--mesh-homes '{{ meshHomes }}' --sample '{{ sample }}')
if [ -n '{{ dbname }}' ]; then
  args+=(--host '{{ host }}' --port '{{ port }}' --user '{{ user }}' --dbname '{{ dbname }}')
  args+=(--password-secret '{{ passwordSecret }}' --region '{{ region }}' --tables '{{ tables }}')
  [ -z '{{ engine }}' ] || args+=(--engine '{{ engine }}')
fi
HOST_SCRIPT drill-check "${args[@]}"
""",
        ),
        Operation(
            "FlushHome",
            "sync (and optionally fsfreeze) the home's file systems before their snapshot",
            (
                _p("mountPoints", r"/[A-Za-z0-9._/-]*(?: /[A-Za-z0-9._/-]*)*", "Mount points, separated by spaces"),
                _p("freeze", r"true|false", "Freeze the file systems after the flush"),
                _p("maxFreezeSeconds", r"[0-9]{1,4}", "A watchdog unfreezes after this long"),
            ),
            """read -r -a mounts <<< '{{ mountPoints }}'
for m in "${mounts[@]}"; do sync -f "$m"; done
if [ '{{ freeze }}' = true ]; then
  # The watchdog unfreezes on its own if the orchestrator never sends the unfreeze.
  nohup setsid bash -c 'sleep "$1"; shift; for m in "$@"; do fsfreeze -u "$m" 2>/dev/null || true; done' \\
    watchdog '{{ maxFreezeSeconds }}' "${mounts[@]}" >/dev/null 2>&1 &
  for m in "${mounts[@]}"; do fsfreeze -f "$m"; done
fi
""",
            runs_script=False,
        ),
        Operation(
            "UnfreezeHome",
            "Unfreeze the home's file systems (not frozen is fine)",
            (_p("mountPoints", r"/[A-Za-z0-9._/-]*(?: /[A-Za-z0-9._/-]*)*", "Mount points, separated by spaces"),),
            """read -r -a mounts <<< '{{ mountPoints }}'
# Unfreezing a file system that is not frozen fails with EINVAL: that is the state we want anyway.
for m in "${mounts[@]}"; do fsfreeze -u "$m" 2>/dev/null || true; done
""",
            runs_script=False,
        ),
        Operation(
            "MountHome",
            "Mount the restored home's file systems from /etc/fstab unless the boot did",
            (_p("mountPoints", r"/[A-Za-z0-9._/-]*(?: /[A-Za-z0-9._/-]*)*", "Mount points, separated by spaces"),),
            """read -r -a mounts <<< '{{ mountPoints }}'
for m in "${mounts[@]}"; do
  mountpoint -q "$m" || mount "$m"
  mountpoint -q "$m" || { echo "$m is not mounted after mount" >&2; exit 1; }
done
df -P "${mounts[@]}"
""",
            runs_script=False,
        ),
    ]
}


# --- the host script, checked before every use -------------------------------------------------------------------


@lru_cache(maxsize=1)
def script() -> tuple[str, str, str]:
    """The host script's text, its SHA-256 and its versioned file name in the install directory."""
    text = SCRIPT_PATH.read_text()
    match = re.search(r'^VERSION="([0-9A-Za-z.-]+)"$', text, re.MULTILINE)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text, digest, f"bitbucket-backup-host-{match.group(1) if match else '0'}-{digest[:12]}.sh"


_CHECKS = """host_dir=${%(var)s:-%(dir)s}
host_file=%(file)s
uid=$(id -u)
refuse() { echo "host script check: $*" >&2; exit %(unsafe)d; }
private() {  # owned by this user, nobody else may read or change it, not a link
  [ ! -L "$1" ] || refuse "$1 is a symbolic link"
  read -r owner mode < <(stat -c '%%u %%a' -- "$1")
  [ "$owner" = "$uid" ] || refuse "$1 belongs to uid $owner, not to uid $uid (this tool's user)"
  (( !(8#$mode & 8#077) )) || refuse "$1 has mode $mode: other users may change it (must be 0700)"
}
parents() {  # no other user may rename a parent's entries: owned by root or this user, group/others only if sticky
  local p=$1
  while [ "$p" != / ]; do
    p=${p%%/*}; p=${p:-/}
    read -r owner mode < <(stat -c '%%u %%a' -- "$p")
    [ "$owner" = 0 ] || [ "$owner" = "$uid" ] || refuse "the parent $p belongs to uid $owner"
    if (( (8#$mode & 8#022) && !(8#$mode & 8#1000) )); then refuse "other users may write to the parent $p"; fi
  done
}
case $host_dir in /*) ;; *) refuse "the install directory must be an absolute path: $host_dir" ;; esac
"""

_VERIFY = """missing() { echo "host script check: $host_dir/$host_file is not installed" >&2; exit %(missing)d; }
[ -d "$host_dir" ] || missing
private "$host_dir"
parents "$host_dir"
[ -f "$host_dir/$host_file" ] || missing
private "$host_dir/$host_file"
sum=$(sha256sum < "$host_dir/$host_file" | cut -c1-64)
[ "$sum" = %(digest)s ] || refuse "$host_dir/$host_file does not match its SHA-256 (changed after it was installed)"
"""


def check_lines() -> str:
    """bash: refuse (exit 12) unless the installed script is this stack's, in a directory only root can change."""
    _, digest, file = script()
    values = {"var": DIR_VARIABLE, "dir": INSTALL_DIR, "file": file, "unsafe": UNSAFE, "missing": NOT_INSTALLED}
    return _CHECKS % values + _VERIFY % {"digest": digest, "missing": NOT_INSTALLED}


def install_body() -> str:
    """bash: create the directory (0700) unless it exists; refuse one another user owns or may change; write the
    script (carried here, compressed) to a private temporary name, check its SHA-256, rename it into place."""
    text, digest, file = script()
    packed = base64.encodebytes(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()
    values = {"var": DIR_VARIABLE, "dir": INSTALL_DIR, "file": file, "unsafe": UNSAFE, "missing": NOT_INSTALLED}
    return (
        _CHECKS % values
        + f"""[ -e "$host_dir" ] || [ -L "$host_dir" ] || mkdir -p -m 0700 -- "$host_dir"
private "$host_dir"
parents "$host_dir"
sum=""
installed=$host_dir/$host_file
[ ! -f "$installed" ] || [ -L "$installed" ] || sum=$(sha256sum < "$installed" | cut -c1-64)
if [ "$sum" = {digest} ]; then
  chmod 0700 -- "$host_dir/$host_file"
  chown "$uid" -- "$host_dir/$host_file"
else
  tmp=$(mktemp "$host_dir/.install.XXXXXX")
  trap 'rm -f -- "$tmp"' EXIT
  base64 -d > "$tmp.gz" <<'BITBUCKET_BACKUP_SCRIPT'
{packed}BITBUCKET_BACKUP_SCRIPT
  gzip -dc < "$tmp.gz" > "$tmp"
  rm -f -- "$tmp.gz"
  [ "$(sha256sum < "$tmp" | cut -c1-64)" = {digest} ] || refuse "the host script was damaged in transit"
  chmod 0700 -- "$tmp"
  mv -f -- "$tmp" "$host_dir/$host_file"
  trap - EXIT
fi
"""
        + _VERIFY % {"digest": digest, "missing": NOT_INSTALLED}
        + f"""echo '{{"subcommand": "install", "script": "'"$host_dir/$host_file"'", "sha256": "{digest}"}}'
"""
    )


_DELIMITER = "BITBUCKET_BACKUP_DOCUMENT"


def body(operation: Operation) -> str:
    """The whole bash body of an operation's document (before SSM substitutes the parameters)."""
    if operation.name == "InstallScript":
        text = install_body()
    elif operation.runs_script:
        _, _, file = script()
        text = check_lines() + operation.body.replace("HOST_SCRIPT", f'bash -- "$host_dir"/{file}')
    else:
        text = operation.body
    return "set -euo pipefail\numask 077\n" + text


def run_command(operation: Operation) -> list[str]:
    """The document's runCommand: SSM runs it with `sh`, which hands the body to bash (it is written for bash)."""
    text = body(operation)
    assert _DELIMITER not in text
    return [
        "#!/bin/sh",
        f"exec /bin/bash -c \"$(cat <<'{_DELIMITER}'",
        *text.rstrip("\n").split("\n"),
        _DELIMITER,
        f')" bitbucket-backup-{operation.name}',
    ]


def content(operation: Operation) -> dict[str, object]:
    """The document's content (schema 2.2, one aws:runShellScript step)."""
    parameters: dict[str, object] = {}
    for p in (*operation.parameters, TIMEOUT):
        parameters[p.name] = {
            "type": "String",
            "description": p.description,
            "allowedPattern": p.pattern,
            **({"default": ""} if p.optional else {}),
            **({"default": "3600"} if p is TIMEOUT else {}),
        }
    return {
        "schemaVersion": "2.2",
        "description": f"Bitbucket DIY backup: {operation.description}",
        "parameters": parameters,
        "mainSteps": [
            {
                "action": "aws:runShellScript",
                "name": operation.name,
                "precondition": {"StringEquals": ["platformType", "Linux"]},
                "inputs": {"runCommand": run_command(operation), "timeoutSeconds": "{{ executionTimeout }}"},
            }
        ],
    }
