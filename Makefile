# Everything a fresh machine lacks is installed by these targets: the virtual environment (.venv, from the
# pinned requirements.txt) and the pinned CDK CLI (node_modules, from package-lock.json).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
# Python caches what it compiles (__pycache__) unless this is set, and some machines set it (this one does). With
# pip's --no-compile below nothing is compiled ahead, so every process of the suite - workers, the hosts' AWS CLI,
# cfn-lint, app.py - compiled each module it imported from source, every time: 8 s instead of 2.5 s to import the
# stack's libraries. Unset, each module is compiled once, when first imported.
unexport PYTHONDONTWRITEBYTECODE
# Three workers on two cores: much of the suite waits (drains, Lambda timeouts, host commands, subprocesses), and a
# third worker fills those waits (the fault matrix: 133 s with two, 104 s with three, 98 s with four).
PYTEST_WORKERS ?= 3

.PHONY: help demo readme-samples test test-fast test-prerequisites bench bench-rsync lint typecheck synth deploy clean venv cdk-cli fault-matrix host-deps awscli checkov

help:
	@echo "make demo   - rehearse a full backup locally (simulator + moto), installing what it needs"
	@echo "make test   - lint, type-check and run every test"
	@echo "make test-fast - unit and template tests without the slow ones (the edit-test loop)"
	@echo "make bench  - measure lock window, orchestrator share, transitions, cost, import times, rsync passes"
	@echo "make synth  - cdk synth with the pinned CDK CLI (offline, no Docker)"
	@echo "make deploy - cdk deploy to the account of your AWS credentials"

$(VENV)/.installed: requirements.txt functions/requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

$(CDK): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

cdk-cli: $(CDK)

# DEMO_ARGS="--home-strategy rsync --db-strategy postgresql" rehearses the host-copy strategies with real bytes.
DEMO_ARGS ?=
demo: venv host-deps awscli
	$(PY) -m rehearsal $(DEMO_ARGS)

# The README's sample outputs (the demo, a configuration error) from real runs; a test checks that they still match.
readme-samples: venv host-deps awscli
	$(PY) -m rehearsal.readme_samples

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy functions stacks rehearsal bitbucket_backup_cli app.py

# The installs are independent of each other, and lint and type-check need only the venv: side by side they take
# the time of the longest. --no-compile above: Python compiles what a test imports, not all of aws-cdk-lib (74 s).
test:
	@$(MAKE) --no-print-directory -j4 test-prerequisites
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider --durations=15

test-prerequisites: venv cdk-cli host-deps awscli checkov lint typecheck

# The edit-test loop: unit and template tests, without those marked slow (subprocesses, extra synths).
test-fast: venv
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider -m "not slow" tests/unit tests/infra

# What the host-script tests run for real: rsync, git, a PostgreSQL 15 and a MariaDB server, btrfs-progs (the home
# snapshots, on a loop device); sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
host-deps:
	@command -v rsync >/dev/null || ($(APT_INSTALL) rsync)
	@command -v git >/dev/null || ($(APT_INSTALL) git)
	@test -x /usr/lib/postgresql/15/bin/initdb || ($(APT_INSTALL) postgresql-15)
	@test -x /usr/sbin/mariadbd || ($(APT_INSTALL) mariadb-server)
	@command -v mkfs.btrfs >/dev/null || ($(APT_INSTALL) btrfs-progs)

# The AWS CLI the host script calls (S3 upload, Secrets Manager), pinned, in its own environment: its botocore pin
# differs from boto3's. The rehearsal's hosts find it first on PATH and point it at moto on 127.0.0.1.
AWSCLI_VERSION := 1.45.11
.awscli/.installed:
	@test -x .awscli/bin/python || $(PYTHON) -m venv .awscli
	.awscli/bin/python -m pip install --quiet --disable-pip-version-check --no-compile "awscli==$(AWSCLI_VERSION)"
	@touch $@

awscli: .awscli/.installed

# checkov (tests/infra/test_checkov.py runs it on the synthesized templates), pinned with every dependency, in its own
# environment: its pins of boto3, packaging and networkx conflict with the project's.
CHECKOV_VERSION := 3.3.30
.checkov/.installed: checkov-constraints.txt
	@test -x .checkov/bin/python || $(PYTHON) -m venv .checkov
	.checkov/bin/python -m pip install --quiet --disable-pip-version-check --no-compile "checkov==$(CHECKOV_VERSION)" -c checkov-constraints.txt
	@touch $@

checkov: .checkov/.installed

bench: venv host-deps awscli
	$(PY) -m rehearsal.bench
	$(PY) -m rehearsal.bench_cold
	$(PY) -m rehearsal.bench_rsync

# The rsync passes of the host script on a generated ~1 GB and ~2 GB home of git repositories (minutes).
bench-rsync: venv host-deps awscli
	$(PY) -m rehearsal.bench_rsync

synth: venv cdk-cli
	$(CDK) synth --quiet

deploy: venv cdk-cli
	$(CDK) deploy

fault-matrix: venv
	$(PY) -m tests.integration.fault_matrix > docs/fault-matrix.md

clean:
	rm -rf cdk.out .build .pytest_cache .mypy_cache .ruff_cache .awscli .checkov
