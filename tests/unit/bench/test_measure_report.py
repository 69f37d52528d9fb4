"""The benchmark's measurement and report writer (no restic, borg or CBR run here)."""

import json
import sys

import pytest

from bench import chunker, report
from bench.measure import StepFailed, disk_usage, run_measured

TOOL_KEYS = {"full_s", "incr_s", "restore_s", "inplace_restore_s", "full_stored_bytes", "incr_added_bytes",
             "peak_rss_mb"}


def fake_results():
    return {
        "cbr": {"full_s": 2.0, "incr_s": 0.5, "restore_s": 3.0, "inplace_restore_s": 1.0,
                "full_stored_bytes": 900, "incr_added_bytes": 10, "peak_rss_mb": 120.0, "restore_ok": True},
        "restic": {"full_s": 10.0, "incr_s": 5.0, "restore_s": 4.0, "inplace_restore_s": None,
                   "full_stored_bytes": 1000, "incr_added_bytes": 100, "peak_rss_mb": 90.0},
        "borg": {"full_s": 8.0, "incr_s": 4.0},  # missing keys become null
    }


def test_report_has_the_required_keys_and_evaluates_targets(tmp_path):
    rep = report.build_report({"cpu_count": 2}, {"size_bytes": 1 << 30, "seed": 1}, fake_results(),
                              {"cbr_mb_s": 900.0, "pyfastcdc_mb_s": 1000.0}, ["warm cache"])
    assert set(rep) == {"machine", "workload", "results", "chunker", "ratios", "targets", "service_path"}
    for tool in ("cbr", "restic", "borg"):
        assert TOOL_KEYS <= set(rep["results"][tool])
    assert rep["results"]["borg"]["restore_s"] is None
    assert {"cbr_mb_s", "pyfastcdc_mb_s"} <= set(rep["chunker"])
    assert rep["ratios"]["cbr_to_restic"]["full_s"] == 0.2
    met = {t["measure"]: t["met"] for t in rep["targets"]}
    assert len(rep["targets"]) == 7
    assert all(isinstance(t["met"], bool) and {"measure", "target", "value", "met"} <= set(t)
               for t in rep["targets"])
    assert met == {
        "full backup time": True,                      # 0.2 <= 1/4
        "incremental backup time": True,               # 0.1 <= 1/5
        "bytes added by the incremental": True,        # 0.1 <= 1/4
        "restore to a new disk": False,                # 0.75 > 1/2
        "stored bytes after the full backup": True,    # 0.9 <= 1
        "peak RSS of the backup process": True,        # 120 MB <= 300 MB
        "C chunker throughput": False,                 # 0.9 < 1
    }

    paths = report.write_all(rep, tmp_path)
    written = json.loads(paths["json"].read_text())
    assert set(written) == set(rep) and written["results"]["cbr"]["full_s"] == 2.0
    text = paths["markdown"].read_text()
    assert "| full backup (s) |" in text and "not met" in text and "warm cache" in text
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_tool_meets_no_target():
    rep = report.build_report({}, {}, {"restic": fake_results()["restic"]}, {})
    assert all(t["met"] is False for t in rep["targets"])
    assert rep["results"]["cbr"] == {key: None for key in TOOL_KEYS}


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
