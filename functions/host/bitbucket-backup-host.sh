#!/usr/bin/env bash
# bitbucket-backup-host.sh - the host side of the Bitbucket DIY backup, run by the stack's own SSM Command documents
# on an EC2 host that sees the Bitbucket home directory and/or can reach a self-managed PostgreSQL. The documents
# install it into a directory only root can write (default /opt/bitbucket-diy-backup, mode 0700) and check its
# owner, mode and SHA-256 before every run.
#
# Usage: bitbucket-backup-host.sh SUBCOMMAND [--flag VALUE]...       (--flag=VALUE works too)
#
#   rsync-home  --home DIR --staging DIR [--exclude PATTERN]... [--exclude-repo ID]... [--parallel N]
#               [--scan full|changed]
#       Mirror the home into the staging directory: rsync -a --delete --delete-excluded with the default excludes
#       (home-relative /caches/ /data/db.* /export/ /log/ /plugins/.*/ /tmp /.lock), the extra excludes, and
#       /shared/data/repositories/ID for each excluded repository. Run it twice: once while Bitbucket is live (the
#       expensive pass), once under the maintenance lock (moves only what changed). The staging directory gets a
#       marker file (.bitbucket-backup-staging); a non-empty directory without it is refused, so a wrong path is
#       never wiped by --delete. rsync's "some files vanished" (24) is a warning (live pass), not an error.
#       --parallel N: the repositories sharded over N rsyncs. --scan changed: instead of rsync comparing every file,
#       find lists what changed since the last complete pass into this staging directory began (change times, 2 s of
#       margin) and rsync copies only that, deleting within the directories that changed; the same tree, in a
#       fraction of the time. It scans every file instead (and says why) when there was no such pass, when the home
#       or the excludes differ from that pass's, or when the home is not on a local file system (an NFS server's
#       clock is not this host's).
#   fs-snapshot --home DIR --snapshots DIR --name NAME [--kind btrfs] [--check-only | --remove]
#       A read-only btrfs snapshot of the home (which must be a btrfs subvolume) as DIR/NAME, on the same file system:
#       taken in milliseconds under the lock, then copied with rsync-home --home DIR/NAME after the unlock.
#       --check-only: only check that the home is a subvolume and the snapshots directory is usable. --remove: delete
#       DIR/NAME if it is there (a read-only subvolume; anything else is refused). lvm and zfs are not supported.
#   pg-dump     --host H [--port 5432] --user U --dbname D --out DIR [--jobs N] [--password-secret ARN
#               [--password-secret-key password]] [--region R]
#       pg_dump -Fd -j N into DIR (written as a hidden temporary directory, renamed to DIR when complete; DIR must
#       not exist). The password is never a flag: it comes from PGPASSWORD (or ~/.pgpass), or from a Secrets Manager
#       secret read with the AWS CLI into a variable and exported only to pg_dump (a JSON secret's "password" key, or
#       the whole string). It never appears on a command line or in any output.
#   pg-restore  --dump DIR --host H [--port 5432] --user U --dbname NEW [--jobs N] [--maintenance-db postgres]
#               [--no-owner] [--password-secret ARN [--password-secret-key K]] [--region R]
#       Refuses an existing database; creates NEW (template0, the dump's encoding), pg_restore -j N --exit-on-error;
#       drops NEW again if the restore fails, so a retry is not refused. [--comment TEXT] sets the new database's
#       comment (the restore's marker, which pg-drop checks). --check-only: only check that NEW does not exist and
#       the credentials work (no --dump needed), create nothing.
#   pg-drop     --host H [--port 5432] --user U --dbname NAME --comment TEXT [--maintenance-db postgres]
#               [--password-secret ARN [--password-secret-key K]] [--region R]
#       Drops NAME only if its comment is exactly TEXT (a database a restore created and marked); refuses any other
#       database. A missing database is not an error (the cleanup may run twice).
#   mysql-dump  --host H [--port 3306] --user U --dbname D --out DIR [--password-secret ARN
#               [--password-secret-key password]] [--region R]
#       mysqldump --single-transaction (a consistent InnoDB snapshot, no table locks) of D into DIR/dump.sql, with
#       D's character set and collation in DIR/charset; DIR is written under a hidden temporary name and renamed when
#       complete. The password comes from MYSQL_PWD or the secret, as for pg-dump, and reaches the client only in a
#       private option file (--defaults-file, mode 0600 in a 0700 directory, removed on exit): never a flag.
#   mysql-restore --dump DIR --host H [--port 3306] --user U --dbname NEW [--comment TEXT] [--check-only]
#               [--password-secret ARN [--password-secret-key K]] [--region R]
#       As pg-restore: refuses an existing database; creates NEW with the dump's character set and collation, marks
#       it with TEXT (a table bitbucket_backup_restore that mysql-drop checks; drop it once the restore is
#       accepted), loads DIR/dump.sql (refused unless mysqldump finished it), drops NEW again if that fails.
#   mysql-drop  --host H [--port 3306] --user U --dbname NAME --comment TEXT [--password-secret ARN ...]
#       Drops NAME only if its bitbucket_backup_restore marker is exactly TEXT; a missing database is not an error.
#   archive     --staging DIR [--dump DIR] --out FILE --backup-id ID --instance NAME [--bitbucket-version V]
#               [--compressor auto|gzip|zstd] [--overwrite]
#       One compressed tar: manifest.json at the root (format, backup id, instance, Bitbucket version, created time,
#       compressor, and every regular file with its size and SHA-256), the staging copy under home/, the dump under
#       db/. Written to a hidden temporary name in FILE's directory and renamed only when complete and tested.
#       auto = the compressor the name says (.tar.gz/.tgz gzip, .tar.zst/.tzst zstd), else zstd if installed, else
#       gzip. An existing FILE is refused unless --overwrite.
#   verify      --archive FILE [--scratch DIR]
#       Extract into a temporary directory (under --scratch, default $TMPDIR or /tmp) and check every file against
#       the manifest: same set of files, sizes and SHA-256 sums.
#   extract     --archive FILE --target DIR [--owner USER]
#       Refuses a non-empty target; extracts into a hidden directory inside it, checks it as verify does, then moves
#       manifest.json, home/ and db/ into DIR and chowns everything to USER if given.
#   upload      --file F --bucket B --key K [--tags 'k=v&k2=v2'] [--sha256 HEX] [--region R]
#               [--multipart-above BYTES]
#       aws s3api put-object with --tagging (and metadata sha256 when given). Above 5 GiB (a single PUT's limit):
#       aws s3 cp (multipart), then put-object-tagging.
#   download    --bucket B --key K --file F [--version-id V] [--region R]
#       aws s3api get-object into a temporary name, checked against the object's sha256 metadata if present, renamed
#       to F when complete. An existing F is refused.
#   drill-check [--home DIR [--sample N]] [--mesh-homes 'DIR1 DIR2 ...'] [--host H [--port 5432] --user U --dbname D
#               --tables T1,T2,... [--engine postgresql|mysql] [--password-secret ARN [--password-secret-key K]]
#               [--region R]]
#       The restore drill's checks of a restored copy. Home: `git fsck --full` on a random sample of N (default 5)
#       repositories of DIR/shared/data/repositories (DIR: the restored Bitbucket home); a home without repositories
#       passes with 0 checked. Mesh homes (restored Mesh nodes' homes, separated by spaces): the same, on a sample of
#       each node's bare repositories wherever its layout puts them (a directory with HEAD, objects/ and refs/). Database: connects to D and checks that every table of --tables (Bitbucket's, e.g.
#       project,repository,sta_normal_user) exists. Fails with 7 naming the first repository that fails fsck
#       or the missing tables; 8 when the password is rejected, 5 when the server cannot be reached.
#   workdir     --path DIR
#       Create DIR (and missing parents) with mode 0700, owned by the user running the script (root on a host), or
#       check an existing one: it must be a real directory owned by that user that no other user can enter, under
#       parents no other user can rename it in. Anything else is refused (12). The other subcommands check the
#       directories they write into (staging, the dump's parent, the archive's and the download's directory) the
#       same way.
#   version     The script version and which tools the host has (for the workflow's validation step).
#
# Progress: rsync-home, pg-dump, mysql-dump, archive and upload take --progress-group G --progress-stream S [--progress-region R].
# With them, every $BITBUCKET_BACKUP_PROGRESS_SECONDS seconds (default 10) a background reporter puts one line into
# that CloudWatch Logs stream (creating it on its first report): {"progress": PHASE, "done": BYTES, "total": BYTES or
# null, "percent": N or null}, PHASE one of rsync, pg_dump, mysqldump, archive, upload; and one at 100 when the phase ends, if it
# reported before. `bitbucket-backup backup --wait` draws its progress bar from them. Best effort and off the
# critical path: nothing is sent before the first interval (a short locked pass sends nothing), a host whose role may
# not write there (logs:CreateLogStream, logs:PutLogEvents) gets one warning, and the copy goes on. Numbers only:
# no path, name or output of a tool is ever sent.
#
# On success every subcommand prints exactly one line of JSON on stdout (its summary) and nothing else; warnings
# and errors go to stderr. An error is one line: "<subcommand>: <message>". Exit codes:
#    0  ok
#    1  unexpected internal error
#    2  usage: unknown subcommand or flag, missing or invalid value
#    3  source missing: home, staging, dump directory or archive file not found
#    4  no space left on device (ENOSPC, quota, short write)
#    5  copy failed: rsync, pg_dump, tar or the compressor failed otherwise (also: database unreachable)
#    6  refused: target not empty, output exists, database exists, staging directory not created by this tool
#    7  verification failed: checksum or size mismatch, missing/extra file, bad manifest, corrupt archive
#    8  authentication failed: the database rejected the password, or the password secret could not be read
#    9  restore failed: CREATE DATABASE, pg_restore or loading the MySQL dump failed
#   10  AWS call failed (S3 upload or download)
#   11  a required command is not installed
#   12  unsafe: a work directory (or the installed script) belongs to another user, other users may write to it or
#       to a parent, or it is a symbolic link
#  130  interrupted (SIGINT), 143 terminated (SIGTERM): the running tool is stopped, temporary files are removed
# Nothing half-written ever carries a final name: dumps, archives and downloads are renamed into place only when
# complete, and the temporary names are hidden (leading dot) and removed on failure.
#
# Needs: bash >= 4.4, coreutils, rsync, tar (GNU), gzip or zstd, sha256sum, pg_dump/pg_restore/psql (PostgreSQL)
# or mysqldump/mysql (MySQL, MariaDB: mariadb-dump/mariadb when installed), the AWS CLI.

set -euo pipefail
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    echo "bitbucket-backup-host: bash >= 4.4 is required (this is $BASH_VERSION)" >&2
    exit 11
fi
shopt -s nullglob
VERSION="1.7.1"
PROG="bitbucket-backup-host"
MARKER=".bitbucket-backup-staging"
MANIFEST_FORMAT=1
DEFAULT_EXCLUDES=("/caches/" "/data/db.*" "/export/" "/log/" "/plugins/.*/" "/tmp" "/.lock")
SINGLE_PUT_MAX=$((5 * 1024 * 1024 * 1024))
export LC_ALL=C
umask 077

SUB=""           # the subcommand, prefix of every message
REDACT=""        # a secret that must never be printed
WORK=""          # private temporary directory of this run
JOB_PID=""       # the long-running tool, stopped on SIGTERM/SIGINT
declare -a JOB_PIDS=()  # the parallel rsync shards, stopped likewise
HOME_DIR="" STAGING_DIR=""  # rsync-home's, for its shards
JOB_PASSWORD=""  # exported as PGPASSWORD to the next job only
CLEANUP=()       # paths removed on exit (temporary names only)
DROP_DB=""       # a database this run created and must drop if it fails
DROP_ENGINE=""   # postgresql or mysql: how DROP_DB is dropped
MYSQL_CNF=""     # the private option file that carries the MySQL connection and password
MYSQL_CLIENT="" MYSQL_DUMP=""  # mysql/mysqldump, or MariaDB's mariadb/mariadb-dump
JOB_STDIN=""     # a file the next job reads as its standard input
PRIVATE_DIR=""   # rsync gives the staging directory the home's mode: made private again whatever happens
PROGRESS_PID=""  # the background progress reporter of the running phase
PROGRESS_SECONDS=${BITBUCKET_BACKUP_PROGRESS_SECONDS:-10}
PROGRESS_FLAGS="progress-group progress-stream progress-region"
PROGRESS_GROUP=""   # the CloudWatch Logs group and stream progress is reported to; no stream: not reported
PROGRESS_STREAM=""
PROGRESS_PATH=""    # what a measure looks at (the dump being written, the file being uploaded)
declare -a PROGRESS_REGION=()
declare -a PGCONN=()

# ---------------------------------------------------------------------------------------------------- messages

oneline() {  # $1 -> REPLY: one line, secrets redacted, at most 600 characters
    local s=$1
    [[ -n $REDACT ]] && s=${s//"$REDACT"/"***"}
    s=${s//$'\r'/}
    while [[ $s == *$'\n' ]]; do s=${s%$'\n'}; done
    s=${s//$'\n'/ | }
    s=${s//$'\t'/ }
    ((${#s} <= 600)) || s="${s:0:600}..."
    REPLY=$s
}

die() {  # die CODE MESSAGE
    local code=$1
    shift
    oneline "$*"
    printf '%s: %s\n' "${SUB:-$PROG}" "$REPLY" >&2
    exit "$code"
}

warn() {
    oneline "$*"
    printf '%s: warning: %s\n' "${SUB:-$PROG}" "$REPLY" >&2
}

tail_of() {  # the last 3 lines of a file -> REPLY (for error messages)
    local -a lines=()
    [[ -f $1 ]] && mapfile -t lines <"$1"
    local n=${#lines[@]} start=0
    ((n > 3)) && start=$((n - 3))
    local IFS=$'\n'
    oneline "${lines[*]:start}"
}

is_no_space() {  # does the file (a tool's stderr) report ENOSPC or a full quota?
    local text=""
    [[ -f $1 ]] && text=$(<"$1")
    [[ $text == *"No space left on device"* || $text == *"Disk quota exceeded"* || $text == *"ENOSPC"* ]]
}

on_error() {
    local rc=$1 line=$2 cmd=$3
    trap - ERR
    die 1 "unexpected error: '$cmd' failed with status $rc (line $line)"
}

stop_jobs() {  # the running tool and the shards, if any
    local pid
    for pid in "$JOB_PID" "${JOB_PIDS[@]}"; do
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    JOB_PID=""
    JOB_PIDS=()
}

cleanup() {
    local rc=$?
    trap - ERR
    progress_kill
    stop_jobs
    if [[ -n $DROP_DB ]]; then
        local name=$DROP_DB
        DROP_DB=""
        local dropped=0
        if [[ $DROP_ENGINE == mysql ]]; then
            printf 'DROP DATABASE IF EXISTS `%s`;\n' "$name" | mysql_query >/dev/null 2>&1 && dropped=1
        else
            printf 'DROP DATABASE IF EXISTS :"dbname";\n' | psql_maint -v dbname="$name" >/dev/null 2>&1 && dropped=1
        fi
        if ((dropped)); then
            warn "dropped the partially restored database $name"
        else
            warn "could not drop the partially restored database $name"
        fi
    fi
    [[ -n $PRIVATE_DIR && -d $PRIVATE_DIR ]] && { chmod 0700 -- "$PRIVATE_DIR" 2>/dev/null || true; }
    local p
    for p in "${CLEANUP[@]}"; do
        [[ -n $p && -e $p ]] && rm -rf -- "$p"
    done
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    exit "$rc"
}

on_signal() {  # on_signal NAME EXIT_CODE
    trap - INT TERM
    progress_kill
    stop_jobs
    die "$2" "interrupted by SIG$1; temporary files removed"
}

set -E
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

# ---------------------------------------------------------------------------------------------------- helpers

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die 11 "required command not found: $c"
    done
}

make_work() {
    [[ -n $WORK ]] && return 0
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROG.XXXXXX") || die 4 "cannot create a temporary directory in ${TMPDIR:-/tmp}"
}

# A directory root writes into must not be replaceable by another user: neither it nor its parents.
parents_safe() {  # parents_safe DIR: every parent owned by root or this user, writable by others only if sticky
    local p=$1 owner mode uid
    uid=$(id -u)
    while [[ $p != / ]]; do
        p=${p%/*}
        p=${p:-/}
        read -r owner mode < <(stat -c "%u %a" -- "$p") || { REPLY="cannot read the mode of $p"; return 1; }
        [[ $owner == 0 || $owner == "$uid" ]] || { REPLY="$p belongs to uid $owner"; return 1; }
        if (((8#$mode & 8#022) && !(8#$mode & 8#1000))); then
            REPLY="other users may write to $p (mode $mode)"
            return 1
        fi
    done
}

safe_dir() {  # safe_dir DIR [WHAT]: create DIR 0700 as this user, or refuse an existing one others could touch
    local dir=$1 what=${2:-work directory} owner mode uid err
    [[ $dir == /* ]] || die 2 "the $what must be an absolute path: $dir"
    uid=$(id -u)
    if [[ ! -e $dir && ! -L $dir ]]; then
        err=$(mkdir -p -m 0700 -- "$dir" 2>&1) || {
            [[ $err == *"No space left"* || $err == *"quota"* ]] && die 4 "no space left creating the $what $dir"
            die 5 "cannot create the $what $dir: $err"
        }
    fi
    [[ ! -L $dir ]] || die 12 "refusing the $what $dir: it is a symbolic link"
    [[ -d $dir ]] || die 12 "refusing the $what $dir: it is not a directory"
    read -r owner mode < <(stat -c '%u %a' -- "$dir")
    [[ $owner == "$uid" ]] || die 12 "refusing the $what $dir: it belongs to uid $owner, not to uid $uid (this tool's user); remove it or give it to uid $uid with mode 0700"
    ((!(8#$mode & 8#077))) || die 12 "refusing the $what $dir: mode $mode lets other users in (must be 0700)"
    parents_safe "$dir" || die 12 "refusing the $what $dir: $REPLY"
}

now_ns() { date +%s%N; }

seconds_since() {  # $1 = start in ns -> REPLY "S.mmm"
    local d=$(($(now_ns) - $1))
    printf -v REPLY '%d.%03d' $((d / 1000000000)) $(((d / 1000000) % 1000))
}

run_job() {  # run_job OUT ERR CMD...: run one tool as a stoppable child; returns its exit status
    local out=$1 err=$2
    shift 2
    local rc=0
    (
        trap - ERR INT TERM EXIT
        if [[ -n $JOB_PASSWORD ]]; then
            # shellcheck disable=SC2030  # exported to this job's subshell only, on purpose
            export PGPASSWORD=$JOB_PASSWORD
        fi
        exec "$@" <"${JOB_STDIN:-/dev/null}"
    ) >"$out" 2>"$err" &
    JOB_PID=$!
    [[ -z $WORK ]] || printf '%s\n' "$JOB_PID" >"$WORK/job.pid"  # for the progress reporter's measures
    wait "$JOB_PID" || rc=$?
    JOB_PID=""
    return "$rc"
}

# ---------------------------------------------------------------------------------------------------- progress

progress_init() {  # after parse_flags: report progress if --progress-group and --progress-stream were given
    PROGRESS_GROUP=${FLAG[progress-group]:-}
    PROGRESS_STREAM=${FLAG[progress-stream]:-}
    PROGRESS_REGION=()
    [[ -n $PROGRESS_GROUP || -n $PROGRESS_STREAM ]] || return 0
    [[ $PROGRESS_GROUP =~ ^[A-Za-z0-9._/#-]{1,512}$ ]] || die 2 "--progress-group must be a log group name"
    [[ $PROGRESS_STREAM =~ ^[A-Za-z0-9._/-]{1,512}$ ]] || die 2 "--progress-stream must be a log stream name"
    [[ $PROGRESS_SECONDS =~ ^[0-9]*\.?[0-9]+$ && $PROGRESS_SECONDS =~ [1-9] ]] ||
        die 2 "BITBUCKET_BACKUP_PROGRESS_SECONDS must be a positive number of seconds"
    [[ -z ${FLAG[progress-region]:-} ]] || PROGRESS_REGION=(--region "${FLAG[progress-region]}")
    if ! command -v aws >/dev/null 2>&1; then
        warn "progress not reported: the AWS CLI is not installed"
        PROGRESS_STREAM=""
    fi
}

progress_aws() {  # progress_aws OPERATION [ARGS...]: the AWS CLI on the progress stream
    aws "${PROGRESS_REGION[@]}" logs "$1" --log-group-name "$PROGRESS_GROUP" --log-stream-name "$PROGRESS_STREAM" "${@:2}"
}

progress_put() {  # progress_put PHASE DONE TOTAL PERCENT (empty TOTAL/PERCENT: unknown): one line
    json_escape "$(printf '{"progress": "%s", "done": %s, "total": %s, "percent": %s}' "$1" "$2" "${3:-null}" "${4:-null}")"
    progress_aws put-log-events --log-events "[{\"timestamp\": $(($(now_ns) / 1000000)), \"message\": \"$REPLY\"}]"
}

progress_start() {  # progress_start PHASE TOTAL MEASURE [first]: while the phase runs, report what MEASURE prints
    # (DONE [PERCENT]). `first`: the part's first phase (rsync, pg_dump), which makes the stream before its first
    # report; a later one (archive, upload) puts at once and makes the stream only if there is none.
    [[ -n $PROGRESS_STREAM ]] || return 0
    progress_kill
    rm -f -- "$WORK/progress.on" "$WORK/progress.denied"
    local phase=$1 total=$2 measure=$3 first=${4:-}
    (
        trap - ERR INT TERM EXIT
        set +e
        bytes="" percent=""
        while sleep "$PROGRESS_SECONDS"; do
            read -r bytes percent < <("$measure" 2>/dev/null) || continue
            is_uint "$bytes" || continue
            if [[ -n $total ]] && ((total > 0)); then
                percent=$((bytes >= total ? 100 : bytes * 100 / total))
            fi
            is_uint "${percent:-}" || percent=""
            [[ -f $WORK/progress.on ]] && { progress_put "$phase" "$bytes" "$total" "$percent"; continue; }
            if [[ -n $first ]]; then  # each AWS CLI start takes a second or more: the fewest before the first report
                progress_aws create-log-stream 2>"$WORK/progress.err" || grep -q ResourceAlreadyExists "$WORK/progress.err" ||
                    { mv -f -- "$WORK/progress.err" "$WORK/progress.denied"; exit 0; }
            fi
            if progress_put "$phase" "$bytes" "$total" "$percent" 2>"$WORK/progress.err" ||
                { grep -q ResourceNotFoundException "$WORK/progress.err" &&
                    { progress_aws create-log-stream 2>"$WORK/progress.err" ||
                        grep -q ResourceAlreadyExists "$WORK/progress.err"; } &&
                    progress_put "$phase" "$bytes" "$total" "$percent" 2>"$WORK/progress.err"; }; then
                : >"$WORK/progress.on"
            else
                mv -f -- "$WORK/progress.err" "$WORK/progress.denied"
                exit 0
            fi
        done
    ) </dev/null >/dev/null 2>&1 &
    PROGRESS_PID=$!
}

progress_kill() {  # stop the reporter (it may be between two reports)
    if [[ -n $PROGRESS_PID ]]; then
        kill -TERM "$PROGRESS_PID" 2>/dev/null || true
        wait "$PROGRESS_PID" 2>/dev/null || true
        PROGRESS_PID=""
    fi
}

progress_end() {  # progress_end PHASE BYTES: the phase ended; 100 % is reported (in the background) if it reported
    [[ -n $PROGRESS_PID ]] || return 0
    progress_kill
    if [[ -f $WORK/progress.denied ]]; then
        tail_of "$WORK/progress.denied"
        warn "progress not reported (cannot write to the log group $PROGRESS_GROUP): $REPLY"
    elif [[ -f $WORK/progress.on ]]; then
        (progress_put "$1" "$2" "$2" 100 </dev/null >/dev/null 2>&1 &)
    fi
    return 0
}

# The measures: bytes done so far (and a percentage when the tool says it), from the running job.
measure_rsync() {  # the newest "  1,234,567  37%  12.34MB/s  0:00:12 (xfr#...)" line of rsync --info=progress2
    local last
    read -r last <"$WORK/rsync.progress" || return 1
    [[ $last =~ ^\ *([0-9,]+)\ +([0-9]+)% ]] || return 1
    echo "${BASH_REMATCH[1]//,/} ${BASH_REMATCH[2]}"
}
measure_written() {  # what the dump has written so far (pg_dump compresses as it writes: no total is known)
    local bytes
    bytes=$(du -s -b -- "$PROGRESS_PATH" 2>/dev/null) || return 1
    echo "${bytes%%[[:space:]]*}"
}
measure_read() {  # what the job (tar) has read so far
    local pid line
    read -r pid <"$WORK/job.pid" || return 1
    while read -r line; do
        [[ $line == "rchar: "* ]] && { echo "${line#rchar: }"; return 0; }
    done <"/proc/$pid/io"
    return 1
}
measure_file_offset() {  # where the job (the AWS CLI) is in reading $PROGRESS_PATH
    local pid fd line
    read -r pid <"$WORK/job.pid" || return 1
    for fd in /proc/"$pid"/fd/*; do
        [[ $(readlink -- "$fd" 2>/dev/null) == "$PROGRESS_PATH" ]] || continue
        while read -r line; do
            [[ $line == "pos:"* ]] && { echo "${line//[!0-9]/}"; return 0; }
        done <"/proc/$pid/fdinfo/${fd##*/}"
    done
    return 1
}

json_escape() {  # $1 -> REPLY: the JSON string body (without quotes)
    local s=$1 bs=\\ q='"'
    s=${s//"$bs"/"$bs$bs"}
    s=${s//"$q"/"$bs$q"}
    if [[ $s == *[[:cntrl:]]* ]]; then
        local out="" c i
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            case $c in
                $'\n') out+='\n' ;;
                $'\t') out+='\t' ;;
                $'\r') out+='\r' ;;
                [[:cntrl:]])
                    printf -v c '\\u%04x' "'$c"
                    out+=$c
                    ;;
                *) out+=$c ;;
            esac
        done
        s=$out
    fi
    REPLY=$s
}

json_unescape() {  # $1 = a JSON string body -> REPLY
    local s=$1 out="" c i=0 n=${#1} hex
    while ((i < n)); do
        c=${s:i:1}
        if [[ $c == "\\" ]]; then
            i=$((i + 1))
            c=${s:i:1}
            case $c in
                n) out+=$'\n' ;;
                t) out+=$'\t' ;;
                r) out+=$'\r' ;;
                b) out+=$'\b' ;;
                f) out+=$'\f' ;;
                u)
                    hex=${s:i+1:4}
                    [[ $hex =~ ^[0-9a-fA-F]{4}$ ]] || return 1
                    printf -v c '%b' "\\u$hex"
                    out+=$c
                    i=$((i + 4))
                    ;;
                *) out+=$c ;;
            esac
        else
            out+=$c
        fi
        i=$((i + 1))
    done
    REPLY=$out
}

jstr() {  # $1 -> REPLY: a quoted JSON string
    json_escape "$1"
    REPLY="\"$REPLY\""
}

jarr() {  # strings -> REPLY: a JSON array
    local out="" s
    for s in "$@"; do
        jstr "$s"
        out+="${out:+, }$REPLY"
    done
    REPLY="[$out]"
}

regex_escape() {  # $1 -> REPLY, for a GNU tar --transform BRE with ',' as delimiter
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            "\\" | '.' | '[' | ']' | '*' | '^' | '$' | ',') out+="\\$c" ;;
            *) out+=$c ;;
        esac
    done
    REPLY=$out
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

dir_is_empty() {
    local -a entries=()
    shopt -s dotglob
    entries=("$1"/*)
    shopt -u dotglob
    ((${#entries[@]} == 0))
}

default_jobs() {
    local n
    n=$(nproc 2>/dev/null || echo 2)
    ((n > 4)) && n=4
    ((n < 1)) && n=1
    REPLY=$n
}

# Flag parsing: every flag takes a value, except those listed in BOOL_FLAGS. Values land in FLAG[name]; repeated
# flags (REPEATABLE) are collected in REPEAT_<name> arrays by the caller through FLAG_LIST.
declare -A FLAG=()
declare -a FLAG_LIST=()   # "name=value" in order, for repeatable flags

parse_flags() {  # parse_flags "allowed flags" "boolean flags" ARGS...
    local allowed=" $1 " bools=" $2 "
    shift 2
    local arg name value
    while (($#)); do
        arg=$1
        shift
        [[ $arg == --* ]] || die 2 "unexpected argument (flags are --name VALUE); see --help"
        name=${arg#--}
        value=""
        local has_value=0
        if [[ $name == *=* ]]; then
            value=${name#*=}
            name=${name%%=*}
            has_value=1
        fi
        case $name in
            password | pgpassword | secret)
                die 2 "passwords are never accepted on the command line: use PGPASSWORD, MYSQL_PWD or --password-secret ARN" ;;
            help) usage ;;
        esac
        [[ $allowed == *" $name "* || $bools == *" $name "* ]] || die 2 "unknown flag --$name for $SUB"
        if [[ $bools == *" $name "* ]]; then
            ((has_value == 0)) || die 2 "--$name takes no value"
            FLAG[$name]=1
            continue
        fi
        if ((has_value == 0)); then
            (($#)) || die 2 "--$name needs a value"
            value=$1
            shift
        fi
        FLAG[$name]=$value
        FLAG_LIST+=("$name=$value")
    done
}

require() {
    local name
    for name in "$@"; do
        [[ -n ${FLAG[$name]:-} ]] || die 2 "--$name is required"
    done
}

collect() {  # collect NAME -> REPLY_LIST: every value of a repeatable flag
    REPLY_LIST=()
    local item
    for item in "${FLAG_LIST[@]}"; do
        [[ ${item%%=*} == "$1" ]] && REPLY_LIST+=("${item#*=}")
    done
    return 0
}

usage() {
    local line
    while IFS= read -r line; do
        [[ $line == '#!'* ]] && continue
        [[ $line == '#'* ]] || break
        line=${line#\#}
        printf '%s\n' "${line# }"
    done <"${BASH_SOURCE[0]}"
    exit 0
}

# ---------------------------------------------------------------------------------------------------- file lists

# list_files ROOT PREFIX [SKIP]: every regular file under ROOT (symlinks are not followed and not listed) into the
# parallel arrays L_REL (PREFIX + path relative to ROOT) and L_SIZE; SKIP is a ROOT-relative path left out.
list_files() {
    local root=$1 prefix=$2 skip=${3:-} rec path rel
    L_REL=()
    L_SIZE=()
    L_PATH=()
    if ! du -0 -a -b -l -- "$root" >"$WORK/du.out" 2>"$WORK/du.err"; then
        tail_of "$WORK/du.err"
        is_no_space "$WORK/du.err" && die 4 "no space left for the file list in $WORK"
        die 5 "cannot list $root: $REPLY"
    fi
    while IFS= read -r -d '' rec; do
        path=${rec#*$'\t'}
        [[ -f $path && ! -L $path ]] || continue
        rel=${path#"$root/"}
        [[ -n $skip && $rel == "$skip" ]] && continue
        L_PATH+=("$path")
        L_REL+=("$prefix$rel")
        L_SIZE+=("${rec%%$'\t'*}")
    done <"$WORK/du.out"
}

# hash_files: SHA-256 of every path in L_PATH, in order, into L_SUM (sha256sum in batches).
hash_files() {
    L_SUM=()
    local -a batch=() lines=()
    local i=0 n=${#L_PATH[@]} len line
    while ((i < n)); do
        batch=()
        len=0
        while ((i < n && ${#batch[@]} < 1000 && len < 65536)); do
            batch+=("${L_PATH[i]}")
            len=$((len + ${#L_PATH[i]} + 1))
            i=$((i + 1))
        done
        if ! sha256sum -- "${batch[@]}" >"$WORK/sum.out" 2>"$WORK/sum.err"; then
            tail_of "$WORK/sum.err"
            is_no_space "$WORK/sum.err" && die 4 "no space left for the checksum list in $WORK"
            return 1
        fi
        mapfile -t lines <"$WORK/sum.out"
        if ((${#lines[@]} != ${#batch[@]})); then
            REPLY="sha256sum returned ${#lines[@]} sums for ${#batch[@]} files"
            return 1
        fi
        for line in "${lines[@]}"; do
            line=${line#\\}
            L_SUM+=("${line:0:64}")
        done
    done
}

# check_tree ROOT: the extracted archive at ROOT matches its manifest.json exactly. Dies 7 otherwise.
check_tree() {
    local root=$1 manifest="$1/manifest.json"
    [[ -f $manifest ]] || die 7 "the archive has no manifest.json"
    local -a mlines=()
    mapfile -t mlines <"$manifest"
    local re='^    \{"sha256": "([0-9a-f]{64})", "size": ([0-9]+), "path": "(.*)"\},?$'
    local count_re='^  "file_count": ([0-9]+),$' id_re='^  "backup_id": "(.*)",$' inst_re='^  "instance": "(.*)",$'
    local -A want=()
    local line declared="" nentries=0
    M_BACKUP_ID=""
    M_INSTANCE=""
    for line in "${mlines[@]}"; do
        if [[ $line =~ $re ]]; then
            want["${BASH_REMATCH[3]}"]="${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
            nentries=$((nentries + 1))
        elif [[ $line =~ $count_re ]]; then
            declared=${BASH_REMATCH[1]}
        elif [[ $line =~ $id_re ]]; then
            M_BACKUP_ID=${BASH_REMATCH[1]}
        elif [[ $line =~ $inst_re ]]; then
            M_INSTANCE=${BASH_REMATCH[1]}
        fi
    done
    [[ ${mlines[1]:-} == "  \"format\": $MANIFEST_FORMAT," ]] || die 7 "manifest.json is not a format $MANIFEST_FORMAT manifest"
    [[ -n $declared ]] || die 7 "manifest.json has no file_count"
    ((declared == nentries && nentries == ${#want[@]})) ||
        die 7 "manifest.json lists $nentries file entries (${#want[@]} distinct) but declares $declared"
    list_files "$root" "" "manifest.json"
    hash_files || die 5 "cannot read extracted files: $REPLY"
    local i key bad=() extra=()
    for i in "${!L_REL[@]}"; do
        json_escape "${L_REL[i]}"
        key=$REPLY
        if [[ -z ${want[$key]+x} ]]; then
            extra+=("${L_REL[i]}")
            continue
        fi
        [[ ${want[$key]} == "${L_SUM[i]} ${L_SIZE[i]}" ]] || bad+=("${L_REL[i]}")
        unset 'want[$key]'
    done
    local -a missing=("${!want[@]}")
    if ((${#bad[@]} + ${#extra[@]} + ${#missing[@]} > 0)); then
        die 7 "checksum mismatch: ${#bad[@]} changed (${bad[*]:0:3}), ${#missing[@]} missing (${missing[*]:0:3}), ${#extra[@]} not in the manifest (${extra[*]:0:3})"
    fi
    C_FILES=${#L_REL[@]}
    C_BYTES=0
    for i in "${L_SIZE[@]}"; do C_BYTES=$((C_BYTES + i)); done
}

# ---------------------------------------------------------------------------------------------------- compression

detect_compressor() {  # $1 = archive file -> REPLY gzip|zstd
    local magic
    magic=$(od -An -tx1 -N4 -- "$1" 2>/dev/null) || magic=""
    magic=${magic// /}
    magic=${magic//$'\n'/}
    case $magic in
        1f8b*) REPLY=gzip ;;
        28b52ffd) REPLY=zstd ;;
        *) die 7 "$1 is neither a gzip nor a zstd file" ;;
    esac
}

compress_program() {  # $1 = gzip|zstd -> REPLY: for tar --use-compress-program
    case $1 in
        gzip) REPLY="gzip" ;;
        zstd) REPLY="zstd -T0" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------- postgres

load_password() {  # [VARIABLE]: $VARIABLE (default PGPASSWORD) or the secret of --password-secret -> JOB_PASSWORD
    local variable=${1:-PGPASSWORD}
    # shellcheck disable=SC2031  # the caller's password, moved out of our own environment
    JOB_PASSWORD=${!variable:-}
    unset "$variable"
    local arn=${FLAG[password-secret]:-}
    [[ -z $arn ]] && { REDACT=$JOB_PASSWORD; return 0; }
    need aws
    local key=${FLAG[password-secret-key]:-password} region=${FLAG[region]:-} secret
    [[ $key =~ ^[A-Za-z0-9_.-]+$ ]] || die 2 "--password-secret-key must be a plain JSON key"
    if [[ -z $region && $arn =~ ^arn:[^:]+:secretsmanager:([^:]+): ]]; then
        region=${BASH_REMATCH[1]}
    fi
    local -a args=(secretsmanager get-secret-value --secret-id "$arn" --query SecretString --output text)
    [[ -n $region ]] && args+=(--region "$region")
    if ! secret=$(aws "${args[@]}" 2>"$WORK/secret.err"); then
        tail_of "$WORK/secret.err"
        die 8 "could not read the password secret $arn: $REPLY"
    fi
    if [[ $secret == \{* ]]; then
        local re="\"$key\"[[:space:]]*:[[:space:]]*\"(([^\"\\\\]|\\\\.)*)\""
        [[ $secret =~ $re ]] || die 8 "the secret $arn is a JSON object without a string \"$key\""
        json_unescape "${BASH_REMATCH[1]}" || die 8 "the secret $arn has an invalid \"$key\" value"
        secret=$REPLY
    fi
    [[ -n $secret && $secret != "None" ]] || die 8 "the secret $arn has no SecretString"
    JOB_PASSWORD=$secret
    REDACT=$secret
}

pg_conn_flags() {  # host/port/user flags -> PGCONN
    local host=${FLAG[host]} port=${FLAG[port]:-5432} user=${FLAG[user]}
    is_uint "$port" || die 2 "--port must be a number"
    PGCONN=(--host="$host" --port="$port" --username="$user" --no-password)
}

pg_auth_failed() {  # does the file (psql/pg_dump/pg_restore stderr) say the password was wrong or missing?
    local text=""
    [[ -f $1 ]] && text=$(<"$1")
    [[ $text == *"password authentication failed"* || $text == *"no password supplied"* ||
        $text == *"authentication failed for user"* ]]
}

psql_maint() {  # psql on the maintenance database, script on stdin
    (
        trap - ERR INT TERM EXIT
        # shellcheck disable=SC2031
        [[ -n $JOB_PASSWORD ]] && export PGPASSWORD=$JOB_PASSWORD
        exec psql "${PGCONN[@]}" --dbname="${FLAG[maintenance-db]:-postgres}" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
    )
}

check_dbname() {
    [[ $1 != *=* && $1 != postgres*:* ]] ||
        die 2 "--dbname must be a database name, not a connection string (passwords go through PGPASSWORD or --password-secret)"
}

# MySQL and MariaDB: the connection and the password travel in a private option file, never as flags.
mysql_tools() {  # [dump] -> MYSQL_CLIENT (and MYSQL_DUMP): MariaDB's own names where installed, else MySQL's
    MYSQL_CLIENT=mysql MYSQL_DUMP=mysqldump
    command -v mariadb >/dev/null 2>&1 && MYSQL_CLIENT=mariadb
    command -v mariadb-dump >/dev/null 2>&1 && MYSQL_DUMP=mariadb-dump
    need "$MYSQL_CLIENT"
    [[ ${1:-} != dump ]] || need "$MYSQL_DUMP"
}

check_mysql_name() {  # database names are interpolated into SQL: plain characters only
    [[ $1 =~ ^[A-Za-z0-9_$-]{1,64}$ ]] || die 2 "--dbname must be a plain MySQL database name (letters, digits, _ \$ -)"
}

mycnf_value() {  # $1 -> REPLY: a double-quoted option-file value (\\ \" \n \r \t escaped)
    local v=${1//\\/\\\\}
    v=${v//\"/\\\"}
    v=${v//$'\n'/\\n}
    v=${v//$'\r'/\\r}
    v=${v//$'\t'/\\t}
    REPLY="\"$v\""
}

mysql_conn() {  # after load_password MYSQL_PWD: write the option file, forget the password but for redaction
    local port=${FLAG[port]:-3306}
    is_uint "$port" || die 2 "--port must be a number"
    MYSQL_CNF="$WORK/client.cnf"
    {
        printf '[client]\nprotocol=TCP\nport=%s\n' "$port"
        mycnf_value "${FLAG[host]}"
        printf 'host=%s\n' "$REPLY"
        mycnf_value "${FLAG[user]}"
        printf 'user=%s\n' "$REPLY"
        if [[ -n $JOB_PASSWORD ]]; then
            mycnf_value "$JOB_PASSWORD"
            printf 'password=%s\n' "$REPLY"
        fi
    } >"$MYSQL_CNF"
    JOB_PASSWORD=""  # not exported to any job: the option file carries it
}

mysql_query() {  # the MySQL client on the option file's server, SQL on stdin, tab-separated rows out
    "$MYSQL_CLIENT" --defaults-file="$MYSQL_CNF" --batch --skip-column-names --default-character-set=utf8mb4 "$@"
}

mysql_auth_failed() {  # does the file (mysql/mysqldump stderr) say the password was wrong or missing?
    local text=""
    [[ -f $1 ]] && text=$(<"$1")
    [[ $text == *"ERROR 1045"* || $text == *"Error: 1045"* || $text == *"(using password: "* ]]
}

mysql_error() {  # $1 = the client's stderr -> REPLY: its last ERROR line (it echoes the statement around it)
    local -a lines=()
    local i
    [[ -f $1 ]] && mapfile -t lines <"$1"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        if [[ ${lines[i]} == ERROR* || ${lines[i]} == *": Got error"* || ${lines[i]} == *"Couldn't execute"* ]]; then
            oneline "${lines[i]}"
            return 0
        fi
    done
    tail_of "$1"
}

mysql_exists() {  # $1 = database -> REPLY: 1 if it exists, empty if not; dies 8 or 5 when the server says no
    local err="$WORK/exists.err"
    if ! REPLY=$(printf "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '%s';\n" "$1" |
        mysql_query 2>"$err"); then
        mysql_error "$err"
        mysql_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} on ${FLAG[host]}:${FLAG[port]:-3306} (wrong or missing password): $REPLY"
        die 5 "cannot query the server ${FLAG[host]}:${FLAG[port]:-3306}: $REPLY"
    fi
}

# ---------------------------------------------------------------------------------------------------- subcommands

cmd_version() {
    parse_flags "" "" "$@"
    local tools="" t
    for t in bash rsync tar gzip zstd sha256sum btrfs pg_dump pg_restore psql mysqldump mysql aws; do
        if command -v "$t" >/dev/null 2>&1; then tools+="${tools:+, }\"$t\": true"; else tools+="${tools:+, }\"$t\": false"; fi
    done
    printf '{"subcommand": "version", "version": "%s", "tools": {%s}}\n' "$VERSION" "$tools"
}

REPOS_REL="shared/data/repositories"
SHARD_CHUNK=2000  # repositories per rsync of a shard (its command line stays far below ARG_MAX)

add_stats() {  # add_stats FILE: add rsync --stats of FILE into the associative array st
    local line n
    while IFS= read -r line; do
        [[ $line =~ :\ ([0-9,]+) ]] || continue
        n=${BASH_REMATCH[1]//,/}
        case $line in
            "Number of files: "*)
                st[files]=$((st[files] + n))
                [[ $line =~ reg:\ ([0-9,]+) ]] && st[regular]=$((st[regular] + ${BASH_REMATCH[1]//,/}))
                ;;
            "Number of created files: "*) st[created]=$((st[created] + n)) ;;
            "Number of deleted files: "*) st[deleted]=$((st[deleted] + n)) ;;
            "Number of regular files transferred: "*) st[transferred]=$((st[transferred] + n)) ;;
            "Total file size: "*) st[total]=$((st[total] + n)) ;;
            "Total transferred file size: "*) st[transferred_bytes]=$((st[transferred_bytes] + n)) ;;
            "Literal data: "*) st[literal]=$((st[literal] + n)) ;;
            "Total bytes sent: "*) st[sent]=$((st[sent] + n)) ;;
        esac
    done < <(tr '\r' '\n' <"$1" | grep -E '^(Number of|Total|Literal)' || true)  # progress lines left out
}

rsync_shard() {  # rsync_shard N ARGS...: copy the repositories listed in $WORK/shard.N (one per line), in chunks
    local n=$1 child="" rc=0 chunk
    shift
    trap - ERR EXIT
    trap '[[ -z $child ]] || kill -TERM "$child" 2>/dev/null; exit 143' TERM INT
    split -l "$SHARD_CHUNK" -d -a 4 -- "$WORK/shard.$n" "$WORK/shard.$n.chunk."
    for chunk in "$WORK/shard.$n.chunk."*; do
        local -a sources=()
        mapfile -t sources <"$chunk"
        rsync "$@" -- "${sources[@]/#/$HOME_DIR/$REPOS_REL/}" "$STAGING_DIR/$REPOS_REL/" >>"$WORK/shard.$n.out" \
            2>>"$WORK/shard.$n.err" </dev/null &
        child=$!
        wait "$child" || rc=$?
        child=""
        ((rc == 0 || rc == 24)) || break
    done
    echo "$rc" >"$WORK/shard.$n.rc"
}

# changed_since HOME KEY PREVIOUS [EXCLUDE]...: what changed in HOME (change time) since the earlier pass PREVIOUS
# ("START KEY") began, into $WORK/changed (NUL-separated, a directory as DIR/.); returns 1 with REPLY saying why not.
# Local file systems only: a file's change time is set by the clock of whoever stores it. The excludes that name one
# path from the home (anchored, no wildcard) are not even walked (an excluded repository, the logs); rsync's filter
# leaves out what the others match.
LOCAL_FILE_SYSTEMS=" ext2/ext3 xfs btrfs tmpfs overlayfs zfs f2fs jfs reiserfs "
changed_since() {
    local home=$1 key=$2 previous=$3 fstype pattern
    shift 3
    local -a prune=()
    for pattern; do
        [[ $pattern == /* && $pattern != *[][*?\\]* ]] || continue
        if [[ $pattern == */ ]]; then  # a directory only, as rsync reads a trailing slash
            [[ $pattern != / ]] && prune+=(-path ".${pattern%/}" -type d -prune -o)
        else
            prune+=(-path ".$pattern" -prune -o)
        fi
    done
    fstype=$(stat -f -c %T -- "$home" 2>/dev/null) || fstype="unknown"
    if [[ -z $previous ]]; then
        REPLY="no complete earlier pass into this staging directory"
    elif [[ ${previous#* } != "$key" ]]; then
        REPLY="the home or the excludes are not the earlier pass's"
    elif [[ $LOCAL_FILE_SYSTEMS != *" $fstype "* ]]; then
        REPLY="the home is on $fstype, whose change times need not follow this host's clock"
    elif ! (cd -- "$home" && find . "${prune[@]}" -newerct "@${previous%% *}" \( -type d -printf '%p/.\0' -o -printf '%p\0' \)) \
        >"$WORK/changed" 2>"$WORK/find.err"; then
        tail_of "$WORK/find.err"
        REPLY="listing what changed failed: $REPLY"
    else
        return 0
    fi
    return 1
}

cmd_rsync_home() {
    parse_flags "home staging exclude exclude-repo parallel scan $PROGRESS_FLAGS" "" "$@"
    require home staging
    need rsync
    make_work
    progress_init
    local home staging parallel=${FLAG[parallel]:-1} scan=${FLAG[scan]:-full}
    is_uint "$parallel" && ((parallel >= 1 && parallel <= 32)) || die 2 "--parallel must be a number from 1 to 32"
    [[ $scan == full || $scan == changed ]] || die 2 "--scan must be full or changed"
    [[ -d ${FLAG[home]} ]] || die 3 "home directory not found: ${FLAG[home]}"
    home=$(realpath -e -- "${FLAG[home]}")
    staging=$(realpath -m -- "${FLAG[staging]}")
    [[ $staging != / ]] || die 2 "--staging must not be /"
    if [[ $staging == "$home" || $staging == "$home"/* || $home == "$staging"/* ]]; then
        die 2 "--staging ($staging) and --home ($home) must not contain each other"
    fi
    if [[ -e $staging ]]; then
        [[ -d $staging ]] || die 6 "--staging exists and is not a directory: $staging"
        if [[ ! -f $staging/$MARKER ]] && ! dir_is_empty "$staging"; then
            die 6 "refusing to rsync --delete into $staging: it is not empty and has no $MARKER marker (not a staging directory of this tool)"
        fi
    fi
    local err="$WORK/rsync.err" previous=""
    safe_dir "$staging" "staging directory"
    # The last complete pass ("pass START KEY", appended when it ends): rewriting the marker forgets it until this
    # pass is complete in turn.
    [[ -f $staging/$MARKER ]] && previous=$(sed -n 's/^pass \([0-9]\{1,12\}\) \([0-9a-f]\{64\}\)$/\1 \2/p' -- "$staging/$MARKER" | tail -n 1)
    if ! printf 'staging copy of %s, made by %s\n' "$home" "$PROG" >"$staging/$MARKER" 2>>"$err"; then
        is_no_space "$err" && die 4 "no space left creating $staging"
        tail_of "$err"
        die 5 "cannot create the staging directory: $REPLY"
    fi

    local -a excludes=("${DEFAULT_EXCLUDES[@]}") user_excludes=() excluded_repos=()
    collect exclude
    user_excludes=("${REPLY_LIST[@]}")
    excludes+=("${user_excludes[@]}")
    collect exclude-repo
    local id
    for id in "${REPLY_LIST[@]}"; do
        is_uint "$id" || die 2 "--exclude-repo takes a repository id (a number), got: $id"
        excludes+=("/$REPOS_REL/$id")
        excluded_repos+=("$id")
    done
    local -a args=(-a --numeric-ids --delete --delete-excluded --stats --filter="P /$MARKER")
    local pattern sharded="" key pass_start scanned=full start rc=0
    start=$(now_ns)  # the pass's seconds include listing what changed
    key=$(printf '%s\0' "$home" "${excludes[@]}" | sha256sum)
    key=${key%% *}
    pass_start=$(($(date +%s) - 2))  # file times are kept at the kernel's tick: a margin, never a gap
    if [[ $scan == changed ]]; then
        changed_since "$home" "$key" "$previous" "${excludes[@]}" && scanned=changed || warn "scanning every file: $REPLY"
    fi
    if [[ $scanned == changed ]]; then
        # -a implies no recursion with --files-from: -d copies each listed directory's entries (DIR/.), and
        # --delete deletes within those only. A directory's exclude does not reach the names listed below it: each
        # pattern also excludes everything below what it matches (PATTERN/***).
        args+=(-d --from0 --files-from="$WORK/changed")
        for pattern in "${excludes[@]}"; do args+=(--exclude="${pattern%/}/***"); done
    elif ((parallel > 1)) && [[ -d $home/$REPOS_REL ]]; then
        sharded=1
    fi
    # Sharded: the repositories are copied by `parallel` rsyncs of their own (below), this one copies the rest.
    [[ -z $sharded ]] || args+=(--filter="P /$REPOS_REL/*/" --exclude="/$REPOS_REL/*/")
    for pattern in "${excludes[@]}"; do args+=(--exclude="$pattern"); done
    [[ -z $PROGRESS_STREAM || -n $sharded ]] || args+=(--info=progress2)  # its overall progress, lines ending in \r

    PRIVATE_DIR=$staging
    local -a shards=() repos=()
    local d name i=0 n progress_filter="" rsync_out="$WORK/rsync.out"
    if [[ -n $sharded ]]; then
        # A repository's patterns: the extra excludes that are not anchored at the home (those apply anywhere).
        local -a shard_args=(-a --numeric-ids --delete --delete-excluded --stats)
        for pattern in "${user_excludes[@]}"; do
            [[ $pattern == /* ]] || shard_args+=(--exclude="$pattern")
        done
        local -A skip=()
        for id in "${excluded_repos[@]}"; do skip[$id]=1; done
        local -a dirs=("$home/$REPOS_REL"/*/)
        for d in "${dirs[@]}"; do
            d=${d%/}
            name=${d##*/}
            [[ -L $d || -n ${skip[$name]:-} ]] && continue
            repos+=("$name")
        done
        for ((n = 0; n < parallel; n++)); do : >"$WORK/shard.$n"; done
        for name in "${repos[@]}"; do  # round robin: neighbouring ids, often of similar age and size, spread out
            printf '%s\n' "$name" >>"$WORK/shard.$((i % parallel))"
            i=$((i + 1))
        done
        mkdir -p -m 0700 -- "$staging/$REPOS_REL"
        HOME_DIR=$home STAGING_DIR=$staging
        for ((n = 0; n < parallel && n < ${#repos[@]}; n++)); do
            rsync_shard "$n" "${shard_args[@]}" &
            shards+=($!)
        done
        JOB_PIDS=("${shards[@]}")
    elif [[ -n $PROGRESS_STREAM ]]; then
        rsync_out="$WORK/rsync.fifo"
        # rsync writes a progress line (ended by \r) per file it moves: only the newest is kept (a million files of a
        # first pass would otherwise leave ~75 MB here); the other lines (--stats) go on to rsync.out.
        mkfifo -m 0600 -- "$WORK/rsync.fifo"
        awk -v progress="$WORK/rsync.progress" -v out="$WORK/rsync.out" 'BEGIN { RS = "\r|\n" }
            /^ *[0-9,]+ +[0-9]+% / { print > progress; close(progress); next }
            { print > out }' <"$WORK/rsync.fifo" &
        progress_filter=$!
        progress_start rsync "" measure_rsync first
    fi
    run_job "$rsync_out" "$err" rsync "${args[@]}" -- "$home/" "$staging/" || rc=$?
    if [[ -n $progress_filter ]]; then
        wait "$progress_filter" || true
        : >>"$WORK/rsync.out"  # no line at all when rsync failed at once
    fi
    local shard_rc
    for ((n = 0; n < ${#shards[@]}; n++)); do
        wait "${shards[n]}" || true
        shard_rc=$(cat -- "$WORK/shard.$n.rc" 2>/dev/null || echo 1)
        if ((shard_rc != 0 && shard_rc != 24 && (rc == 0 || rc == 24))); then
            rc=$shard_rc
            cp -f -- "$WORK/shard.$n.err" "$err"
        elif ((shard_rc == 24 && rc == 0)); then
            rc=24
        fi
    done
    JOB_PIDS=()
    chmod 0700 -- "$staging"
    seconds_since "$start"
    local seconds=$REPLY vanished=false
    case $rc in
        0) ;;
        24)
            vanished=true
            warn "some files vanished while copying (normal while Bitbucket is live)"
            ;;
        *)
            tail_of "$err"
            is_no_space "$err" && die 4 "no space left in $staging (rsync exit $rc): $REPLY"
            die 5 "rsync failed (exit $rc): $REPLY"
            ;;
    esac
    # Not written (a full disk): the next changed scan finds no complete pass and scans every file.
    printf 'pass %s %s\n' "$pass_start" "$key" >>"$staging/$MARKER" 2>/dev/null || true

    local -A st=([files]=0 [regular]=0 [created]=0 [deleted]=0 [transferred]=0 [total]=0 [transferred_bytes]=0
        [literal]=0 [sent]=0)
    add_stats "$WORK/rsync.out"
    if [[ -n $sharded ]]; then
        for ((n = 0; n < ${#shards[@]}; n++)); do add_stats "$WORK/shard.$n.out"; done
        # What no shard copied (a repository deleted from the home, or now excluded) goes, as --delete would.
        local -A copied=()
        for name in "${repos[@]}"; do copied[$name]=1; done
        for d in "$staging/$REPOS_REL"/*/; do
            d=${d%/}
            [[ -n ${copied[${d##*/}]:-} ]] && continue
            st[deleted]=$((st[deleted] + $(find "$d" | wc -l)))
            rm -rf -- "$d"
        done
        # The shards and the removals changed the directory after the other rsync gave it the home's time.
        touch -h -r "$home/$REPOS_REL" -- "$staging/$REPOS_REL"
    fi
    progress_end rsync "${st[total]}"
    local jhome jstaging jexcl
    jstr "$home"
    jhome=$REPLY
    jstr "$staging"
    jstaging=$REPLY
    jarr "${excludes[@]}"
    jexcl=$REPLY
    printf '{"subcommand": "rsync-home", "version": "%s", "home": %s, "staging": %s, "seconds": %s, ' \
        "$VERSION" "$jhome" "$jstaging" "$seconds"
    printf '"files": %s, "regular_files": %s, "files_created": %s, "files_deleted": %s, "files_transferred": %s, ' \
        "${st[files]}" "${st[regular]}" "${st[created]}" "${st[deleted]}" "${st[transferred]}"
    printf '"bytes_total": %s, "bytes_transferred": %s, "bytes_literal": %s, "bytes_sent": %s, ' \
        "${st[total]}" "${st[transferred_bytes]}" "${st[literal]}" "${st[sent]}"
    printf '"vanished": %s, "rsync_exit": %s, "parallel": %s, "scan": "%s", "excludes": %s}\n' "$vanished" "$rc" \
        "$parallel" "$scanned" "$jexcl"
}

dump_dir_start() {  # --out -> REPLY: the dump directory (must not exist), REPLY_PARTIAL: its hidden partial name
    local out parent
    out=$(realpath -m -- "${FLAG[out]}")
    [[ ! -e $out ]] || die 6 "the dump directory already exists: $out"
    parent=${out%/*}
    parent=${parent:-/}
    safe_dir "$parent" "dump directory"
    REPLY_PARTIAL="$parent/.${out##*/}.partial.$$"
    rm -rf -- "$REPLY_PARTIAL"
    CLEANUP+=("$REPLY_PARTIAL")
    REPLY=$out
}

dump_dir_finish() {  # PARTIAL OUT ERRFILE: flush the complete dump and rename it into place -> REPLY: its bytes
    if ! sync -f -- "$1" 2>"$3"; then
        is_no_space "$3" && die 4 "no space left flushing the dump"
    fi
    mv -T -- "$1" "$2"
    local bytes
    bytes=$(du -s -b -- "$2")
    REPLY=${bytes%%$'\t'*}
}

cmd_fs_snapshot() {
    parse_flags "home snapshots name kind" "check-only remove" "$@"
    require snapshots name
    [[ -n ${FLAG[remove]:-} ]] || require home
    local kind=${FLAG[kind]:-btrfs} name=${FLAG[name]} home snapshots target err
    [[ $kind == btrfs ]] || die 2 "--kind must be btrfs (lvm and zfs snapshots are not supported)"
    [[ $name =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$ ]] || die 2 "--name must be a plain name"
    need btrfs
    make_work
    err="$WORK/btrfs.err"
    snapshots=$(realpath -m -- "${FLAG[snapshots]}")
    target="$snapshots/$name"
    if [[ -n ${FLAG[remove]:-} ]]; then
        local removed=false
        if [[ -e $target || -L $target ]]; then
            # Only a read-only subvolume (what this subcommand makes) is deleted: never a directory of someone's.
            [[ ! -L $target ]] && btrfs subvolume show -- "$target" >/dev/null 2>&1 &&
                [[ $(btrfs property get -ts -- "$target" ro 2>/dev/null) == "ro=true" ]] ||
                die 6 "refusing to remove $target: not a read-only snapshot"
            if ! btrfs subvolume delete -- "$target" >/dev/null 2>"$err"; then
                tail_of "$err"
                die 5 "cannot delete the snapshot $target: $REPLY"
            fi
            removed=true
        fi
        jstr "$target"
        printf '{"subcommand": "fs-snapshot", "version": "%s", "snapshot": %s, "removed": %s}\n' "$VERSION" "$REPLY" "$removed"
        return 0
    fi
    home=$(realpath -e -- "${FLAG[home]}" 2>/dev/null) || die 3 "the home does not exist: ${FLAG[home]}"
    if ! btrfs subvolume show -- "$home" >/dev/null 2>"$err"; then
        tail_of "$err"
        die 6 "the home $home is not the root of a btrfs subvolume: $REPLY"
    fi
    safe_dir "$snapshots" "snapshots directory"
    if [[ -n ${FLAG[check-only]:-} ]]; then
        jstr "$home"
        printf '{"subcommand": "fs-snapshot", "version": "%s", "home": %s, "check_only": true}\n' "$VERSION" "$REPLY"
        return 0
    fi
    [[ ! -e $target && ! -L $target ]] || die 6 "the snapshot already exists: $target"
    local start
    start=$(now_ns)
    if ! btrfs subvolume snapshot -r -- "$home" "$target" >/dev/null 2>"$err"; then
        tail_of "$err"
        [[ $REPLY == *"cross-device"* || $REPLY == *"not a btrfs filesystem"* ]] && die 6 "the snapshots directory $snapshots is not on the home's btrfs file system"
        is_no_space "$err" && die 4 "no space left for the snapshot: $REPLY"
        die 5 "btrfs subvolume snapshot failed: $REPLY"
    fi
    seconds_since "$start"
    local seconds=$REPLY jhome jtarget
    jstr "$home"
    jhome=$REPLY
    jstr "$target"
    jtarget=$REPLY
    printf '{"subcommand": "fs-snapshot", "version": "%s", "home": %s, "snapshot": %s, "seconds": %s}\n' \
        "$VERSION" "$jhome" "$jtarget" "$seconds"
}

cmd_pg_dump() {
    parse_flags "host port user dbname out jobs password-secret password-secret-key region $PROGRESS_FLAGS" "" "$@"
    require host user dbname out
    need pg_dump
    make_work
    progress_init
    check_dbname "${FLAG[dbname]}"
    pg_conn_flags
    local jobs=${FLAG[jobs]:-}
    if [[ -z $jobs ]]; then
        default_jobs
        jobs=$REPLY
    fi
    if ! is_uint "$jobs" || ((jobs < 1)); then die 2 "--jobs must be a positive number"; fi
    local out partial err="$WORK/pg_dump.err"
    dump_dir_start
    out=$REPLY partial=$REPLY_PARTIAL
    load_password

    local start rc=0
    start=$(now_ns)
    PROGRESS_PATH=$partial
    progress_start pg_dump "" measure_written first
    run_job "$WORK/pg_dump.out" "$err" pg_dump "${PGCONN[@]}" --dbname="${FLAG[dbname]}" --format=directory \
        --jobs="$jobs" --file="$partial" || rc=$?
    if ((rc != 0)); then
        tail_of "$err"
        pg_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} on ${FLAG[host]}:${FLAG[port]:-5432} (wrong or missing password): $REPLY"
        is_no_space "$err" && die 4 "no space left writing the dump: $REPLY"
        die 5 "pg_dump failed (exit $rc): $REPLY"
    fi
    dump_dir_finish "$partial" "$out" "$err"
    local bytes=$REPLY seconds files
    seconds_since "$start"
    seconds=$REPLY
    local -a entries=("$out"/*)
    files=${#entries[@]}
    progress_end pg_dump "$bytes"
    local jout jdb
    jstr "$out"
    jout=$REPLY
    jstr "${FLAG[dbname]}"
    jdb=$REPLY
    printf '{"subcommand": "pg-dump", "version": "%s", "dump": %s, "database": %s, "jobs": %s, "seconds": %s, "bytes": %s, "files": %s}\n' \
        "$VERSION" "$jout" "$jdb" "$jobs" "$seconds" "$bytes" "$files"
}

cmd_pg_restore() {
    parse_flags "dump host port user dbname jobs maintenance-db password-secret password-secret-key region comment" \
        "no-owner check-only" "$@"
    local check_only=${FLAG[check-only]:-}
    if [[ -n $check_only ]]; then require host user dbname; else require dump host user dbname; fi
    need pg_restore psql
    make_work
    check_dbname "${FLAG[dbname]}"
    pg_conn_flags
    local dump=${FLAG[dump]:-} name=${FLAG[dbname]} jobs=${FLAG[jobs]:-} err="$WORK/restore.err"
    [[ -n $check_only || ( -d $dump && -f $dump/toc.dat ) ]] || die 3 "not a pg_dump directory (no toc.dat): $dump"
    if [[ -z $jobs ]]; then
        default_jobs
        jobs=$REPLY
    fi
    if ! is_uint "$jobs" || ((jobs < 1)); then die 2 "--jobs must be a positive number"; fi
    load_password

    local exists
    if ! exists=$(printf "SELECT 1 FROM pg_database WHERE datname = :'dbname';\n" |
        psql_maint -v dbname="$name" 2>"$err"); then
        tail_of "$err"
        pg_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} (wrong or missing password): $REPLY"
        die 9 "cannot query the server: $REPLY"
    fi
    [[ -z $exists ]] || die 6 "refusing to restore: database $name already exists"
    if [[ -n $check_only ]]; then
        jstr "$name"
        printf '{"subcommand": "pg-restore", "version": "%s", "database": %s, "check_only": true, "exists": false}\n' \
            "$VERSION" "$REPLY"
        return 0
    fi

    local encoding="UTF8" line
    if pg_restore --list -- "$dump" >"$WORK/toc.txt" 2>"$err"; then
        while IFS= read -r line; do
            if [[ $line =~ ^\;[[:space:]]+Encoding:\ ([A-Za-z0-9_]+) ]]; then
                encoding=${BASH_REMATCH[1]}
                break
            fi
        done <"$WORK/toc.txt"
    else
        tail_of "$err"
        die 7 "cannot read the dump's table of contents: $REPLY"
    fi
    if ! printf "CREATE DATABASE :\"dbname\" TEMPLATE template0 ENCODING :'enc';\n" |
        psql_maint -v dbname="$name" -v enc="$encoding" >/dev/null 2>"$err"; then
        tail_of "$err"
        [[ $REPLY == *"already exists"* ]] && die 6 "refusing to restore: database $name already exists"
        die 9 "CREATE DATABASE $name failed: $REPLY"
    fi
    DROP_DB=$name
    if [[ -n ${FLAG[comment]:-} ]] &&
        ! printf "COMMENT ON DATABASE :\"dbname\" IS :'comment';\n" |
        psql_maint -v dbname="$name" -v comment="${FLAG[comment]}" >/dev/null 2>"$err"; then
        tail_of "$err"
        die 9 "cannot mark the new database $name: $REPLY"
    fi

    local -a args=("${PGCONN[@]}" --dbname="$name" --jobs="$jobs" --exit-on-error)
    [[ -n ${FLAG[no-owner]:-} ]] && args+=(--no-owner)
    local start rc=0
    start=$(now_ns)
    run_job "$WORK/restore.out" "$err" pg_restore "${args[@]}" -- "$dump" || rc=$?
    if ((rc != 0)); then
        tail_of "$err"
        pg_auth_failed "$err" && die 8 "authentication failed during pg_restore: $REPLY"
        die 9 "pg_restore into $name failed (exit $rc): $REPLY"
    fi
    DROP_DB=""
    seconds_since "$start"
    local seconds=$REPLY jname
    jstr "$name"
    jname=$REPLY
    printf '{"subcommand": "pg-restore", "version": "%s", "database": %s, "encoding": "%s", "jobs": %s, "seconds": %s}\n' \
        "$VERSION" "$jname" "$encoding" "$jobs" "$seconds"
}

cmd_pg_drop() {
    parse_flags "host port user dbname comment maintenance-db password-secret password-secret-key region" "" "$@"
    require host user dbname comment
    need psql
    make_work
    check_dbname "${FLAG[dbname]}"
    pg_conn_flags
    local name=${FLAG[dbname]} err="$WORK/drop.err" found
    load_password
    # "x" + the comment when the database exists (whatever its comment), nothing when it does not.
    if ! found=$(printf "SELECT 'x' || coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = :'dbname';\n" |
        psql_maint -v dbname="$name" 2>"$err"); then
        tail_of "$err"
        pg_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} (wrong or missing password): $REPLY"
        die 9 "cannot query the server: $REPLY"
    fi
    local dropped=false jname
    if [[ -n $found ]]; then
        [[ $found == "x${FLAG[comment]}" ]] || die 6 "refusing to drop $name: it was not created by this restore"
        if ! printf 'DROP DATABASE :"dbname";\n' | psql_maint -v dbname="$name" >/dev/null 2>"$err"; then
            tail_of "$err"
            die 9 "DROP DATABASE $name failed: $REPLY"
        fi
        dropped=true
    fi
    jstr "$name"
    jname=$REPLY
    printf '{"subcommand": "pg-drop", "version": "%s", "database": %s, "dropped": %s}\n' "$VERSION" "$jname" "$dropped"
}

cmd_mysql_dump() {
    parse_flags "host port user dbname out password-secret password-secret-key region $PROGRESS_FLAGS" "" "$@"
    require host user dbname out
    mysql_tools dump
    make_work
    progress_init
    local db=${FLAG[dbname]}
    check_mysql_name "$db"
    local out partial err="$WORK/mysqldump.err"
    dump_dir_start
    out=$REPLY partial=$REPLY_PARTIAL
    load_password MYSQL_PWD
    mysql_conn
    mysql_exists "$db"
    [[ -n $REPLY ]] || die 3 "database $db does not exist on ${FLAG[host]}:${FLAG[port]:-3306}"
    local charset
    if ! charset=$(printf "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '%s';\n" "$db" |
        mysql_query 2>"$err"); then
        mysql_error "$err"
        die 5 "cannot read the character set of $db: $REPLY"
    fi
    mkdir -m 0700 -- "$partial"
    printf '%s\n' "$charset" >"$partial/charset"

    local start rc=0
    start=$(now_ns)
    PROGRESS_PATH=$partial
    progress_start mysqldump "" measure_written first
    # --single-transaction: one consistent InnoDB snapshot without locking the tables (Bitbucket's are InnoDB);
    # no --routines/--events: Bitbucket's schema has none, and they need privileges its user need not have.
    run_job "$WORK/mysqldump.out" "$err" "$MYSQL_DUMP" --defaults-file="$MYSQL_CNF" --single-transaction --quick \
        --hex-blob --triggers --no-tablespaces --default-character-set=utf8mb4 --result-file="$partial/dump.sql" \
        "$db" || rc=$?
    if ((rc != 0)); then
        mysql_error "$err"
        mysql_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} on ${FLAG[host]}:${FLAG[port]:-3306} (wrong or missing password): $REPLY"
        is_no_space "$err" && die 4 "no space left writing the dump: $REPLY"
        die 5 "mysqldump failed (exit $rc): $REPLY"
    fi
    dump_dir_finish "$partial" "$out" "$err"
    local bytes=$REPLY seconds
    seconds_since "$start"
    seconds=$REPLY
    progress_end mysqldump "$bytes"
    local jout jdb
    jstr "$out"
    jout=$REPLY
    jstr "$db"
    jdb=$REPLY
    printf '{"subcommand": "mysql-dump", "version": "%s", "dump": %s, "database": %s, "seconds": %s, "bytes": %s, "files": 2}\n' \
        "$VERSION" "$jout" "$jdb" "$seconds" "$bytes"
}

MYSQL_MARKER="bitbucket_backup_restore"  # the table that marks a database a restore created

cmd_mysql_restore() {
    parse_flags "dump host port user dbname password-secret password-secret-key region comment" "check-only" "$@"
    local check_only=${FLAG[check-only]:-}
    if [[ -n $check_only ]]; then require host user dbname; else require dump host user dbname; fi
    mysql_tools
    make_work
    local dump=${FLAG[dump]:-} name=${FLAG[dbname]} comment=${FLAG[comment]:-} err="$WORK/restore.err"
    check_mysql_name "$name"
    [[ -z $comment || $comment =~ ^[A-Za-z0-9\ :._/-]{1,300}$ ]] || die 2 "--comment must be plain text"
    [[ -n $check_only || ( -d $dump && -f $dump/dump.sql ) ]] || die 3 "not a mysqldump directory (no dump.sql): $dump"
    load_password MYSQL_PWD
    mysql_conn
    mysql_exists "$name"
    [[ -z $REPLY ]] || die 6 "refusing to restore: database $name already exists"
    if [[ -n $check_only ]]; then
        jstr "$name"
        printf '{"subcommand": "mysql-restore", "version": "%s", "database": %s, "check_only": true, "exists": false}\n' \
            "$VERSION" "$REPLY"
        return 0
    fi

    # mysqldump ends a dump it finished with this comment: a cut-off dump would restore a partial database.
    local last=""
    last=$(tail -c 200 -- "$dump/dump.sql" | tr -d '\r') || true
    [[ $last == *"-- Dump completed"* ]] || die 7 "the dump is incomplete: mysqldump did not finish it"
    local charset="utf8mb4" collation="utf8mb4_bin" line=""
    [[ ! -f $dump/charset ]] || read -r line <"$dump/charset" || true
    if [[ $line =~ ^([A-Za-z0-9_]{1,64})\ ([A-Za-z0-9_]{1,64})$ ]]; then
        charset=${BASH_REMATCH[1]} collation=${BASH_REMATCH[2]}
    fi
    if ! printf 'CREATE DATABASE `%s` CHARACTER SET %s COLLATE %s;\n' "$name" "$charset" "$collation" |
        mysql_query >/dev/null 2>"$err"; then
        mysql_error "$err"
        [[ $REPLY == *"database exists"* ]] && die 6 "refusing to restore: database $name already exists"
        die 9 "CREATE DATABASE $name failed: $REPLY"
    fi
    DROP_DB=$name DROP_ENGINE=mysql
    if [[ -n $comment ]] &&
        ! printf "CREATE TABLE \`%s\`.\`%s\` (marker varchar(300) NOT NULL);\nINSERT INTO \`%s\`.\`%s\` VALUES ('%s');\n" \
            "$name" "$MYSQL_MARKER" "$name" "$MYSQL_MARKER" "$comment" | mysql_query >/dev/null 2>"$err"; then
        mysql_error "$err"
        die 9 "cannot mark the new database $name: $REPLY"
    fi

    local start rc=0
    start=$(now_ns)
    JOB_STDIN="$dump/dump.sql"
    run_job "$WORK/restore.out" "$err" "$MYSQL_CLIENT" --defaults-file="$MYSQL_CNF" --batch \
        --default-character-set=utf8mb4 --database="$name" || rc=$?
    JOB_STDIN=""
    if ((rc != 0)); then
        mysql_error "$err"
        mysql_auth_failed "$err" && die 8 "authentication failed while loading the dump: $REPLY"
        die 9 "loading the dump into $name failed (exit $rc): $REPLY"
    fi
    DROP_DB=""
    seconds_since "$start"
    local seconds=$REPLY jname
    jstr "$name"
    jname=$REPLY
    printf '{"subcommand": "mysql-restore", "version": "%s", "database": %s, "charset": "%s", "collation": "%s", "seconds": %s}\n' \
        "$VERSION" "$jname" "$charset" "$collation" "$seconds"
}

cmd_mysql_drop() {
    parse_flags "host port user dbname comment password-secret password-secret-key region" "" "$@"
    require host user dbname comment
    mysql_tools
    make_work
    local name=${FLAG[dbname]} err="$WORK/drop.err" marker
    check_mysql_name "$name"
    load_password MYSQL_PWD
    mysql_conn
    mysql_exists "$name"
    local dropped=false jname
    if [[ -n $REPLY ]]; then
        marker=$(printf 'SELECT marker FROM `%s`.`%s`;\n' "$name" "$MYSQL_MARKER" | mysql_query 2>"$err") ||
            die 6 "refusing to drop $name: it was not created by this restore"
        [[ $marker == "${FLAG[comment]}" ]] || die 6 "refusing to drop $name: it was not created by this restore"
        if ! printf 'DROP DATABASE `%s`;\n' "$name" | mysql_query >/dev/null 2>"$err"; then
            mysql_error "$err"
            die 9 "DROP DATABASE $name failed: $REPLY"
        fi
        dropped=true
    fi
    jstr "$name"
    jname=$REPLY
    printf '{"subcommand": "mysql-drop", "version": "%s", "database": %s, "dropped": %s}\n' "$VERSION" "$jname" "$dropped"
}

cmd_archive() {
    parse_flags "staging dump out backup-id instance bitbucket-version compressor $PROGRESS_FLAGS" "overwrite" "$@"
    require staging out backup-id instance
    need tar sha256sum
    local staging dump="" out outdir outbase
    [[ -d ${FLAG[staging]} ]] || die 3 "staging directory not found: ${FLAG[staging]}"
    staging=$(realpath -e -- "${FLAG[staging]}")
    if [[ -n ${FLAG[dump]:-} ]]; then
        [[ -d ${FLAG[dump]} ]] || die 3 "dump directory not found: ${FLAG[dump]}"
        dump=$(realpath -e -- "${FLAG[dump]}")
    fi
    out=$(realpath -m -- "${FLAG[out]}")
    outdir=${out%/*}
    outdir=${outdir:-/}
    outbase=${out##*/}
    [[ $staging != / && $dump != / ]] || die 2 "refusing to archive /"
    [[ $out != "$staging"/* && ( -z $dump || $out != "$dump"/* ) ]] || die 2 "--out must not be inside what is archived"
    if [[ -n $dump ]]; then
        [[ $dump != "$staging" && $dump != "$staging"/* && $staging != "$dump"/* ]] ||
            die 2 "--dump and --staging must not contain each other"
        [[ ${dump##*/} != manifest.json ]] || die 2 "the dump directory must not be named manifest.json"
    fi
    [[ -d $outdir ]] || die 3 "the output directory does not exist: $outdir"
    safe_dir "$outdir" "archive work directory"
    [[ ! -e $out || -n ${FLAG[overwrite]:-} ]] || die 6 "the archive already exists: $out (use --overwrite)"

    local compressor=${FLAG[compressor]:-auto} named=""
    case $outbase in
        *.tar.gz | *.tgz) named=gzip ;;
        *.tar.zst | *.tzst) named=zstd ;;
    esac
    case $compressor in
        auto)
            if [[ -n $named ]]; then
                compressor=$named
            elif command -v zstd >/dev/null 2>&1; then
                compressor=zstd
            else
                compressor=gzip
            fi
            ;;
        gzip | zstd) [[ -z $named || $named == "$compressor" ]] || die 2 "--out $outbase names $named, not $compressor" ;;
        *) die 2 "--compressor must be auto, gzip or zstd" ;;
    esac
    need "$compressor"
    make_work
    progress_init

    # The archive and its manifest are written beside the final name (same file system: the rename is atomic), under
    # hidden names; stale ones of an interrupted run are removed first. File lists and error output go to $WORK.
    local p stage
    for p in "$outdir/.$outbase.partial."* "$outdir/.$outbase.stage."*; do rm -rf -- "$p"; done
    stage=$(mktemp -d "$outdir/.$outbase.stage.XXXXXX" 2>/dev/null) ||
        die 4 "cannot create a temporary directory in $outdir (no space left?)"
    CLEANUP+=("$stage")
    local tmp="$outdir/.$outbase.partial.$$" err="$WORK/tar.err"
    CLEANUP+=("$tmp")
    local start
    start=$(now_ns)

    # The manifest: every regular file, its size and SHA-256.
    local -a rel=() size=() sum=()
    list_files "$staging" "home/" "$MARKER"
    hash_files || die 5 "cannot read $staging: $REPLY"
    rel=("${L_REL[@]}")
    size=("${L_SIZE[@]}")
    sum=("${L_SUM[@]}")
    if [[ -n $dump ]]; then
        list_files "$dump" "db/"
        hash_files || die 5 "cannot read $dump: $REPLY"
        rel+=("${L_REL[@]}")
        size+=("${L_SIZE[@]}")
        sum+=("${L_SUM[@]}")
    fi
    local total=0 i
    for i in "${size[@]}"; do total=$((total + i)); done
    local created jid jinst jver jhost
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    jstr "${FLAG[backup-id]}"
    jid=$REPLY
    jstr "${FLAG[instance]}"
    jinst=$REPLY
    if [[ -n ${FLAG[bitbucket-version]:-} ]]; then
        jstr "${FLAG[bitbucket-version]}"
        jver=$REPLY
    else
        jver=null
    fi
    jstr "$(uname -n)"
    jhost=$REPLY
    write_manifest() {
        local f="$stage/manifest.json" n=${#rel[@]} j
        {
            printf '{\n  "format": %s,\n  "tool": "%s",\n  "tool_version": "%s",\n' "$MANIFEST_FORMAT" "$PROG" "$VERSION" &&
                printf '  "backup_id": %s,\n  "instance": %s,\n  "bitbucket_version": %s,\n' "$jid" "$jinst" "$jver" &&
                printf '  "created": "%s",\n  "host": %s,\n  "compressor": "%s",\n' "$created" "$jhost" "$compressor" &&
                printf '  "parts": {"home": true, "db": %s},\n' "$([[ -n $dump ]] && echo true || echo false)" &&
                printf '  "file_count": %s,\n  "total_bytes": %s,\n  "files": [\n' "$n" "$total" || return 1
            local sep=","
            for ((j = 0; j < n; j++)); do
                json_escape "${rel[j]}"
                ((j < n - 1)) || sep=""
                printf '    {"sha256": "%s", "size": %s, "path": "%s"}%s\n' "${sum[j]}" "${size[j]}" "$REPLY" "$sep" ||
                    return 1
            done
            printf '  ]\n}\n' || return 1
        } >"$f"
    }
    if ! write_manifest 2>"$err"; then
        is_no_space "$err" && die 4 "no space left in $outdir writing the manifest"
        tail_of "$err"
        die 5 "cannot write the manifest: $REPLY"
    fi

    # The archive: manifest.json, then the staging copy as home/, then the dump as db/.
    # Member names: "./<staging base>/..." for the home, "<dump base>/..." for the dump, renamed to home/ and db/.
    # GNU tar applies every --transform to every name in turn: the dump's first (it cannot match a "./" name),
    # then the staging's (it cannot match "db/..."). S: symbolic link targets are left alone.
    local sparent=${staging%/*} sbase=${staging##*/} sre
    sparent=${sparent:-/}
    regex_escape "$sbase"
    sre=$REPLY
    compress_program "$compressor"
    local -a targs=(--create --file="$tmp" --use-compress-program="$REPLY")
    if [[ -n $dump ]]; then
        local dbase=${dump##*/} dre
        regex_escape "$dbase"
        dre=$REPLY
        targs+=(--transform="s,^$dre\\(/\\|\$\\),db\\1,S")
    fi
    targs+=(--transform="s,^\\./$sre\\(/\\|\$\\),home\\1,S"
        -C "$stage" manifest.json
        --anchored --no-wildcards --exclude="./$sbase/$MARKER"
        -C "$sparent" "./$sbase")
    if [[ -n $dump ]]; then
        local dparent=${dump%/*}
        dparent=${dparent:-/}
        targs+=(-C "$dparent" "$dbase")
    fi
    local rc=0
    progress_start archive "$total" measure_read
    run_job "$WORK/tar.out" "$err" tar "${targs[@]}" || rc=$?
    if ((rc != 0)); then
        tail_of "$err"
        is_no_space "$err" && die 4 "no space left in $outdir writing the archive: $REPLY"
        die 5 "tar failed (exit $rc): $REPLY"
    fi
    progress_end archive "$total"
    if ! sync -- "$tmp" 2>"$err"; then
        tail_of "$err"
        is_no_space "$err" && die 4 "no space left in $outdir flushing the archive: $REPLY"
        die 5 "cannot flush the archive: $REPLY"
    fi
    # A truncated or short-written file fails the compressor's own integrity test.
    rc=0
    run_job "$WORK/test.out" "$err" "$compressor" -t -q -- "$tmp" || rc=$?
    if ((rc != 0)); then
        tail_of "$err"
        die 4 "the written archive does not pass $compressor -t (short write?): $REPLY"
    fi
    local digest bytes
    digest=$(sha256sum -- "$tmp")
    digest=${digest#\\}
    digest=${digest:0:64}
    bytes=$(stat -c %s -- "$tmp")
    mv -T -- "$tmp" "$out"
    seconds_since "$start"
    local seconds=$REPLY jout
    jstr "$out"
    jout=$REPLY
    printf '{"subcommand": "archive", "version": "%s", "archive": %s, "bytes": %s, "sha256": "%s", "compressor": "%s", ' \
        "$VERSION" "$jout" "$bytes" "$digest" "$compressor"
    printf '"backup_id": %s, "instance": %s, "files": %s, "content_bytes": %s, "seconds": %s}\n' \
        "$jid" "$jinst" "${#rel[@]}" "$total" "$seconds"
}

extract_into() {  # extract_into ARCHIVE DIR: untar and check against the manifest (dies 4/7 on failure)
    local archive=$1 dir=$2 err="$WORK/untar.err" rc=0
    detect_compressor "$archive"
    local compressor=$REPLY
    need "$compressor"
    compress_program "$compressor"
    run_job "$WORK/untar.out" "$err" tar --extract --file="$archive" --use-compress-program="$REPLY" -C "$dir" ||
        rc=$?
    if ((rc != 0)); then
        tail_of "$err"
        is_no_space "$err" && die 4 "no space left in $dir extracting the archive: $REPLY"
        die 7 "the archive is corrupt or truncated (tar exit $rc): $REPLY"
    fi
    check_tree "$dir"
    X_COMPRESSOR=$compressor
}

cmd_verify() {
    parse_flags "archive scratch" "" "$@"
    require archive
    need tar sha256sum
    local archive=${FLAG[archive]}
    [[ -f $archive ]] || die 3 "archive not found: $archive"
    local scratch=${FLAG[scratch]:-${TMPDIR:-/tmp}} dir
    [[ -d $scratch ]] || die 3 "scratch directory not found: $scratch"
    make_work
    dir=$(mktemp -d "$scratch/.$PROG-verify.XXXXXX" 2>/dev/null) || die 4 "cannot create a temporary directory in $scratch"
    CLEANUP+=("$dir")
    local start
    start=$(now_ns)
    extract_into "$archive" "$dir"
    seconds_since "$start"
    local seconds=$REPLY jar
    jstr "$(realpath -e -- "$archive")"
    jar=$REPLY
    printf '{"subcommand": "verify", "version": "%s", "archive": %s, "ok": true, "backup_id": "%s", "instance": "%s", "compressor": "%s", "files": %s, "content_bytes": %s, "seconds": %s}\n' \
        "$VERSION" "$jar" "$M_BACKUP_ID" "$M_INSTANCE" "$X_COMPRESSOR" "$C_FILES" "$C_BYTES" "$seconds"
}

cmd_extract() {
    parse_flags "archive target owner" "" "$@"
    require archive target
    need tar sha256sum
    local archive=${FLAG[archive]} target owner=${FLAG[owner]:-}
    [[ -f $archive ]] || die 3 "archive not found: $archive"
    if [[ -n $owner ]]; then
        id -u -- "$owner" >/dev/null 2>&1 || die 2 "unknown user for --owner: $owner"
    fi
    target=$(realpath -m -- "${FLAG[target]}")
    # The path was checked against the allowed restore roots as given: one through a symbolic link could land elsewhere.
    [[ $target == "${FLAG[target]%/}" ]] || die 6 "the target ${FLAG[target]} is not a plain path (it resolves to $target)"
    local made=0
    if [[ -e $target ]]; then
        [[ -d $target ]] || die 6 "the target exists and is not a directory: $target"
        dir_is_empty "$target" || die 6 "refusing to extract into a non-empty directory: $target"
    else
        mkdir -p -- "$target" 2>/dev/null || die 4 "cannot create $target (no space left?)"
        made=1
    fi
    make_work
    local partial
    partial=$(mktemp -d "$target/.extract.XXXXXX" 2>/dev/null) || die 4 "cannot create a temporary directory in $target"
    CLEANUP+=("$partial")
    local start
    start=$(now_ns)
    extract_into "$archive" "$partial"
    local e extracted=()
    # The manifest first: a cleanup (RemoveRestoredHome) removes what lies beside a manifest of this backup only, so a
    # move cut short by a cancel must never leave home/ or db/ in the target without it.
    mv -- "$partial/manifest.json" "$target/" && extracted+=("$target/manifest.json")
    shopt -s dotglob
    for e in "$partial"/*; do mv -- "$e" "$target/" && extracted+=("$target/${e##*/}"); done
    shopt -u dotglob
    rmdir -- "$partial"
    if [[ -n $owner ]]; then
        # Re-own what was extracted (and the target if this run made it), never a directory that was there before.
        ((made)) && extracted=("$target")
        if ((${#extracted[@]})); then
            chown -R -- "$owner:" "${extracted[@]}" 2>/dev/null || chown -R -- "$owner" "${extracted[@]}" ||
                die 5 "chown -R $owner $target failed"
        fi
    fi
    seconds_since "$start"
    local seconds=$REPLY jt
    jstr "$target"
    jt=$REPLY
    printf '{"subcommand": "extract", "version": "%s", "target": %s, "backup_id": "%s", "instance": "%s", "files": %s, "content_bytes": %s, "seconds": %s}\n' \
        "$VERSION" "$jt" "$M_BACKUP_ID" "$M_INSTANCE" "$C_FILES" "$C_BYTES" "$seconds"
}

aws_region_args() {
    AWS_ARGS=()
    [[ -n ${FLAG[region]:-} ]] && AWS_ARGS+=(--region "${FLAG[region]}")
    return 0
}

aws_fail() {  # aws_fail WHAT ERRFILE
    tail_of "$2"
    is_no_space "$2" && die 4 "no space left during $1: $REPLY"
    die 10 "$1 failed: $REPLY"
}

cmd_upload() {
    parse_flags "file bucket key tags sha256 region multipart-above $PROGRESS_FLAGS" "" "$@"
    require file bucket key
    need aws
    make_work
    progress_init
    local file=${FLAG[file]} bucket=${FLAG[bucket]} key=${FLAG[key]} tags=${FLAG[tags]:-} sha=${FLAG[sha256]:-}
    local limit=${FLAG[multipart-above]:-$SINGLE_PUT_MAX}
    [[ -f $file ]] || die 3 "file not found: $file"
    is_uint "$limit" || die 2 "--multipart-above must be a number of bytes"
    if [[ -n $tags && ! $tags =~ ^[^\&=]+=[^\&]*(\&[^\&=]+=[^\&]*)*$ ]]; then
        die 2 "--tags must look like 'k=v&k2=v2' (URL-encoded)"
    fi
    [[ -z $sha || $sha =~ ^[0-9a-f]{64}$ ]] || die 2 "--sha256 must be 64 lowercase hex digits"
    aws_region_args
    local bytes err="$WORK/aws.err" result method
    bytes=$(stat -c %s -- "$file")
    local -a meta=()
    [[ -n $sha ]] && meta=(--metadata "sha256=$sha")
    PROGRESS_PATH=$(realpath -e -- "$file")
    progress_start upload "$bytes" measure_file_offset
    if ((bytes <= limit)); then
        method=put-object
        local -a args=(s3api put-object --bucket "$bucket" --key "$key" --body "$file" "${meta[@]}")
        [[ -n $tags ]] && args+=(--tagging "$tags")
        run_job "$WORK/aws.out" "$err" aws "${AWS_ARGS[@]}" "${args[@]}" --query '[ETag, VersionId]' --output text ||
            aws_fail "put-object s3://$bucket/$key" "$err"
    else
        method=multipart
        run_job "$WORK/cp.out" "$err" aws "${AWS_ARGS[@]}" s3 cp --only-show-errors "${meta[@]}" -- "$file" \
            "s3://$bucket/$key" || aws_fail "multipart upload to s3://$bucket/$key" "$err"
        if [[ -n $tags ]]; then
            local tagset="" pair k v
            local -a pairs=()
            IFS='&' read -r -a pairs <<<"$tags"
            for pair in "${pairs[@]}"; do
                k=${pair%%=*}
                v=${pair#*=}
                k=${k//+/ }
                v=${v//+/ }
                printf -v k '%b' "${k//%/\\x}"
                printf -v v '%b' "${v//%/\\x}"
                jstr "$k"
                k=$REPLY
                jstr "$v"
                v=$REPLY
                tagset+="${tagset:+,}{\"Key\": $k, \"Value\": $v}"
            done
            run_job "$WORK/tag.out" "$err" aws "${AWS_ARGS[@]}" s3api put-object-tagging --bucket "$bucket" \
                --key "$key" --tagging "{\"TagSet\": [$tagset]}" || aws_fail "put-object-tagging s3://$bucket/$key" "$err"
        fi
        run_job "$WORK/aws.out" "$err" aws "${AWS_ARGS[@]}" s3api head-object --bucket "$bucket" --key "$key" \
            --query '[ETag, VersionId]' --output text || aws_fail "head-object s3://$bucket/$key" "$err"
    fi
    progress_end upload "$bytes"
    result=$(<"$WORK/aws.out")
    local etag=${result%%$'\t'*} version=""
    [[ $result == *$'\t'* ]] && version=${result#*$'\t'}
    etag=${etag//\"/}
    [[ $version == None ]] && version=""
    local jb jk je jv
    jstr "$bucket"
    jb=$REPLY
    jstr "$key"
    jk=$REPLY
    jstr "$etag"
    je=$REPLY
    if [[ -n $version ]]; then
        jstr "$version"
        jv=$REPLY
    else
        jv=null
    fi
    printf '{"subcommand": "upload", "version": "%s", "bucket": %s, "key": %s, "bytes": %s, "method": "%s", "etag": %s, "version_id": %s}\n' \
        "$VERSION" "$jb" "$jk" "$bytes" "$method" "$je" "$jv"
}

cmd_download() {
    parse_flags "bucket key file version-id region" "" "$@"
    require bucket key file
    need aws sha256sum
    make_work
    local bucket=${FLAG[bucket]} key=${FLAG[key]} file parent err="$WORK/aws.err"
    file=$(realpath -m -- "${FLAG[file]}")
    [[ ! -e $file ]] || die 6 "the file already exists: $file"
    parent=${file%/*}
    parent=${parent:-/}
    [[ -d $parent ]] || die 3 "the directory does not exist: $parent"
    safe_dir "$parent" "download directory"
    local tmp="$parent/.${file##*/}.partial.$$"
    CLEANUP+=("$tmp")
    aws_region_args
    local -a args=(s3api get-object --bucket "$bucket" --key "$key")
    [[ -n ${FLAG[version-id]:-} ]] && args+=(--version-id "${FLAG[version-id]}")
    run_job "$WORK/aws.out" "$err" aws "${AWS_ARGS[@]}" "${args[@]}" --query '[ContentLength, Metadata.sha256]' \
        --output text "$tmp" || aws_fail "get-object s3://$bucket/$key" "$err"
    [[ -f $tmp ]] || die 10 "get-object s3://$bucket/$key wrote no file"
    local result expected="" actual bytes
    result=$(<"$WORK/aws.out")
    [[ $result == *$'\t'* ]] && expected=${result#*$'\t'}
    [[ $expected =~ ^[0-9a-f]{64}$ ]] || expected=""
    actual=$(sha256sum -- "$tmp")
    actual=${actual#\\}
    actual=${actual:0:64}
    if [[ -n $expected && $expected != "$actual" ]]; then
        die 7 "downloaded s3://$bucket/$key has SHA-256 $actual, its metadata says $expected"
    fi
    bytes=$(stat -c %s -- "$tmp")
    mv -T -- "$tmp" "$file"
    local jf
    jstr "$file"
    jf=$REPLY
    printf '{"subcommand": "download", "version": "%s", "file": %s, "bytes": %s, "sha256": "%s", "sha256_checked": %s}\n' \
        "$VERSION" "$jf" "$bytes" "$actual" "$([[ -n $expected ]] && echo true || echo false)"
}

fsck_sample() {  # fsck_sample SAMPLE LABEL REPO...: git fsck a random sample; REPLY: their names (JSON), CHECKED: how many
    local sample=$1 label=$2 dir
    shift 2
    local -a picked=() names=()
    if (($# > 0 && sample > 0)); then
        mapfile -t picked < <(printf '%s\n' "$@" | shuf -n "$sample")
    fi
    for dir in "${picked[@]}"; do
        # A restored home belongs to Bitbucket's user, not to the one running the check.
        if ! git -c safe.directory='*' -C "$dir" fsck --full --no-progress >"$WORK/fsck.out" 2>"$WORK/fsck.err"; then
            tail_of "$WORK/fsck.err"
            die 7 "git fsck failed for ${label}repository ${dir##*/}: $REPLY"
        fi
        names+=("${dir##*/}")
    done
    CHECKED=${#names[@]}
    jarr "${names[@]}"
}

mesh_repositories() {  # mesh_repositories DIR: REPOS, the bare repositories under a Mesh node's home (its own layout)
    local head dir
    REPOS=()
    while IFS= read -r -d '' head; do
        dir=${head%/HEAD}
        [[ -d $dir/objects && -d $dir/refs && ! -L $dir ]] && REPOS+=("$dir")
    done < <(find "$1" -mindepth 2 -maxdepth 8 -type f -name HEAD -not -path '*/objects/*' -not -path '*/refs/*' \
        -not -path '*/logs/*' -print0 | sort -z)
}

cmd_drill_check() {
    parse_flags "home mesh-homes sample host port user dbname tables engine password-secret password-secret-key region" "" "$@"
    local home=${FLAG[home]:-} sample=${FLAG[sample]:-5}
    [[ -n $home || -n ${FLAG[mesh-homes]:-} || -n ${FLAG[dbname]:-} ]] ||
        die 2 "nothing to check: give --home, --mesh-homes and/or --dbname"
    is_uint "$sample" || die 2 "--sample must be a number"
    make_work
    local start jhome="null" jdb="null" jmesh="null"
    start=$(now_ns)
    if [[ -n ${FLAG[mesh-homes]:-} ]]; then
        need git shuf find
        local -a meshes=() entries=()
        local mesh jpath
        read -r -a meshes <<<"${FLAG[mesh-homes]}"
        for mesh in "${meshes[@]}"; do
            [[ $mesh == /* && -d $mesh && ! -L $mesh ]] || die 3 "the restored Mesh node home does not exist: $mesh"
            mesh_repositories "$mesh"
            fsck_sample "$sample" "Mesh node home $mesh: " "${REPOS[@]}"
            local checked=$REPLY
            jstr "$mesh"
            jpath=$REPLY
            entries+=("{\"home\": $jpath, \"repositories\": ${#REPOS[@]}, \"checked\": $CHECKED, \"fsck_ok\": $checked}")
        done
        jmesh="[$(IFS=,; printf '%s' "${entries[*]}")]"
    fi
    if [[ -n $home ]]; then
        need git shuf
        [[ -d $home ]] || die 3 "the restored home does not exist: $home"
        local -a repos=()
        local dir
        for dir in "$home"/shared/data/repositories/*/; do
            [[ ${dir%/} =~ /[0-9]+$ ]] && repos+=("${dir%/}")
        done
        fsck_sample "$sample" "" "${repos[@]}"
        local checked=$REPLY
        jhome="{\"repositories\": ${#repos[@]}, \"checked\": $CHECKED, \"fsck_ok\": $checked}"
    fi
    if [[ -n ${FLAG[dbname]:-} ]]; then
        require host user tables
        local tables=${FLAG[tables]} err="$WORK/query.err" found total engine=${FLAG[engine]:-postgresql}
        [[ $tables =~ ^[a-z_][a-z0-9_]*(,[a-z_][a-z0-9_]*)*$ ]] || die 2 "--tables must be table names separated by commas"
        if [[ $engine == mysql ]]; then
            mysql_tools
            check_mysql_name "${FLAG[dbname]}"
            load_password MYSQL_PWD
            mysql_conn
            local -a all=()
            local rows
            if ! rows=$(printf "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA = '%s' ORDER BY 1;\n" "${FLAG[dbname]}" |
                mysql_query 2>"$err"); then
                mysql_error "$err"
                mysql_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} (wrong or missing password): $REPLY"
                die 5 "cannot query database ${FLAG[dbname]} on ${FLAG[host]}:${FLAG[port]:-3306}: $REPLY"
            fi
            [[ -z $rows ]] || mapfile -t all <<<"$rows"
            local t
            found=""
            total=0
            for t in "${all[@]}"; do
                [[ $t == "$MYSQL_MARKER" ]] && continue  # the restore's marker is not Bitbucket's
                total=$((total + 1))
                [[ ",$tables," == *",$t,"* ]] && found+="${found:+,}$t"
            done
        elif [[ $engine == postgresql ]]; then
            need psql
            check_dbname "${FLAG[dbname]}"
            pg_conn_flags
            load_password
            FLAG[maintenance-db]=${FLAG[dbname]} # psql_maint connects to it: the restored database itself
            if ! found=$(printf "SELECT string_agg(table_name::text, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name = ANY (string_to_array(:'wanted', ','));\n" |
                psql_maint -v wanted="$tables" 2>"$err"); then
                tail_of "$err"
                pg_auth_failed "$err" && die 8 "authentication failed for user ${FLAG[user]} (wrong or missing password): $REPLY"
                die 5 "cannot query database ${FLAG[dbname]} on ${FLAG[host]}:${FLAG[port]:-5432}: $REPLY"
            fi
            total=$(printf "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema');\n" |
                psql_maint 2>"$err") || total=0
        else
            die 2 "--engine must be postgresql or mysql"
        fi
        local -a want=() have=() missing=()
        IFS=, read -r -a want <<<"$tables"
        IFS=, read -r -a have <<<"$found"
        local t
        for t in "${want[@]}"; do
            [[ ",$found," == *",$t,"* ]] || missing+=("$t")
        done
        ((${#missing[@]} == 0)) || die 7 "database ${FLAG[dbname]} lacks Bitbucket's tables: ${missing[*]}"
        local jname jfound
        jstr "${FLAG[dbname]}"
        jname=$REPLY
        jarr "${have[@]}"
        jfound=$REPLY
        jdb="{\"dbname\": $jname, \"tables_found\": $jfound, \"tables_total\": ${total:-0}}"
    fi
    seconds_since "$start"
    printf '{"subcommand": "drill-check", "version": "%s", "home": %s, "mesh": %s, "database": %s, "seconds": %s}\n' \
        "$VERSION" "$jhome" "$jmesh" "$jdb" "$REPLY"
}

cmd_workdir() {
    parse_flags "path" "" "$@"
    require path
    safe_dir "${FLAG[path]}"
    jstr "${FLAG[path]}"
    printf '{"subcommand": "workdir", "version": "%s", "path": %s}\n' "$VERSION" "$REPLY"
}

main() {
    (($#)) || {
        SUB=""
        die 2 "missing subcommand (rsync-home, fs-snapshot, pg-dump, pg-restore, pg-drop, mysql-dump, mysql-restore, mysql-drop, archive, verify, extract, upload, download, drill-check, workdir, version); see --help"
    }
    SUB=$1
    shift
    case $SUB in
        rsync-home) cmd_rsync_home "$@" ;;
        fs-snapshot) cmd_fs_snapshot "$@" ;;
        pg-dump) cmd_pg_dump "$@" ;;
        pg-restore) cmd_pg_restore "$@" ;;
        pg-drop) cmd_pg_drop "$@" ;;
        mysql-dump) cmd_mysql_dump "$@" ;;
        mysql-restore) cmd_mysql_restore "$@" ;;
        mysql-drop) cmd_mysql_drop "$@" ;;
        archive) cmd_archive "$@" ;;
        verify) cmd_verify "$@" ;;
        extract) cmd_extract "$@" ;;
        upload) cmd_upload "$@" ;;
        download) cmd_download "$@" ;;
        drill-check) cmd_drill_check "$@" ;;
        workdir) cmd_workdir "$@" ;;
        version | --version) SUB=version && cmd_version "$@" ;;
        help | --help | -h) usage ;;
        *)
            local name=$SUB
            SUB=""
            [[ $name == -* ]] && name="(a flag)"
            die 2 "unknown subcommand: $name"
            ;;
    esac
}

main "$@"
