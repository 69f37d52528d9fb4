"""The test cluster itself (cbr_devstack.ceph): what it exposes, and that a failed start leaves no daemon."""
from __future__ import annotations

import contextlib
import os
import urllib.request
from pathlib import Path

import pytest

from cbr_devstack.ceph import CephCluster
from cbr_devstack.processes import ServerError


def processes_using(folder: Path) -> list[int]:
    """Processes whose command line names the folder (every daemon gets the cluster's ceph.conf)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(folder).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_the_session_cluster_serves_rbd_and_s3(ceph):
    cluster = ceph.cluster
    assert cluster.is_running()
    assert cluster.keyring_path.exists()
    assert ceph.pool in cluster.admin_json("osd", "pool", "ls")
    assert cluster.admin_json("osd", "stat")["num_up_osds"] == 1
    handle = ceph.rados()
    try:
        assert ceph.pool in handle.list_pools()
    finally:
        handle.shutdown()
    with urllib.request.urlopen(ceph.endpoint_url + "/", timeout=10) as response:  # anonymous: an empty list
        assert response.status == 200 and b"ListAllMyBucketsResult" in response.read()
    assert set(processes_using(cluster.root)) == {process.pid for process in cluster._daemons.values()}
    assert cluster.env["CEPH_CONF"] == str(cluster.conf_path)


def test_a_failed_start_kills_what_it_started(tmp_path):
    cluster = CephCluster(tmp_path / "ceph", block_size_gib=0, rgw=False)  # the OSD's mkfs fails
    with pytest.raises(ServerError, match="mkfs"):
        cluster.start()
    assert not cluster.is_running()
    assert processes_using(cluster.root) == []
    assert (cluster.root / "log" / "mon.a.log").exists()  # the logs stay for the post-mortem


def test_a_second_start_in_the_same_folder_is_refused(ceph):
    with pytest.raises(ServerError, match="already"):
        CephCluster(ceph.cluster.root).start()
    assert ceph.cluster.is_running()
    assert os.path.exists(ceph.cluster.conf_path)
