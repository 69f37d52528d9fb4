"""Bearer tokens (JWT: HS256 from the embedded issuer, RS256/ES256 from an OIDC provider, cbr_common.oidc),
roles, and which role may call which method."""
from __future__ import annotations

import contextvars
import enum
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import jwt

from cbr_common.errors import PermissionDeniedError, UnauthenticatedError

ALGORITHM = "HS256"
ISSUER = "cbr"

ROLE_FULL_ACCESS = "cbr_full_access"
ROLE_BACKUPS_VAULTS_FULL_ACCESS = "cbr_backups_vaults_full_access"
ROLE_READONLY = "cbr_readonly"
# A cloud operator's auditor: reads, and lists the audit trail of every project (VaultService.ListAuditEvents).
ROLE_AUDITOR = "cbr_auditor"
ROLE_SERVICE = "service"
# Another region's backup workers: subject "region:<name>", signed with this region's secret (cbr_common.regions).
ROLE_REGION_PEER = "region_peer"


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"                # vaults, backups, resources, tasks
    POLICY_WRITE = "policy_write"  # create, change or delete policies
    SERVICE = "service"            # service-to-service only (e.g. the region transfer API)


# Mirrors CBR's system policies: FullAccess, BackupsAndVaultsFullAccess (no policy changes), ReadOnlyAccess.
GRANTS: dict[str, frozenset[Access]] = {
    ROLE_FULL_ACCESS: frozenset({Access.READ, Access.WRITE, Access.POLICY_WRITE}),
    ROLE_BACKUPS_VAULTS_FULL_ACCESS: frozenset({Access.READ, Access.WRITE}),
    ROLE_READONLY: frozenset({Access.READ}),
    ROLE_AUDITOR: frozenset({Access.READ}),
    ROLE_SERVICE: frozenset(Access),
    ROLE_REGION_PEER: frozenset({Access.SERVICE}),  # RegionTransferService only, never a project's API
}

READ_PREFIXES = ("Get", "List", "Watch", "Preview", "Find")
PUBLIC_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                   "grpc.reflection.v1.ServerReflection")
SERVICE_ONLY_SERVICES = ("cbr.replication.v1.RegionTransferService",)
POLICY_SERVICES = ("cbr.policy.v1.PolicyService",)


@dataclass(frozen=True)
class Principal:
    subject: str
    project_id: str
    roles: frozenset[str]


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("cbr_principal", default=None)


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise UnauthenticatedError("no authenticated caller")
    return principal


def set_principal(principal: Principal) -> contextvars.Token:
    return _principal.set(principal)


def split_method(full_method: str) -> tuple[str, str]:
    """'/cbr.vault.v1.VaultService/CreateVault' -> ('cbr.vault.v1.VaultService', 'CreateVault')."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def is_public(full_method: str) -> bool:
    return split_method(full_method)[0] in PUBLIC_SERVICES


def required_access(full_method: str) -> Access:
    service, method = split_method(full_method)
    if service in SERVICE_ONLY_SERVICES:
        return Access.SERVICE
    if method.startswith(READ_PREFIXES):
        return Access.READ
    if service in POLICY_SERVICES:
        return Access.POLICY_WRITE
    return Access.WRITE


def issue_token(secret: str, project_id: str, subject: str, roles: list[str] | tuple[str, ...],
                ttl_seconds: int = 3600, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "sub": subject, "project_id": project_id, "roles": list(roles),
              "iat": issued, "exp": issued + int(ttl_seconds)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenCache:
    """Tokens verified before, by their exact text, each with the Principal it gave, until it expires.

    A client sends the same token for its whole life; decoding and checking it (base64, JSON, HMAC or RSA) on
    every call was work repeated for nothing. Bounded (the least recently used goes first). An entry is served
    only before the token's own `exp`, and for at most `max_life_seconds` after it was verified; `generation`
    ties an OIDC token to the provider's key set it was verified with, so a new set (a key withdrawn) verifies
    it again. A token that failed verification is never held."""

    def __init__(self, max_entries: int = 4096, max_life_seconds: float = 300.0,
                 clock: Callable[[], float] = time.time):
        self.max_entries, self.max_life_seconds, self._clock = max_entries, max_life_seconds, clock
        self._entries: OrderedDict[str, tuple[Principal, float, object]] = OrderedDict()
        self._lock = threading.Lock()  # verify() may run on a thread (the CLI's sync paths); cheap uncontended

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, generation: object = None) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            principal, until, held_generation = entry
            if self._clock() >= until or held_generation != generation:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return principal

    def put(self, token: str, principal: Principal, expires: float, generation: object = None) -> None:
        until = min(float(expires), self._clock() + self.max_life_seconds)
        with self._lock:
            self._entries[token] = (principal, until, generation)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class Authenticator:
    """Turns `authorization: Bearer <jwt>` metadata into a Principal allowed to make the call."""

    def __init__(self, secret: str, oidc=None, cache: TokenCache | None = None):
        """oidc: a cbr_common.oidc.OidcVerifier for the provider's tokens, or None (HS256 only)."""
        self._secret = secret
        self._oidc = oidc
        self.cache = cache if cache is not None else TokenCache()

    @classmethod
    def for_settings(cls, settings) -> "Authenticator":
        from cbr_common.oidc import OidcConfig, OidcVerifier
        config = OidcConfig.from_settings(settings)
        return cls(settings.jwt_secret, OidcVerifier(config) if config else None)

    @staticmethod
    def bearer_token(metadata) -> str:
        header = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("missing bearer token in 'authorization' metadata")
        return token.strip()

    def principal_from_metadata(self, metadata) -> Principal:
        return self.verify(self.bearer_token(metadata))

    async def prepare(self, metadata) -> None:
        """Fetches the OIDC provider's keys on a thread when the caller's token needs keys not held, so that
        verify() (called on the event loop) finds them; a no-op for every other token."""
        if self._oidc is None:
            return
        try:
            token = self.bearer_token(metadata)
            if self._cached(token) is not None:
                return
            header = jwt.get_unverified_header(token)
            kid = self._oidc.kid_of(header)
        except (UnauthenticatedError, jwt.InvalidTokenError):
            return  # verify() refuses it
        from cbr_common.oidc import is_provider_algorithm
        if is_provider_algorithm(header.get("alg")):
            await self._oidc.keys.refresh_async(kid)

    def _generation(self) -> object:
        """What an OIDC entry of the cache must still match: the provider's key set (None without OIDC)."""
        return None if self._oidc is None else self._oidc.keys.generation

    def _cached(self, token: str) -> Principal | None:
        if self._oidc is not None and self._oidc.keys.stale():
            return None  # the provider's keys are due a fetch: verify again (a withdrawn key then fails)
        return self.cache.get(token, self._generation())

    def verify(self, token: str) -> Principal:
        principal = self._cached(token)
        if principal is None:
            generation = self._generation()  # before verifying: keys fetched meanwhile make the entry stale
            principal, expires = self._verify(token)
            self.cache.put(token, principal, expires, generation)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal of a token not seen before, and when the token expires (epoch seconds)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"invalid token: {exc}") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            from cbr_common.oidc import is_provider_algorithm
            if self._oidc is not None and is_provider_algorithm(alg):
                return self._oidc.verify_expiring(token, header)
            accepted = [ALGORITHM, *(["RS256", "ES256"] if self._oidc is not None else [])]
            raise UnauthenticatedError(f"invalid token: algorithm {alg!r} is not accepted (only {accepted})")
        if not self._secret:
            raise UnauthenticatedError("invalid token: HS256 tokens are not accepted (no CBR_JWT_SECRET)")
        try:
            # Only HS256 is accepted: 'none' and any other algorithm are rejected by the allow-list.
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss"]})
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"invalid token: {exc}") from None
        project_id, roles = claims.get("project_id"), claims.get("roles")
        if not isinstance(project_id, str) or not project_id:
            raise UnauthenticatedError("invalid token: no project_id claim")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise UnauthenticatedError("invalid token: roles claim must be a list of strings")
        return Principal(subject=str(claims["sub"]), project_id=project_id, roles=frozenset(roles)), claims["exp"]

    @staticmethod
    def authorize(principal: Principal, full_method: str) -> None:
        needed = required_access(full_method)
        if not any(needed in GRANTS.get(role, ()) for role in principal.roles):
            raise PermissionDeniedError(
                f"role(s) {sorted(principal.roles) or '[]'} may not call {split_method(full_method)[1]}")
