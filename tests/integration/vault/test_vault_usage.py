"""Vault usage followed from the backup service's cbr.backup.vault_usage events, and auto-expansion."""
from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from cbr.events.v1 import backup_events_pb2 as be
from cbr.events.v1 import vault_events_pb2 as ve
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import create_vault
from tests.support.services import eventually

GIB = 1024 ** 3
SUBJECT = "cbr.backup.vault_usage"
T0 = dt.datetime.now(dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def measurement(project_id: str, vault_id: str, used_bytes: int, occurred: dt.datetime) -> be.VaultUsageMeasured:
    event = be.VaultUsageMeasured(event_id=str(uuid.uuid4()), project_id=project_id, vault_id=vault_id,
                                  used_bytes=used_bytes)
    event.occurred_time.FromDatetime(occurred)
    return event


async def publish(services, event: be.VaultUsageMeasured, msg_id: str | None = None) -> None:
    """As the backup service's outbox relay does: the payload is the event, Nats-Msg-Id its id."""
    await services.runtimes["vault"].js.publish(SUBJECT, event.SerializeToString(),
                                                headers={"Nats-Msg-Id": msg_id or event.event_id})


async def measure(services, caller, vault_id: str, used_bytes: int, occurred: dt.datetime) -> be.VaultUsageMeasured:
    event = measurement(caller.project_id, vault_id, used_bytes, occurred)
    await publish(services, event)
    return event


async def get_vault(caller, vault_id: str) -> vp.Vault:
    return (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault_id))).vault


async def wait_for(caller, vault_id: str, **expected) -> vp.Vault:
    async def check():
        vault = await get_vault(caller, vault_id)
        assert {k: getattr(vault, k) for k in expected} == expected
        return vault
    return await eventually(check)


@contextlib.asynccontextmanager
async def vault_updates(services):
    """Collects every cbr.vault.updated the vault service publishes while inside."""
    seen: list[ve.VaultUpdated] = []

    async def on_message(msg):
        seen.append(ve.VaultUpdated.FromString(msg.data))

    sub = await services.runtimes["vault"].nats.subscribe("cbr.vault.updated", cb=on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def drain(services, caller, seen: list[ve.VaultUpdated] | None = None) -> None:
    """Returns once every usage event published so far has been handled, and, with `seen`, once every
    cbr.vault.updated they caused has arrived: the consumer handles one subject in stream order and the outbox
    relay publishes in order, so a sentinel measurement that expands a fresh vault comes out last."""
    sentinel = await create_vault(caller, name="sentinel", size_gb=1, auto_expand=True)
    await measure(services, caller, sentinel.vault_id, 2 * GIB, at(0))
    await wait_for(caller, sentinel.vault_id, size_gb=2)
    if seen is not None:
        async def sentinel_seen():
            return sentinel.vault_id in (e.vault_id for e in seen)
        await eventually(sentinel_seen)


def updates_of(seen: list[ve.VaultUpdated], vault_id: str) -> list[int]:
    return [e.size_gb for e in seen if e.vault_id == vault_id]


async def test_used_bytes_follows_the_newest_measurement(services, caller):
    vault = await create_vault(caller, size_gb=100)
    assert vault.used_bytes == 0
    await measure(services, caller, vault.vault_id, 5 * GIB, at(1))
    await wait_for(caller, vault.vault_id, used_bytes=5 * GIB)
    await measure(services, caller, vault.vault_id, 7 * GIB, at(3))
    await wait_for(caller, vault.vault_id, used_bytes=7 * GIB)
    await measure(services, caller, vault.vault_id, 3 * GIB, at(4))  # usage drops after a delete or GC
    await wait_for(caller, vault.vault_id, used_bytes=3 * GIB)

    # Measured before the last one but delivered after it: stale, as is one measured at the same instant.
    await measure(services, caller, vault.vault_id, 6 * GIB, at(2))
    await measure(services, caller, vault.vault_id, 9 * GIB, at(4))
    await drain(services, caller)
    got = await get_vault(caller, vault.vault_id)
    assert (got.used_bytes, got.size_gb) == (3 * GIB, 100)
    assert got.updated_time == vault.updated_time  # a measurement is not a change of the vault's settings


async def test_a_duplicate_is_harmless(services, caller):
    vault = await create_vault(caller, size_gb=10, auto_expand=True)
    async with vault_updates(services) as seen:
        event = await measure(services, caller, vault.vault_id, 11 * GIB, at(1))
        await wait_for(caller, vault.vault_id, used_bytes=11 * GIB, size_gb=13)
        await publish(services, event)  # same Nats-Msg-Id: JetStream's window drops it
        await publish(services, event, msg_id=str(uuid.uuid4()))  # redelivered past the window: the inbox drops it
        await drain(services, caller, seen)
        assert updates_of(seen, vault.vault_id) == [13]

        # A duplicate of an old event arriving after a newer measurement leaves the newer one.
        await measure(services, caller, vault.vault_id, 12 * GIB, at(2))
        await wait_for(caller, vault.vault_id, used_bytes=12 * GIB)
        await publish(services, event, msg_id=str(uuid.uuid4()))
        await drain(services, caller, seen)
    got = await get_vault(caller, vault.vault_id)
    assert (got.used_bytes, got.size_gb) == (12 * GIB, 13)
    assert updates_of(seen, vault.vault_id) == [13]


async def test_auto_expand_grows_capacity_by_a_quarter_per_step(services, caller):
    vault = await create_vault(caller, size_gb=10, auto_expand=True)
    async with vault_updates(services) as seen:
        await measure(services, caller, vault.vault_id, 10 * GIB, at(1))  # full, not over: no growth
        await wait_for(caller, vault.vault_id, used_bytes=10 * GIB, size_gb=10)
        await measure(services, caller, vault.vault_id, 11 * GIB, at(2))
        await wait_for(caller, vault.vault_id, used_bytes=11 * GIB, size_gb=13)
        # A big jump takes as many 1.25x steps as it needs: 13 17 22 28 35 44 55 69 87 109.
        await measure(services, caller, vault.vault_id, 100 * GIB, at(3))
        await wait_for(caller, vault.vault_id, used_bytes=100 * GIB, size_gb=109)
        # Usage falling again does not shrink the vault.
        await measure(services, caller, vault.vault_id, GIB, at(4))
        await wait_for(caller, vault.vault_id, used_bytes=GIB, size_gb=109)
        await drain(services, caller, seen)
    updates = [e for e in seen if e.vault_id == vault.vault_id]
    assert [e.size_gb for e in updates] == [13, 109]
    assert all(e.project_id == caller.project_id and e.auto_expand and e.event_id for e in updates)


async def test_auto_expand_stops_at_the_maximum_size(services, caller):
    vault = await create_vault(caller, size_gb=10_000_000, auto_expand=True)
    await measure(services, caller, vault.vault_id, 20_000_000 * GIB, at(1))
    await wait_for(caller, vault.vault_id, used_bytes=20_000_000 * GIB, size_gb=10_485_760)


async def test_without_auto_expand_the_size_stays(services, caller):
    vault = await create_vault(caller, size_gb=10, auto_expand=False)
    async with vault_updates(services) as seen:
        await measure(services, caller, vault.vault_id, 50 * GIB, at(1))
        await wait_for(caller, vault.vault_id, used_bytes=50 * GIB)
        await drain(services, caller, seen)
    assert (await get_vault(caller, vault.vault_id)).size_gb == 10
    assert updates_of(seen, vault.vault_id) == []

    # Turned on later, the next measurement expands it.
    await caller.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, auto_expand=True))
    await measure(services, caller, vault.vault_id, 50 * GIB, at(2))
    await wait_for(caller, vault.vault_id, size_gb=55)  # 10 13 17 22 28 35 44 55


async def test_other_projects_and_unknown_vaults_are_ignored(services, caller):
    vault = await create_vault(caller, size_gb=10, auto_expand=True)
    stranger = services.caller()
    # Another project naming this vault, and this project naming a vault that does not exist (deleted).
    await publish(services, measurement(stranger.project_id, vault.vault_id, 50 * GIB, at(1)))
    await measure(services, caller, str(uuid.uuid4()), 50 * GIB, at(1))
    await drain(services, caller)
    got = await get_vault(caller, vault.vault_id)
    assert (got.used_bytes, got.size_gb) == (0, 10)

    # The stranger's event did not claim the measurement time: this project's own older one still applies.
    await measure(services, caller, vault.vault_id, 5 * GIB, at(0.5))
    await wait_for(caller, vault.vault_id, used_bytes=5 * GIB, size_gb=10)
