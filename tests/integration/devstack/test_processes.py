"""Process records: stopping only what was recorded, and telling a recorded process from a reused pid."""

from __future__ import annotations

import dataclasses
import sys

from cbr_devstack.processes import ProcessRecord, start_detached, stop_processes


def test_stop_processes_ends_a_recorded_process(tmp_path):
    process = start_detached([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "sleep.log")
    try:
        record = ProcessRecord.of("sleeper", process.pid)
        assert record.is_alive()

        assert stop_processes([record], timeout=5.0) == [record]

        assert not record.is_alive()
    finally:
        process.kill()
        process.wait()


def test_a_record_with_another_start_time_is_left_alone(tmp_path):
    process = start_detached([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "sleep.log")
    try:
        record = ProcessRecord.of("sleeper", process.pid)
        reused_pid = dataclasses.replace(record, start_ticks=record.start_ticks - 1)

        assert not reused_pid.is_alive()
        assert stop_processes([reused_pid], timeout=1.0) == []
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
