"""Every RPC of every service, found through server reflection, called with hostile values per field kind.

For each method: the empty request; each field (nested and repeated ones included) set to hostile values of its
kind, once on an empty request and once on a plausible one whose ids name real objects of the fuzz project (so
calls get past id lookups to the rules behind them); and bodies that do not parse. Asserted: no answer is
INTERNAL or UNKNOWN; a call answered with an error writes nothing (row counts of every table in the cbr schemas,
the fuzz project's rows and the outbox's last id are the same before and after); health answers SERVING for
every service throughout and at the end. The counts are printed and written to fuzz-summary.json in tmp_path."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor as F, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import cbr.backup.v1.protectable_pb2  # noqa: F401  (the services' descriptors, for the pool reflection names)
import cbr.backup.v1.task_pb2  # noqa: F401
import cbr.replication.v1.replication_pb2  # noqa: F401
from cbr.backup.v1 import backup_pb2 as bp
from cbr.policy.v1 import policy_pb2 as pp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common.auth import READ_PREFIXES
from cbr_common.echo import MAX_MESSAGE_CHARS
from cbr_common.grpc_errors import cbr_code_of
from tests.support.backups import checkpoint, disk_in_vault, get_backup, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_vault, expect_error

SCHEMAS = ("vault", "backup", "policy", "replication")
# The audit trail (cbr_common/audit.py) records refused calls too: its table, its outbox rows and its consumer's inbox
# rows are left out of the fingerprint.
AUDIT_TABLE = ("vault", "audit_events")
AUDIT_ROWS_ELSEWHERE = {"outbox": " WHERE subject <> 'cbr.audit.recorded'", "inbox": " WHERE consumer <> 'vault-audit'"}
TIMESTAMP = "google.protobuf.Timestamp"
MAX_DEPTH = 4
UNARY_TIMEOUT = 20.0
STREAM_TIMEOUT = 2.0     # server streams (health Watch, WatchTask) may run on: read a little, then stop
STREAM_READS = 1
MANY = 70_000            # items in a long repeated field: above PostgreSQL's 65,535 parameters a statement
SETTLE_TIMEOUT = 60.0

HOSTILE_STRINGS = [
    "A" * 100_000,                     # over the edge's limit
    "fuzz\x00name",                    # NUL
    "fuzz\x1b[31m\x07\x7f",            # other control characters
    "../../etc/passwd",                # path-like
    "b" * 5_000,                       # within the edge's limit, above every field's own
    "x' OR '1'='1' --",                # SQL-like
    "%_\\%",                           # LIKE wildcards
    "名前\u202e\ufeff😀",              # unicode: bidi override, BOM, astral plane
    " ",
]
HOSTILE_INTS = {
    32: [-1, -(2**31), 2**31 - 1],
    64: [-1, -(2**63), 2**63 - 1],
}
HOSTILE_UINTS = {32: [2**32 - 1], 64: [2**64 - 1]}
HOSTILE_ENUMS = [999, -7]
HOSTILE_FLOATS = [math.nan, math.inf, -1e308]
HOSTILE_TIMESTAMPS = [
    (2**63 - 1, 0), (0, -1), (-(2**63), 0), (0, 10**9),
    (-62_135_596_800, 0),                # 0001-01-01: in range, at the very start
    (253_402_300_799, 999_999_999),      # 9999-12-31T23:59:59.999999999: in range, at the very end
]
INT_KINDS = {F.TYPE_INT32: 32, F.TYPE_SINT32: 32, F.TYPE_SFIXED32: 32,
             F.TYPE_INT64: 64, F.TYPE_SINT64: 64, F.TYPE_SFIXED64: 64}
UINT_KINDS = {F.TYPE_UINT32: 32, F.TYPE_FIXED32: 32, F.TYPE_UINT64: 64, F.TYPE_FIXED64: 64}
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
USUAL_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
               grpc.StatusCode.RESOURCE_EXHAUSTED}
# With every dependency up, a call that is not a watch should never run out its deadline or report an outage.
STALLED_CODES = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}


def hostile_values(leaf: F) -> list:
    """The hostile values of one field's kind (a list per value for repeated fields)."""
    if leaf.type == F.TYPE_MESSAGE and leaf.message_type.GetOptions().map_entry:
        return [{bad: "v"} for bad in HOSTILE_STRINGS[:4]] + [{"k": bad} for bad in HOSTILE_STRINGS[:4]]
    if leaf.type == F.TYPE_MESSAGE:
        values = HOSTILE_TIMESTAMPS
    elif leaf.type == F.TYPE_STRING:
        values = HOSTILE_STRINGS
    elif leaf.type in INT_KINDS:
        values = HOSTILE_INTS[INT_KINDS[leaf.type]]
    elif leaf.type in UINT_KINDS:
        values = HOSTILE_UINTS[UINT_KINDS[leaf.type]]
    elif leaf.type == F.TYPE_ENUM:
        values = HOSTILE_ENUMS
    elif leaf.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        values = HOSTILE_FLOATS
    elif leaf.type == F.TYPE_BYTES:
        rng = random.Random(leaf.full_name)
        values = [rng.randbytes(64), rng.randbytes(300_000)]
    else:
        values = []  # bool: neither value is hostile
    return [[v] for v in values] if leaf.is_repeated else list(values)


def message_class(descriptor: Descriptor):
    return message_factory.GetMessageClass(descriptor)


def leaves(descriptor: Descriptor, prefix: tuple = (), depth: int = 0):
    """Paths (tuples of fields) to every scalar, enum, map, timestamp and repeated field, nested ones included."""
    for f in descriptor.fields:
        nested = (f.type == F.TYPE_MESSAGE and f.message_type.full_name != TIMESTAMP
                  and not f.message_type.GetOptions().map_entry)
        if not nested:
            yield prefix + (f,)
        elif depth < MAX_DEPTH:
            yield from leaves(f.message_type, prefix + (f,), depth + 1)


def set_at(message: Message, path: tuple, value) -> None:
    for f in path[:-1]:
        child = getattr(message, f.name)
        if f.is_repeated:
            message = child[0] if len(child) else child.add()
        else:
            message = child
    leaf = path[-1]
    target = getattr(message, leaf.name) if leaf.type == F.TYPE_MESSAGE or leaf.is_repeated else None
    if leaf.type == F.TYPE_MESSAGE and leaf.message_type.GetOptions().map_entry:
        target.clear()
        target.update(value)
    elif leaf.type == F.TYPE_MESSAGE:  # a timestamp, or a list of one
        stamps = value if leaf.is_repeated else [value]
        if leaf.is_repeated:
            del target[:]
        for seconds, nanos in stamps:
            stamp = target.add() if leaf.is_repeated else target
            stamp.seconds, stamp.nanos = seconds, nanos
    elif leaf.is_repeated:
        del target[:]
        target.extend(value)
    else:
        setattr(message, leaf.name, value)


PLAUSIBLE = {  # by field name: values that pass the services' rules; fields not named here stay unset
    "name": "fuzz-base", "description": "fuzz", "patterns": "FREQ=DAILY;BYHOUR=3;BYMINUTE=0",
    "sort": "created_time:desc", "key": "k", "value": "v", "keys": "k", "size_bytes": 2 * MIB,
    "new_size_bytes": 4 * MIB, "size_gb": 10, "limit": 10, "max_backups": 3, "threshold": 80,
    "object_type": 2, "type": 2, "resource_type": 2, "protect_type": 1, "operation_type": 1,  # disks, backups
}


@dataclass
class Plausible:
    """A request that passes the services' rules as far as a generic builder can make one: the fields named in
    PLAUSIBLE, and ids naming the fuzz project's own objects. Hostile values then replace one field at a time."""
    ids: dict[str, str]

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        msg = message_class(descriptor)()
        for f in descriptor.fields:
            if f.type == F.TYPE_MESSAGE:
                if (f.message_type.full_name == TIMESTAMP or f.message_type.GetOptions().map_entry
                        or depth >= MAX_DEPTH or f.message_type is descriptor):
                    continue
                value = self.message(f.message_type, depth + 1)
                if value.ListFields():
                    (getattr(msg, f.name).add() if f.is_repeated else getattr(msg, f.name)).CopyFrom(value)
                continue
            value = self.ids.get(f.name, self.ids.get(f.name[:-1])) if f.type == F.TYPE_STRING else None
            value = PLAUSIBLE.get(f.name) if value is None else value
            if value is None:
                continue
            if f.is_repeated:
                getattr(msg, f.name).append(value)
            else:
                setattr(msg, f.name, value)
        return msg

    def scalar(self, f: F):
        """A plausible value for a field PLAUSIBLE may not name (for long lists)."""
        value = self.ids.get(f.name, self.ids.get(f.name[:-1], PLAUSIBLE.get(f.name)))
        if value is not None:
            return value
        if f.type == F.TYPE_STRING:
            return str(uuid.uuid4()) if f.name.endswith(("_id", "_ids")) else "fuzz"
        return False if f.type == F.TYPE_BOOL else b"fuzz" if f.type == F.TYPE_BYTES else 1


@dataclass
class Tally:
    calls: int = 0
    codes: Counter = field(default_factory=Counter)
    by_method: dict = field(default_factory=dict)  # path -> Counter of codes
    seconds_by_method: Counter = field(default_factory=Counter)
    endpoints: set = field(default_factory=set)
    bad_answers: list = field(default_factory=list)
    stalled: list = field(default_factory=list)
    unusual: list = field(default_factory=list)
    writes_on_error: list = field(default_factory=list)
    health_failures: list = field(default_factory=list)
    settles: int = 0

    def record(self, path: str, what: str, code: grpc.StatusCode, details: str, server_streams: bool) -> None:
        self.calls += 1
        self.codes[code.name] += 1
        self.by_method.setdefault(path, Counter())[code.name] += 1
        line = f"{what}: {code.name} {details[:200]}"
        if code not in USUAL_CODES:
            self.unusual.append(line)
        if code in STALLED_CODES and not server_streams:
            self.stalled.append(line)
        if code in BAD_CODES:
            self.bad_answers.append(line)

    def summary(self, seconds: float) -> dict:
        return {"calls": self.calls, "endpoints": len(self.endpoints), "answers": dict(self.codes.most_common()),
                "settles": self.settles, "seconds": round(seconds, 1), "bad_answers": self.bad_answers,
                "stalled": self.stalled, "unusual": self.unusual, "writes_on_error": self.writes_on_error,
                "health_failures": self.health_failures,
                "by_method": {path: dict(codes) for path, codes in sorted(self.by_method.items())},
                "slowest": {path: round(sec, 1) for path, sec in self.seconds_by_method.most_common(10)}}


class Fingerprint:
    """Row counts of every table in the cbr schemas, the fuzz project's rows (hashed) and each outbox's last id:
    one statement, cheap on the test's small tables."""

    def __init__(self, conn, sql: str, project_id: str):
        self._conn, self._sql, self._project_id = conn, sql, project_id

    @classmethod
    async def open(cls, conninfo: str, project_id: str) -> "Fingerprint":
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        rows = await (await conn.execute(
            "SELECT table_schema, table_name, bool_or(column_name = 'project_id') FROM information_schema.columns "
            "WHERE table_schema = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2", (list(SCHEMAS),))).fetchall()
        parts = []
        quoted = project_id.replace("'", "''")
        for schema, table, has_project in rows:
            if (schema, table) == AUDIT_TABLE:
                continue  # a refused call is recorded there by design: the trail is not a write of the call's
            name = f'"{schema}"."{table}"'
            where = AUDIT_ROWS_ELSEWHERE.get(table, "")
            parts.append(f"(SELECT count(*)::text FROM {name}{where})")
            if has_project:
                parts.append(f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t "
                             f"WHERE project_id = '{quoted}')")
            if table == "outbox":
                parts.append(f"(SELECT coalesce(max(id), 0)::text FROM {name}{where})")
        assert len(rows) > 10, rows
        return cls(conn, "SELECT ARRAY[" + ", ".join(parts) + "]", project_id)

    async def take(self) -> tuple:
        return tuple((await (await self._conn.execute(self._sql)).fetchone())[0])

    async def settled(self) -> tuple:
        """The fingerprint once it has stopped changing (after a call that may have started work) and no task of
        the fuzz project waits or runs."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last, stable = await self.take(), 0
        while stable < 3:
            assert time.monotonic() < deadline, "the database never settled"
            await asyncio.sleep(0.2)
            busy = (await (await self._conn.execute(
                "SELECT count(*) FROM backup.tasks WHERE project_id = %s AND status IN ('waiting', 'running')",
                (self._project_id,))).fetchone())[0]
            now = await self.take()
            stable = stable + 1 if now == last and not busy else 0
            last = now
        return last

    async def close(self) -> None:
        await self._conn.close()


async def fuzz_objects(services) -> tuple[object, dict[str, str]]:
    """A project with a disk in a vault, one backup of it, a second vault and a backup policy."""
    caller = services.caller()
    disk, vault = await disk_in_vault(caller, size_bytes=2 * MIB, seed=9)
    task_id = (await checkpoint(caller, vault.vault_id)).resources[0].task_id
    backup = await get_backup(caller, (await wait_success(caller, task_id)).backup_id)
    other = await create_vault(caller, "fuzz-destination", DISK, BACKUP)
    policy = (await caller.policies.CreatePolicy(pp.CreatePolicyRequest(
        name="fuzz", operation_type=pp.OPERATION_TYPE_BACKUP,
        trigger=pp.PolicyTrigger(patterns=["FREQ=DAILY;BYHOUR=3;BYMINUTE=0"]),
        operation_definition=pp.OperationDefinition(max_backups=3)))).policy
    ids = {name: vault.vault_id for name in ("vault_id", "source_vault_id")}
    ids.update({name: disk.resource_id for name in ("resource_id", "disk_id", "volume_id")})
    ids.update({name: backup.backup_id for name in ("backup_id", "source_backup_id", "parent_id")})
    ids.update(destination_vault_id=other.vault_id, policy_id=policy.policy_id, checkpoint_id=backup.checkpoint_id,
               task_id=task_id)
    return caller, ids


async def list_services(channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one_request():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(one_request(), timeout=UNARY_TIMEOUT):
        return [s.name for s in reply.list_services_response.service]
    raise AssertionError("reflection answered nothing")


def bodies_for(method: MethodDescriptor, plausible: Plausible, rng: random.Random):
    """(label, serialized body) for every request this method is sent."""
    request = method.input_type
    yield "empty", b""
    base = plausible.message(request)
    for path in leaves(request):
        label = ".".join(f.name for f in path)
        values = hostile_values(path[-1])
        for i, value in enumerate(values):
            for base_name, start in (("plausible", base), ("empty", None)):
                if base_name == "empty" and i % 4:  # the empty base gets a sample of each kind
                    continue
                msg = message_class(request)()
                if start is not None:
                    msg.CopyFrom(start)
                set_at(msg, path, value)
                yield f"{label}={short_repr(value)} on {base_name}", msg.SerializeToString()
    for f in request.fields:  # long lists of plausible items
        if not f.is_repeated or f.type == F.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            continue
        msg = message_class(request)()
        msg.CopyFrom(base)
        items = getattr(msg, f.name)
        if f.type == F.TYPE_MESSAGE:
            item = items[0] if len(items) else plausible.message(f.message_type)
        else:
            item = items[0] if len(items) else plausible.scalar(f)
        del items[:]
        items.extend([item] * MANY)
        yield f"{f.name}=[{MANY} items] on plausible", msg.SerializeToString()
    whole = base.SerializeToString()
    if len(whole) > 1:
        yield "truncated", whole[: len(whole) // 2]
    yield "bad utf-8 in field 1", b"\x0a\x02\xff\xfe"
    for size in (1, 7, 64, 1000):
        yield f"{size} random bytes", rng.randbytes(size)


def short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


async def call(channel, method: MethodDescriptor, path: str, body: bytes, metadata) -> tuple[grpc.StatusCode, str]:
    """One call with the raw body; its status code and details. Server streams are read a little, then cut."""
    try:
        if method.client_streaming:
            async def requests():
                yield body
            if method.server_streaming:
                stream = channel.stream_stream(path)(requests(), metadata=metadata, timeout=STREAM_TIMEOUT)
                await read_some(stream)
            else:
                await channel.stream_unary(path)(requests(), metadata=metadata, timeout=UNARY_TIMEOUT)
        elif method.server_streaming:
            await read_some(channel.unary_stream(path)(body, metadata=metadata, timeout=STREAM_TIMEOUT))
        else:
            await channel.unary_unary(path)(body, metadata=metadata, timeout=UNARY_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def read_some(stream) -> None:
    reads = 0
    async for _ in stream:
        reads += 1
        if reads >= STREAM_READS:
            stream.cancel()
            return


async def health_check(channels: dict, services_by_server: dict, tally: Tally, when: str) -> None:
    for server, channel in channels.items():
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", *services_by_server[server]):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=UNARY_TIMEOUT)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            if status != "SERVING":
                tally.health_failures.append(f"{when}: {server} {name or '(server)'}: {status}")


class Fuzzer:
    """Sends each body, records its answer, and checks the database did not change under an error answer."""

    def __init__(self, channels: dict, metadata, fingerprint: Fingerprint, tally: Tally):
        self.channels, self.metadata, self.fingerprint, self.tally = channels, metadata, fingerprint, tally
        self.before: tuple = ()

    async def start(self) -> None:
        self.before = await self.fingerprint.settled()

    async def fuzz(self, server: str, method: MethodDescriptor, plausible: Plausible, rng: random.Random) -> None:
        path = f"/{method.containing_service.full_name}/{method.name}"
        self.tally.endpoints.add(f"{server}{path}")
        started = time.monotonic()
        for label, body in bodies_for(method, plausible, rng):
            await self.one(server, method, path, f"{path} [{label}]", body)
        self.tally.seconds_by_method[path] += time.monotonic() - started

    async def one(self, server: str, method: MethodDescriptor, path: str, what: str, body: bytes) -> None:
        code, details = await self.call(server, method, path, what, body)
        after = await self.fingerprint.take()
        if after == self.before:
            return
        if code == grpc.StatusCode.OK or method.name.startswith(READ_PREFIXES):
            self.before = await self.fingerprint.settled()  # let work a successful call started finish
            self.tally.settles += 1
            return
        # An error answer, and the database changed: rule out work still finishing from an earlier call by
        # settling and sending the same body again.
        self.before = await self.fingerprint.settled()
        code, details = await self.call(server, method, path, what, body)
        if code != grpc.StatusCode.OK and await self.fingerprint.take() != self.before:
            self.tally.writes_on_error.append(f"{what}: {code.name} {details[:200]}")
        self.before = await self.fingerprint.settled()

    async def call(self, server: str, method: MethodDescriptor, path: str, what: str, body: bytes):
        code, details = await call(self.channels[server], method, path, body, self.metadata)
        self.tally.record(path, what, code, details, method.server_streaming)
        return code, details


async def test_every_rpc_refuses_hostile_input_cleanly(infra, services, tmp_path):
    caller, ids = await fuzz_objects(services)
    token = services.token(caller.project_id, roles=("cbr_full_access", "service"))  # reaches RegionTransfer too
    addresses = {name: runtime.address for name, runtime in services.runtimes.items()}
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    fingerprint = await Fingerprint.open(infra.postgres.conninfo(), caller.project_id)
    tally = Tally()
    fuzzer = Fuzzer(channels, (("authorization", f"Bearer {token}"),), fingerprint, tally)
    plausible, rng, pool = Plausible(ids), random.Random(20261204), descriptor_pool.Default()
    started = time.monotonic()
    try:
        listed = {name: await list_services(channel) for name, channel in channels.items()}
        cbr_services = {name: [s for s in names if s.startswith("cbr.")] for name, names in listed.items()}
        assert all(cbr_services.values()), listed
        await health_check(channels, cbr_services, tally, "at the start")
        await fuzzer.start()
        for server, names in listed.items():
            for service_name in names:
                for method in pool.FindServiceByName(service_name).methods:
                    await fuzzer.fuzz(server, method, plausible, rng)
                await health_check(channels, cbr_services, tally, f"after {service_name}")
        await health_check(channels, cbr_services, tally, "at the end")
    finally:
        await fingerprint.close()
        for channel in channels.values():
            await channel.close()
    summary = tally.summary(time.monotonic() - started)
    (tmp_path / "fuzz-summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nfuzz: {json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})}"
          f" answers: {json.dumps(summary['answers'])} (details in {tmp_path / 'fuzz-summary.json'})")
    assert tally.calls > 1000 and len(tally.endpoints) >= 60, summary
    assert tally.codes["INVALID_ARGUMENT"] > 0 and tally.codes["OK"] > 0, summary
    assert tally.bad_answers == [], "\n".join(tally.bad_answers)
    assert tally.stalled == [], "\n".join(tally.stalled)
    assert tally.writes_on_error == [], "\n".join(tally.writes_on_error)
    assert tally.health_failures == [], "\n".join(tally.health_failures)


async def test_an_undecodable_body_is_invalid_argument_logged_at_info(services, caller, caplog):
    channel = services.channels["vault"]
    metadata = (("authorization", f"Bearer {services.token(caller.project_id)}"),)
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/cbr.vault.v1.VaultService/ListVaults")(
                b"\x12\x02\xff\xfe", metadata=metadata, timeout=UNARY_TIMEOUT)  # name: bytes that are not UTF-8
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cbr_code_of(caught.value) == "BackupService.6400"
    assert "ListVaults request is not a valid protobuf message" in caught.value.details()
    refused = [r for r in caplog.records if r.getMessage() == "call refused"]
    assert refused and all(r.levelno == logging.INFO for r in refused)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("grpc", "cbr.rpc"))]


@pytest.mark.parametrize("call", ["timezone", "sort", "tag key"])
async def test_a_refusal_quotes_a_short_prefix_of_a_long_input(caller, caplog, call):
    long_value = "Z" * 10_000  # no edge rule breaks: the service's own rule refuses it
    with caplog.at_level(logging.INFO):
        if call == "timezone":
            request = caller.policies.CreatePolicy(pp.CreatePolicyRequest(
                name="tz", operation_type=pp.OPERATION_TYPE_BACKUP,
                trigger=pp.PolicyTrigger(patterns=["FREQ=DAILY;BYHOUR=3;BYMINUTE=0"]),
                operation_definition=pp.OperationDefinition(max_backups=1, timezone=long_value)))
        elif call == "sort":
            request = caller.backups.ListBackups(bp.ListBackupsRequest(sort=long_value))
        else:
            vault = await create_vault(caller, "echo")
            request = caller.vault.DeleteVaultTags(vp.DeleteVaultTagsRequest(vault_id=vault.vault_id,
                                                                             keys=[long_value]))
        error = await expect_error(request, grpc.StatusCode.INVALID_ARGUMENT)  # not RESOURCE_EXHAUSTED
    assert "Z" * 20 in error.details() and "Z" * 60 not in error.details()
    details = [r.fields["detail"] for r in caplog.records if r.getMessage() == "call refused"]
    assert details and all(len(d) <= MAX_MESSAGE_CHARS for d in details)
