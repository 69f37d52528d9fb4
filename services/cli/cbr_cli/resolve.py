"""Names (and short ids) where ids are taken: one resolver for every command.

An argument of a kind that has names (vault, disk, server, file system, resource, policy, backup) that is not a
whole UUID is parsed into a `Ref`; before the command runs, `resolve_args` turns each Ref into the id of the one
object of the caller's project whose name is exactly that text or whose id starts with it (8 or more
characters: the short ids the tables show), found through the kind's list call. None is NameNotFoundError
(exit 4); more than one is AmbiguousNameError (exit 13), which lists the candidates. `names_of` is the other way
round, for tables: ids to names."""
from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

import grpc

from cbr.backup.v1 import backup_pb2, protectable_pb2
from cbr.common.v1 import common_pb2
from cbr.policy.v1 import policy_pb2
from cbr.vault.v1 import vault_pb2

PAGE = 1000
SHOWN = 10       # candidates an ambiguity's message names (--json's details list them all)
MAX_PAGES = 200  # 200,000 objects of one kind: beyond that a name is not worth the wait
ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{7,35}", re.IGNORECASE)
DISK, SERVER, TURBO = common_pb2.OBJECT_TYPE_DISK, common_pb2.OBJECT_TYPE_SERVER, common_pb2.OBJECT_TYPE_TURBO


@dataclass(frozen=True)
class Ref:
    """What the user typed where an id of `kind` goes, not yet a UUID."""
    kind: str
    text: str


@dataclass(frozen=True)
class Candidate:
    object_id: str
    name: str
    kind: str


class NameNotFoundError(Exception):
    def __init__(self, ref: Ref):
        self.ref = ref
        super().__init__(f"no {NOUNS[ref.kind]} named {ref.text!r} (nor with an id starting so) in this project")


class AmbiguousNameError(Exception):
    def __init__(self, ref: Ref, candidates: list[Candidate]):
        self.ref, self.candidates = ref, candidates
        listed = "; ".join(f"{c.name or '-'} ({KIND_LABELS[c.kind]} {c.object_id})" for c in candidates[:SHOWN])
        more = f"; and {len(candidates) - SHOWN} more" if len(candidates) > SHOWN else ""
        super().__init__(f"{len(candidates)} {NOUNS[ref.kind]}s match {ref.text!r}: {listed}{more}; give the id")


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def short_id(text: str) -> str:
    """The first 8 characters of a UUID, as the tables show it (any unique prefix resolves back); other text as is."""
    return text[:8] if is_uuid(text) else text


Lister = Callable[..., Awaitable[list[Candidate]]]


async def _pages(call, request_for: Callable[[common_pb2.PageRequest], object], items_of) -> list:
    found, offset = [], 0
    for _ in range(MAX_PAGES):
        reply = await call(request_for(common_pb2.PageRequest(limit=PAGE, offset=offset)))
        items = list(items_of(reply))
        found += items
        offset += len(items)
        if not items or offset >= reply.count:
            break
    return found


async def _vaults(client, name: str) -> list[Candidate]:
    vaults = await _pages(client.vaults.ListVaults, lambda page: vault_pb2.ListVaultsRequest(page=page, name=name),
                          lambda reply: reply.vaults)
    return [Candidate(v.vault_id, v.name, "vault") for v in vaults]


def _protectables(object_type: int, kind: str) -> Lister:
    async def lister(client, name: str) -> list[Candidate]:
        items = await _pages(client.protectables.ListProtectables,
                             lambda page: protectable_pb2.ListProtectablesRequest(type=object_type, page=page,
                                                                                  name=name),
                             lambda reply: reply.protectables)
        return [Candidate(p.resource_id, p.name, kind) for p in items]
    return lister


async def _resources(client, name: str) -> list[Candidate]:
    found = await asyncio.gather(*(LISTERS[kind](client, name) for kind in ("disk", "server", "file_system")))
    return [c for part in found for c in part]


async def _policies(client, name: str) -> list[Candidate]:  # no name filter in ListPolicies: at most 64 anyway
    policies = await _pages(client.policies.ListPolicies, lambda page: policy_pb2.ListPoliciesRequest(page=page),
                            lambda reply: reply.policies)
    return [Candidate(p.policy_id, p.name, "policy") for p in policies]


async def _backups(client, name: str) -> list[Candidate]:
    backups = await _pages(client.backups.ListBackups,
                           lambda page: backup_pb2.ListBackupsRequest(page=page, name=name),
                           lambda reply: reply.backups)
    return [Candidate(b.backup_id, b.name, "backup") for b in backups]


LISTERS: dict[str, Lister] = {
    "vault": _vaults, "disk": _protectables(DISK, "disk"), "server": _protectables(SERVER, "server"),
    "file_system": _protectables(TURBO, "file_system"), "resource": _resources, "policy": _policies,
    "backup": _backups,
}
TYPE_KINDS = {DISK: "disk", SERVER: "server", TURBO: "file_system"}
NOUNS = {"vault": "vault", "disk": "disk", "server": "server", "file_system": "file system",
         "resource": "disk, server or file system", "policy": "policy", "backup": "backup"}
KIND_LABELS = {**NOUNS, "resource": "resource"}


def pick(ref: Ref, candidates: Iterable[Candidate]) -> str:
    """The one candidate named exactly `ref.text`, or whose id starts with it; a name match wins over an id
    prefix (a name that looks like the start of another object's id still means that name)."""
    candidates = list({c.object_id: c for c in candidates}.values())
    named = [c for c in candidates if c.name == ref.text]
    prefixed = [c for c in candidates if looks_like_id_prefix(ref.text) and c.object_id.startswith(ref.text.lower())]
    matches = named or prefixed
    if not matches:
        raise NameNotFoundError(ref)
    if len(matches) > 1:
        raise AmbiguousNameError(ref, sorted(matches, key=lambda c: (c.name, c.object_id)))
    return matches[0].object_id


def looks_like_id_prefix(text: str) -> bool:
    return bool(ID_PREFIX.fullmatch(text))


async def resolve(client, ref: Ref) -> str:
    # An id prefix cannot be filtered by the service: list everything of the kind then.
    name_filter = "" if looks_like_id_prefix(ref.text) else ref.text
    return pick(ref, await LISTERS[ref.kind](client, name_filter))


async def resolve_args(args: argparse.Namespace, client) -> None:
    """Every Ref among the parsed arguments (also inside lists and tuples) replaced by its id, in place."""
    refs: set[Ref] = set()

    def collect(value):
        if isinstance(value, Ref):
            refs.add(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
    for value in vars(args).values():
        collect(value)
    if not refs:
        return
    ordered = sorted(refs, key=lambda r: (r.kind, r.text))
    # A command that names the resources' type (`vault create --type disk`) looks among those only.
    narrowed = TYPE_KINDS.get(getattr(args, "object_type", 0) or getattr(args, "resource_type", 0))
    ids = dict(zip(ordered, await asyncio.gather(*(
        resolve(client, Ref(narrowed, ref.text) if narrowed and ref.kind == "resource" else ref)
        for ref in ordered))))

    def substitute(value):
        if isinstance(value, Ref):
            return ids[value]
        if isinstance(value, list):
            return [substitute(item) for item in value]
        if isinstance(value, tuple):
            return tuple(substitute(item) for item in value)
        return value
    for key, value in vars(args).items():
        setattr(args, key, substitute(value))


async def names_of(client, kind: str, ids: Iterable[str]) -> dict[str, str]:
    """id -> name for the objects of `kind` among `ids` that the caller can see; {} if the lookup fails (a table
    then shows short ids)."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    try:
        if kind == "vault":
            found = await _pages(client.vaults.ListVaults,
                                 lambda page: vault_pb2.ListVaultsRequest(page=page, vault_ids=sorted(wanted)),
                                 lambda reply: reply.vaults)
            return {v.vault_id: v.name for v in found}
        candidates = await LISTERS[kind](client, "")
    except grpc.aio.AioRpcError:
        return {}
    return {c.object_id: c.name for c in candidates if c.object_id in wanted}
