"""`cbr backup create` sends a request_id: a new one per run (so the client may send it again to another replica),
or the one given with --request-id, which answers the first run's checkpoint."""
from __future__ import annotations

from cbr_cli import exit_codes
from tests.integration.cli.conftest import Cbr


async def checkpoint(cbr: Cbr, *args: str) -> str:
    made = await cbr("backup", "create", *args, "--json")
    assert made.code in (0, exit_codes.SKIPPED), str(made)  # skipped: the disk's earlier backup still runs
    return made.json()["checkpoint_id"]


async def test_a_given_request_id_answers_the_first_checkpoint_and_each_run_gets_its_own(cbr: Cbr):
    disk = await cbr.json("disk", "create", "rid-disk", "--size", "8M")
    vault = await cbr.json("vault", "create", "rid-vault", "--type", "disk", "--size", "10G",
                           "--resource", disk["resource_id"])
    first = await checkpoint(cbr, vault["vault_id"], "--request-id", "nightly-1")
    assert await checkpoint(cbr, vault["vault_id"], "--request-id", "nightly-1") == first
    others = {await checkpoint(cbr, vault["vault_id"]) for _ in range(2)}
    assert len(others | {first}) == 3
