"""`cbr vault` against the real vault service: the whole life of a vault, and each failure's exit code and line."""
from __future__ import annotations

import asyncio
import uuid

from tests.integration.cli.conftest import one_error_line
from tests.support.services import eventually


async def test_vault_life(cbr):
    disks = [d["resource_id"] for d in await asyncio.gather(
        *(cbr.json("disk", "create", f"disk-{i}", "--size", "1M") for i in range(3)))]
    vault = await cbr.json("vault", "create", "vault-a", "--type", "disk", "--size", "10G",
                           "--resource", disks[0], "--tag", "env=prod", "--threshold", "70", "--no-smn-notify")
    vault_id = vault["vault_id"]
    assert (vault["object_type"], vault["protect_type"], vault["size_gb"]) == ("OBJECT_TYPE_DISK",
                                                                                "PROTECT_TYPE_BACKUP", "10")
    assert (vault["threshold"], vault["smn_notify"]) == (70, False)
    assert [r["resource_id"] for r in vault["resources"]] == [disks[0]]

    table, servers, holding, shown = await asyncio.gather(
        cbr.ok("vault", "list"), cbr.json("vault", "list", "--type", "server"),
        cbr.json("vault", "list", "--resource", disks[0]), cbr.ok("vault", "show", vault_id))
    row = next(line for line in table.stdout.splitlines() if vault_id[:8] in line)
    assert row.split()[1:5] == ["vault-a", "disk", "backup", "available"], table.stdout
    assert servers["count"] == 0
    assert holding["items"][0]["vault_id"] == vault_id
    assert "vault-a" in shown.stdout and "env=prod" in shown.stdout and disks[0] in shown.stdout

    updated, nothing = await asyncio.gather(
        cbr.json("vault", "update", vault_id, "--name", "vault-b", "--size", "20G", "--auto-expand"),
        cbr("vault", "update", vault_id))
    assert (updated["name"], updated["size_gb"], updated["auto_expand"]) == ("vault-b", "20", True)
    assert nothing.code == 2 and "nothing to change" in one_error_line(nothing)

    added = await cbr.ok("vault", "add-resources", vault_id, disks[1], disks[2])  # type taken from the vault
    assert disks[1] in added.stdout and disks[2] in added.stdout
    removed = await cbr.json("vault", "remove-resources", vault_id, disks[2])
    assert removed == {"removed_resource_ids": [disks[2]]}
    rules = await cbr.json("vault", "set-bind-rules", vault_id, "--rule", "backup=yes")
    assert rules["auto_bind"] is True and rules["bind_rules"] == [{"key": "backup", "value": "yes"}]
    assert [r["resource_id"] for r in rules["resources"]] == disks[:2]

    assert (await cbr.json("vault", "add-tags", vault_id, "team=ops", "env=dev"))["items"] == [
        {"key": "env", "value": "dev"}, {"key": "team", "value": "ops"}]
    assert (await cbr.json("vault", "remove-tags", vault_id, "env"))["items"] == [{"key": "team", "value": "ops"}]
    tags, project_tags = await asyncio.gather(cbr.ok("vault", "list-tags", vault_id),
                                              cbr.json("vault", "list-project-tags"))
    assert tags.stdout.splitlines()[2].split() == ["team", "ops"]
    assert project_tags["items"] == [{"key": "team", "values": ["ops"]}]

    deleted = await cbr("vault", "delete", vault_id, "--wait")
    assert deleted.code == 0, str(deleted)
    assert "vault_delete" in deleted.stdout and "success" in deleted.stdout
    assert "100%" in deleted.stderr  # the progress bar's last frame

    async def gone():  # the vault service drops the vault when it hears the backups are purged: soon after
        result = await cbr("vault", "show", vault_id)
        return result.code == 4 and "BackupService.6130" in one_error_line(result)
    await eventually(gone)


async def test_migrate_resources(cbr):
    disk, target = await asyncio.gather(cbr.json("disk", "create", "disk-m", "--size", "1M"),
                                        cbr.json("vault", "create", "dst", "--type", "disk", "--size", "10G"))
    disk = disk["resource_id"]
    source = await cbr.json("vault", "create", "src", "--type", "disk", "--size", "10G", "--resource", disk)
    moved = await cbr.json("vault", "migrate-resources", source["vault_id"], target["vault_id"], disk)
    assert moved == {"migrated_resource_ids": [disk]}
    assert [r["resource_id"] for r in (await cbr.json("vault", "show", target["vault_id"]))["resources"]] == [disk]
    started = await cbr.ok("vault", "delete", source["vault_id"])
    assert started.stdout.startswith(f"deleting vault {source['vault_id']}: task ")


async def test_vaults_are_encrypted_unless_asked(cbr):
    default, plain = await asyncio.gather(
        cbr.json("vault", "create", "enc", "--type", "disk", "--size", "1G"),
        cbr.json("vault", "create", "plain", "--type", "disk", "--size", "1G", "--unencrypted"))
    assert default["encrypted"] is True and plain["encrypted"] is False
    shown = await cbr.ok("vault", "show", plain["vault_id"])
    assert any(line.split() == ["encrypted", "no"] for line in shown.stdout.splitlines()), shown.stdout


async def test_error_lines_and_exit_codes(cbr, services):
    readonly = cbr.using(CBR_TOKEN=services.token(cbr.project_id, roles=("cbr_readonly",)))
    forged = cbr.using(CBR_TOKEN=services.token(cbr.project_id, secret="another-secret-of-32-bytes-or-more"))
    bad_name, unknown, not_usage, read, denied, anonymous, rejected = await asyncio.gather(
        cbr("vault", "create", "no spaces allowed", "--type", "disk", "--size", "10G"),
        cbr("vault", "show", str(uuid.uuid4())),
        cbr("vault", "create", "v", "--type", "tape", "--size", "1G"),
        readonly("vault", "list", "--json"),
        readonly("vault", "create", "v", "--type", "disk", "--size", "1G"),
        cbr.using(CBR_TOKEN="")("vault", "list"),
        forged("vault", "list"))

    assert bad_name.code == 3 and bad_name.stdout == ""
    line = one_error_line(bad_name)
    assert line.startswith("error: INVALID_ARGUMENT (BackupService.6401): vault name must be"), line
    assert unknown.code == 4 and one_error_line(unknown).startswith("error: NOT_FOUND (BackupService.6130): ")
    assert not_usage.code == 2 and "invalid choice" in not_usage.stderr
    assert read.code == 0 and read.json()["count"] == 0
    assert denied.code == 7 and one_error_line(denied).startswith("error: PERMISSION_DENIED")
    assert anonymous.code == 7 and one_error_line(anonymous).startswith("error: UNAUTHENTICATED")
    assert rejected.code == 7 and one_error_line(rejected).startswith("error: UNAUTHENTICATED")
