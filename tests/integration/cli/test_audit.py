"""`cbr audit list` against the real services: the calls `cbr` made, with who made them, filtered and refused."""
from __future__ import annotations

from tests.integration.cli.conftest import one_error_line
from tests.support.services import eventually


async def test_audit_list_shows_the_calls_the_cli_made(cbr, services):
    vault = await cbr.json("vault", "create", "audited", "--type", "disk", "--size", "1G")
    refused = await cbr("vault", "create", "audited-2", "--type", "disk", "--size", "1G", "--threshold", "500")
    assert refused.code == 3, str(refused)

    async def both_recorded():
        listed = await cbr.json("audit", "list")
        assert listed["count"] == 2, listed
        return listed
    listed = await eventually(both_recorded)
    bad, good = listed["items"]  # newest first
    assert (good["method"], good["code"], good["subject"], good["project_id"]) == (
        "CreateVault", "OK", "tester", cbr.project_id)
    assert {"name": "vault_id", "value": vault["vault_id"]} in good["ids"]
    assert (bad["method"], bad["code"]) == ("CreateVault", "INVALID_ARGUMENT") and bad["cbr_code"]

    table, by_resource, errors, none = (
        await cbr.ok("audit", "list"),
        await cbr.json("audit", "list", "--resource", vault["vault_id"], "--method", "CreateVault"),
        await cbr.json("audit", "list", "--outcome", "error"),
        await cbr.json("audit", "list", "--since", "2999-01-01"))
    header, _, *rows = table.stdout.splitlines()
    assert header.split() == ["TIME", "PROJECT", "SUBJECT", "METHOD", "OUTCOME", "IDS"]
    assert f"vault_id={vault['vault_id'][:8]}" in rows[1] and "INVALID_ARGUMENT BackupService." in rows[0], table.stdout
    assert [e["event_id"] for e in by_resource["items"]] == [good["event_id"]]
    assert [e["event_id"] for e in errors["items"]] == [bad["event_id"]]
    assert none["count"] == 0


async def test_another_projects_trail_and_bad_filters_are_refused(cbr, services):
    other = await cbr("audit", "list", "--project", "someone-else")
    assert other.code == 7 and one_error_line(other).startswith("error: PERMISSION_DENIED"), str(other)
    bad = await cbr("audit", "list", "--outcome", "bogus")
    assert bad.code == 3 and "--outcome must be ok, error or a gRPC status code name" in one_error_line(bad), str(bad)

    auditor = cbr.using(CBR_TOKEN=services.token("operators", roles=("cbr_auditor",)))
    await cbr.ok("vault", "create", "seen-by-auditor", "--type", "disk", "--size", "1G")

    async def seen():
        listed = await auditor.json("audit", "list", "--project", cbr.project_id)
        assert listed["count"] == 1 and listed["items"][0]["project_id"] == cbr.project_id, listed
        return listed
    await eventually(seen)
