"""The benchmark's measurement and report writer (no restic, borg or CBR run here)."""

import json
import sys

import pytest

from bench import chunker, report
from bench.measure import StepFailed, disk_usage, run_measured

TOOL_KEYS = {"full_s", "incr_s", "restore_s", "inplace_restore_s", "full_stored_bytes", "incr_added_bytes",
             "peak_rss_mb"}
GIB = 1 << 30


def fake_workloads():
    standard = {
        "workload": {"name": "standard", "size_bytes": GIB, "seed": 1,
                     "change": {"percent": 1.0, "block_bytes": 64 << 10, "blocks": 40}},  # 2.5 MiB changed
        "results": {
            "cbr": {"full_s": 2.2, "incr_s": 0.5, "restore_s": 1.1, "inplace_restore_s": 1.0,
                    "full_stored_bytes": 900, "incr_added_bytes": 10, "peak_rss_mb": 120.0, "restore_ok": True,
                    "restore_read_ratio": 1.02},
            "restic": {"full_s": 9.0, "incr_s": 5.0, "restore_s": 4.0, "inplace_restore_s": None,
                       "full_stored_bytes": 1000, "incr_added_bytes": 100, "peak_rss_mb": 90.0},
            "borg": {"full_s": 8.0, "incr_s": 4.0},  # missing keys become null
        },
        "service": {
            "xfs": {"full_s": 2.5, "incr_s": 2.0, "restore_s": 1.2, "restore_ok": True, "full_stored_bytes": 900,
                    "incr_added_bytes": 20, "peak_rss_mb": 250.0, "objects_per_gib": 40.0, "pool": "xfs",
                    "incr_read_bytes": 7 << 20,
                    "full_pairs": [{"cbr_s": 3.0, "peer_s": 8.0}, {"cbr_s": 3.6, "peer_s": 9.0},
                                   {"cbr_s": 2.8, "peer_s": 10.0}]},  # ratios 0.375, 0.4, 0.28
            "rbd": {"full_s": 3.0, "incr_s": 0.8, "restore_s": 2.5, "restore_ok": True, "full_stored_bytes": 950,
                    "incr_added_bytes": 25, "peak_rss_mb": 200.0, "objects_per_gib": 45.0, "pool": "rbd",
                    "incr_read_bytes": 3 << 20, "diff_iterate_block_bytes": 4 << 20},
            "ext4": {"full_s": 3.5, "incr_s": 3.0, "restore_s": 2.0, "restore_ok": True, "full_stored_bytes": 900,
                     "incr_added_bytes": 20, "peak_rss_mb": 310.0, "objects_per_gib": 41.0, "pool": "ext4"},
        },
    }
    usr = {
        "workload": {"name": "usr", "error": "the usr workload needs root (loop mounts)"},
        "results": {"restic": {"full_stored_bytes": 5000, "incr_added_bytes": 400}},
        "service": {"xfs": {"error": "not root: the XFS loop mount needs root", "pool": "xfs"}},
    }
    return {"standard": standard, "usr": usr}


S3 = {"server": "moto", "endpoint": "http://127.0.0.1:1", "workload": "standard", "full_objects": 30,
      "full_stored_bytes": GIB // 2, "objects_per_gib": 60.0, "restore_read_ratio": 1.3, "restore_ok": True,
      "requests_per_gib": {"full": {"PUT": 58.0, "LIST": 2.0}, "incr": {"PUT": 4.0}, "restore": {"GET": 70.0}}}


def test_report_evaluates_issue_10_targets_and_renders_both_tables(tmp_path):
    rep = report.build_report({"cpu_count": 2}, fake_workloads(), {"cbr_mb_s": 900.0, "pyfastcdc_mb_s": 1000.0},
                              ["warm cache"], S3)
    assert set(rep) == {"machine", "workloads", "s3", "chunker", "targets", "notes"}
    std = rep["workloads"]["standard"]
    for tool in ("cbr", "restic", "borg"):
        assert TOOL_KEYS <= set(std["results"][tool])
    assert std["results"]["borg"]["restore_s"] is None
    unmade = rep["workloads"]["usr"]["service"]["xfs"]  # the row says why, with null values
    assert unmade["full_s"] is None and unmade["peak_rss_mb"] is None and "needs root" in unmade["error"]
    assert std["ratios_to_restic"]["cbr (service, xfs pool)"]["full_s"] == round(2.5 / 9.0, 4)
    met = {t["measure"]: t["met"] for t in rep["targets"]}
    assert all(isinstance(t["met"], bool) and {"measure", "target", "value", "met"} <= set(t)
               for t in rep["targets"])
    assert met == {
        "service full backup (standard, xfs pool)": True,               # 2.5 / 9 <= 1/3
        "service full backup, median of alternating fresh pairs (standard, xfs pool)": False,  # 0.375 > 1/3
        "service incremental (standard, xfs pool)": True,               # 2 / 5 <= 1/2
        "service restore to a new disk (standard, xfs pool)": True,     # 1.2 / 4 <= 1/2
        "data path within 20% of the service path: full backup (standard, xfs pool)": True,   # 2.5 / 2.2
        "data path within 20% of the service path: incremental (standard, xfs pool)": False,  # 2.0 / 0.5
        "data path within 20% of the service path: restore (standard, xfs pool)": True,       # 1.2 / 1.1
        "stored after the full (standard, service, xfs pool)": True,
        "added by the incremental (standard, service, xfs pool)": True,  # 20 / 100
        "stored after the full (usr, service, xfs pool)": False,         # not measured
        "added by the incremental (usr, service, xfs pool)": False,
        "worker peak RSS (service path, all runs)": False,              # the ext4 run's 310 MB
        "store objects per GiB stored after the full (file-system store, service path)": True,
        "store objects per GiB stored after the full (S3 store, data path)": True,
        "restore reads vs bytes needed (file-system store, data path CLI, standard)": True,
        "restore reads vs bytes needed (S3 store, data path)": False,   # 1.3 > 1.1
        # issue 11
        "incremental reads vs changed bytes (standard, service, xfs pool)": True,            # 7 / 2.5 <= 3
        "service incremental (standard, xfs pool), issue 11": False,                         # 2 / 5 > 1/10
        "incremental reads vs diff_iterate, rounded to blocks (standard, service, rbd)": True,  # 3 / 4
        "service incremental (standard, rbd + rgw)": True,                                   # 0.8 / 5 <= 1/5
    }

    pairs = next(t for t in rep["targets"] if "median of alternating" in t["measure"])
    assert pairs["value"] == 0.375 and pairs["detail"] == ("3 pairs: ratios 0.28-0.40, service 2.80-3.60 s, "
                                                          "restic 8.00-10.00 s")

    paths = report.write_all(rep, tmp_path)
    written = json.loads(paths["json"].read_text())
    assert set(written) == set(rep) and written["workloads"]["standard"]["results"]["cbr"]["full_s"] == 2.2
    text = paths["markdown"].read_text()
    # The service path comes first, then the data path, the S3 figures and the targets.
    order = [text.index(h) for h in ("## Through the service", "## Data path", "## S3 store", "## Targets")]
    assert order == sorted(order)
    assert "| cbr (service, xfs pool) | 2.50 (0.28×) |" in text
    assert "| cbr (service, rbd + rgw) | 3.00 (0.33×) |" in text and "| 4.0 (0.75×) | ok |" in text
    assert "| cbr (service, ext4 pool) |" in text and "| cbr (data path CLI) | 2.20 (0.24×) |" in text
    assert "not measured: not root: the XFS loop mount needs root" in text
    assert "**usr**: not built: the usr workload needs root" in text
    assert "| full | 58.0 | 0.0 | 2.0 |" in text
    assert "not met" in text and "warm cache" in text
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_rbd_image_that_is_not_restics_file_meets_no_time_target():
    workloads = fake_workloads()
    workloads["standard"]["service"]["rbd"]["image_is_workload_file"] = False
    rep = report.build_report({}, workloads)
    target = next(t for t in rep["targets"] if t["measure"] == "service incremental (standard, rbd + rgw)")
    assert target["met"] is False and "not the workload's file" in target["detail"]


def test_missing_tool_meets_no_target():
    rep = report.build_report({}, {"standard": {"results": {"restic": fake_workloads()["standard"]["results"]
                                                            ["restic"]}}}, {})
    assert all(t["met"] is False for t in rep["targets"])
    assert rep["workloads"]["standard"]["results"]["cbr"] == {key: None for key in TOOL_KEYS}
    assert "# CBR benchmark" in report.markdown(rep)


@pytest.mark.parametrize("launcher", ["auto", "python"])
def test_peak_rss_is_the_child_s_own(tmp_path, launcher):
    ballast = bytearray(200 << 20)  # the harness's own peak must not show up in the tool's
    ballast[::4096] = b"1" * len(ballast[::4096])
    big = run_measured([sys.executable, "-c", "x = bytearray(150 << 20); x[::4096] = b'1' * len(x[::4096])"],
                       timeout=30, log_dir=tmp_path, label="big", launcher=launcher).check()
    small = run_measured(["true"], timeout=30, log_dir=tmp_path, label="small", launcher=launcher).check()
    assert 150 <= big.peak_rss_mb < 200
    assert small.peak_rss_mb < 40
    assert big.seconds > 0
    failing = run_measured(["false"], timeout=30, log_dir=tmp_path, label="false", launcher=launcher)
    assert failing.returncode == 1
    del ballast


def test_timeout_kills_and_reports(tmp_path):
    measured = run_measured(["sleep", "30"], timeout=0.3, log_dir=tmp_path, label="slow")
    assert measured.timed_out and measured.seconds < 10
    with pytest.raises(StepFailed):
        measured.check()


def test_disk_usage_counts_real_blocks(tmp_path):
    (tmp_path / "data").write_bytes(b"x" * 10000)
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(1 << 20)
    usage = disk_usage(tmp_path)
    assert usage["apparent_bytes"] == 10000 + (1 << 20)
    assert 10000 <= usage["bytes"] < (1 << 20)
    assert usage["files"] == 2


def test_chunker_cut_counting():
    assert chunker._count_cuts([10, 25, 40], 40) == 3
    assert chunker._count_cuts([10, 15, 15], 40) == 3
    with pytest.raises(ValueError):
        chunker._count_cuts([10, 20], 40)
    seconds, chunks = chunker.best_of(chunker.pyfastcdc_cutter(), bytes(range(256)) * 8192, rounds=1)
    assert chunks >= 1 and seconds >= 0


def test_restore_then_sync_runs_both_and_fails_with_the_tool(tmp_path):
    from bench.peers import Runner
    restored = tmp_path / "disk.raw"
    restored.write_bytes(b"x")
    ok = run_measured(Runner.then_sync(["true"], restored), timeout=30, log_dir=tmp_path, label="ok")
    assert ok.returncode == 0
    failed = run_measured(Runner.then_sync(["false"], restored), timeout=30, log_dir=tmp_path, label="failed")
    assert failed.returncode == 1
    missing = run_measured(Runner.then_sync(["true"], tmp_path / "nope"), timeout=30, log_dir=tmp_path,
                           label="missing")
    assert missing.returncode != 0  # sync of a file restic did not write fails the step


def test_ext4_pool_is_a_folder_removed_after_and_unknown_pools_are_refused(tmp_path):
    from bench import pools
    with pools.pool_folder("ext4", tmp_path, 1 << 30) as folder:
        assert folder.is_dir() and folder.parent == tmp_path
        (folder / "f").write_bytes(b"x")
    assert not folder.exists()
    with pytest.raises(ValueError):
        with pools.pool_folder("zfs", tmp_path, 1 << 30):
            pass
