"""`cbr policy` against the real policy service: a policy's whole life, updates that keep what they do not name,
and each failure's exit code and line."""
from __future__ import annotations

import asyncio
import uuid

from cbr.policy.v1 import policy_pb2 as pp
from tests.integration.cli.conftest import one_error_line
from tests.support.services import eventually

DAILY = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
WEEKLY = "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=22;BYMINUTE=30"


async def test_policy_life(cbr):
    policy = await cbr.json("policy", "create", "nightly", "--type", "backup", "--pattern", DAILY,
                            "--pattern", WEEKLY, "--max-backups", "10", "--day-backups", "7", "--week-backups", "4",
                            "--timezone", "Europe/Berlin", "--full-backup-interval", "5")
    policy_id = policy["policy_id"]
    assert (policy["name"], policy["operation_type"], policy["enabled"]) == ("nightly", "OPERATION_TYPE_BACKUP", True)
    assert policy["trigger"]["patterns"] == [DAILY, WEEKLY]
    assert policy["trigger"]["start_time"] == policy["created_time"]
    definition = policy["operation_definition"]
    assert (definition["max_backups"], definition["day_backups"], definition["week_backups"],
            definition["timezone"], definition["full_backup_interval"]) == (10, 7, 4, "Europe/Berlin", 5)
    replication = await cbr.json("policy", "create", "copy", "--type", "replication", "--pattern", WEEKLY,
                                 "--disabled", "--destination-region", "eu-de-2", "--destination-project", "far",
                                 "--retention-days", "30", "--start", "2030-01-01T00:00:00Z")
    assert replication["enabled"] is False and replication["trigger"]["start_time"] == "2030-01-01T00:00:00Z"

    table, replications, shown = await asyncio.gather(
        cbr.ok("policy", "list"), cbr.json("policy", "list", "--type", "replication"),
        cbr.ok("policy", "show", policy_id))
    row = next(line for line in table.stdout.splitlines() if policy_id[:8] in line)
    assert row.split()[1:4] == ["nightly", "backup", "yes"], table.stdout
    assert "10 newest, 7 days, 4 weeks" in row and "Europe/Berlin" in row
    assert "2 in all" in table.stdout
    assert replications["count"] == 1 and replications["items"][0]["policy_id"] == replication["policy_id"]
    assert "nightly" in shown.stdout and "FREQ=WEEKLY" in shown.stdout

    # The service replaces an operation definition whole; the command lays the options given over the old one.
    updated = await cbr.json("policy", "update", policy_id, "--name", "renamed", "--no-enabled", "--max-backups", "3")
    definition = updated["operation_definition"]
    assert (updated["name"], updated["enabled"], definition["max_backups"], definition["day_backups"],
            definition["timezone"]) == ("renamed", False, 3, 7, "Europe/Berlin")
    repatterned = await cbr.json("policy", "update", policy_id, "--pattern", "FREQ=DAILY;BYHOUR=1;BYMINUTE=0")
    assert repatterned["trigger"] == {"patterns": ["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"],
                                      "start_time": policy["trigger"]["start_time"]}
    unlimited = await cbr.json("policy", "update", policy_id, "--max-backups", "-1")
    assert "max_backups" not in unlimited["operation_definition"]
    assert unlimited["operation_definition"]["day_backups"] == 7

    deleted = await cbr.ok("policy", "delete", policy_id)
    assert deleted.stdout.strip() == f"deleted policy {policy_id}"
    gone = await cbr("policy", "show", policy_id)
    assert gone.code == 4 and "BackupService.6820" in one_error_line(gone)


async def test_policy_on_a_vault(cbr):
    policy, vault = await asyncio.gather(
        cbr.json("policy", "create", "p", "--type", "backup", "--pattern", DAILY),
        cbr.json("vault", "create", "v", "--type", "disk", "--size", "10G"))

    async def associate():
        # The vault service learns of the policy from its event: retry until it has.
        result = await cbr("vault", "associate-policy", vault["vault_id"], policy["policy_id"])
        return result.code == 0
    await eventually(associate)

    async def listed():
        reply = await cbr.json("policy", "list", "--vault", vault["vault_id"])
        return [p["policy_id"] for p in reply["items"]] == [policy["policy_id"]]
    await eventually(listed)
    shown = await cbr.ok("policy", "show", policy["policy_id"])
    assert vault["vault_id"] in shown.stdout  # the associated vaults' table
    preview = await cbr.json("policy", "preview", vault["vault_id"], "--max-backups", "3")
    assert preview.get("decisions", []) == []  # an empty vault: nothing to keep or delete
    ticks = await cbr.json("policy", "list-ticks", "--policy", policy["policy_id"])
    assert ticks["count"] == 0  # the daily pattern has not come round yet
    both = await cbr("policy", "preview", vault["vault_id"], "--policy", policy["policy_id"], "--max-backups", "3")
    assert both.code == 2


async def test_error_lines_and_exit_codes(cbr, services):
    limited = cbr.using(CBR_TOKEN=services.token(cbr.project_id, roles=("cbr_backups_vaults_full_access",)))
    bad_pattern, dense, unknown_type, no_pattern, not_found, nothing, denied, listed = await asyncio.gather(
        cbr("policy", "create", "p", "--type", "backup", "--pattern", "FREQ=HOURLY;BYHOUR=1;BYMINUTE=0"),
        cbr("policy", "create", "p", "--type", "backup", "--pattern", "FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"),
        cbr("policy", "create", "p", "--type", "archive", "--pattern", DAILY),
        cbr("policy", "create", "p", "--type", "backup"),
        cbr("policy", "show", str(uuid.uuid4())),
        cbr("policy", "update", str(uuid.uuid4())),
        limited("policy", "create", "p", "--type", "backup", "--pattern", DAILY),
        limited("policy", "list", "--json"))
    assert bad_pattern.code == 3 and bad_pattern.stdout == ""
    assert one_error_line(bad_pattern).startswith("error: INVALID_ARGUMENT (BackupService.6802): pattern 1")
    assert dense.code == 3 and "BackupService.6803" in one_error_line(dense)
    assert unknown_type.code == 2 and "invalid choice" in unknown_type.stderr
    assert no_pattern.code == 2 and "--pattern" in no_pattern.stderr
    assert not_found.code == 4 and one_error_line(not_found).startswith("error: NOT_FOUND (BackupService.6820)")
    assert nothing.code == 2 and "nothing to change" in one_error_line(nothing)
    assert denied.code == 7 and one_error_line(denied).startswith("error: PERMISSION_DENIED")
    assert listed.code == 0 and listed.json()["count"] == 0


async def test_every_policy_service_call_has_a_command(cbr):
    commands = {"CreatePolicy": "create", "GetPolicy": "show", "ListPolicies": "list", "UpdatePolicy": "update",
                "DeletePolicy": "delete", "PreviewRetention": "preview", "ListTicks": "list-ticks"}
    assert set(commands) == set(
        pp.DESCRIPTOR.services_by_name["PolicyService"].methods_by_name)
    helps = await asyncio.gather(*(cbr.ok("policy", command, "--help") for command in commands.values()))
    assert all(result.stdout.startswith(f"usage: cbr policy {command} ")
               for command, result in zip(commands.values(), helps))
