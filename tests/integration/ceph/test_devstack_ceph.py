"""`CBR_PROVIDER=ceph make up`: the embedded stack on a private Ceph cluster of its own under the run folder, disks
as RBD images and chunks in radosgw; `down` stops the cluster's daemons too and the next `up` resumes it with
its data."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cbr_devstack.ceph import PACKAGES, missing_tools


def devstack(run_dir, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", *args, "--run-dir", str(run_dir)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def cbr(run_dir, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "cbr_cli", "--env-file", str(run_dir / "cbr.env"), "--json", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_make_up_on_ceph_keeps_disks_on_rbd_across_down_and_up(tmp_path):
    if missing_tools():
        pytest.fail(f"Ceph is needed here: apt-get install {PACKAGES}")
    run_dir = tmp_path / "run"
    try:
        up = devstack(run_dir, "up", CBR_PROVIDER="ceph")
        assert up.returncode == 0, up.stdout + up.stderr
        names = [p["name"] for p in json.loads((run_dir / "processes.json").read_text())["processes"]]
        assert {"ceph-mon.a", "ceph-osd.0", "ceph-rgw", "backup", "worker"} <= set(names)
        disk = cbr(run_dir, "disk", "create", "on-rbd", "--size", "8MiB")
        assert disk["path"].startswith("rbd:rbd/dev/")  # project "dev" of the dev token: namespace dev

        down = devstack(run_dir, "down")
        assert down.returncode == 0 and "stopped ceph-osd.0" in down.stdout, down.stdout + down.stderr
        assert devstack(run_dir, "status").returncode == 3  # nothing runs, the cluster included
        refused = devstack(run_dir, "up", CBR_PROVIDER="local")  # the disks are on RBD: no silent switch
        assert refused.returncode == 1 and "ceph provider" in refused.stderr

        again = devstack(run_dir, "up")  # the kept choice; the cluster resumed with its images
        assert again.returncode == 0, again.stdout + again.stderr
        listed = cbr(run_dir, "disk", "list")
        assert [d["name"] for d in listed["items"]] == ["on-rbd"]
    finally:
        devstack(run_dir, "down")
        devstack(run_dir, "wipe")
