"""Tokens from an external OpenID Connect provider: RS256 or ES256, verified against the provider's JWKS.

The keys are fetched over HTTP (from CBR_OIDC_JWKS_URL, or the `jwks_uri` of the issuer's discovery document) and
kept; a token naming an unknown key id fetches them again, at most once per `refetch_seconds`, so a flood of made-up
key ids costs the provider one request per interval. Every refusal is an UnauthenticatedError saying why."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jwt

from cbr_common.auth import Principal
from cbr_common.errors import UnauthenticatedError, UnavailableError

log = logging.getLogger("cbr.oidc")

# The algorithms accepted from the provider, each with the only key type (and curve) it may be verified with:
# choosing the key from the JWKS entry, never from the token alone, is what defeats algorithm confusion.
ALGORITHMS: dict[str, tuple[str, str | None]] = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
MAX_DOCUMENT_BYTES = 1024 * 1024  # a JWKS or discovery document larger than this is refused


@dataclass(frozen=True)
class OidcConfig:
    issuer: str                          # CBR_OIDC_ISSUER: the `iss` every token must carry
    audience: str                        # CBR_OIDC_AUDIENCE: a value `aud` must hold
    jwks_url: str = ""                   # CBR_OIDC_JWKS_URL; "": discovered from the issuer
    project_claim: str = "project_id"    # CBR_OIDC_PROJECT_CLAIM: dotted path to the project id
    roles_claim: str = "roles"           # CBR_OIDC_ROLES_CLAIM: dotted path to the roles (list or space-separated)
    leeway_seconds: float = 30.0         # CBR_OIDC_LEEWAY_SECONDS: clock skew allowed on exp / nbf / iat
    http_timeout_seconds: float = 3.0    # CBR_OIDC_HTTP_TIMEOUT_SECONDS: each request to the provider
    refetch_seconds: float = 30.0        # CBR_OIDC_JWKS_REFETCH_SECONDS: least time between two fetches
    max_age_seconds: float = 3600.0      # CBR_OIDC_JWKS_MAX_AGE_SECONDS: keys are fetched again once this old

    @classmethod
    def from_settings(cls, settings) -> "OidcConfig | None":
        if not settings.oidc_issuer:
            return None
        return cls(issuer=settings.oidc_issuer, audience=settings.oidc_audience, jwks_url=settings.oidc_jwks_url,
                   project_claim=settings.oidc_project_claim, roles_claim=settings.oidc_roles_claim,
                   leeway_seconds=settings.oidc_leeway_seconds,
                   http_timeout_seconds=settings.oidc_http_timeout_seconds,
                   refetch_seconds=settings.oidc_jwks_refetch_seconds,
                   max_age_seconds=settings.oidc_jwks_max_age_seconds)

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


# --- pure rules -----------------------------------------------------------------------------------------------------

def is_provider_algorithm(alg: object) -> bool:
    return isinstance(alg, str) and alg in ALGORITHMS


def check_key_fits(alg: str, kid: str, jwk: Mapping[str, Any]) -> None:
    """Refuses a token whose header algorithm does not match the type of the key its kid names."""
    if alg not in ALGORITHMS:
        raise UnauthenticatedError(f"invalid token: algorithm {alg!r} is not accepted from the OIDC provider")
    kty, crv = ALGORITHMS[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        shape = jwk.get("kty") if jwk.get("crv") is None else f"{jwk.get('kty')} {jwk.get('crv')}"
        raise UnauthenticatedError(f"invalid token: algorithm {alg} does not fit key {kid!r} ({shape})")
    if jwk.get("alg") not in (None, alg):
        raise UnauthenticatedError(f"invalid token: key {kid!r} is for {jwk['alg']}, the token says {alg}")


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path ("realm_access.roles"), or None. A claim whose own name holds dots wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def principal_from_claims(claims: Mapping[str, Any], project_claim: str, roles_claim: str) -> Principal:
    subject, project, roles = claims.get("sub"), claim_at(claims, project_claim), claim_at(claims, roles_claim)
    if not isinstance(subject, str) or not subject:
        raise UnauthenticatedError("invalid token: no sub claim")
    if not isinstance(project, str) or not project:
        raise UnauthenticatedError(f"invalid token: no project in claim {project_claim!r}")
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r for r in roles):
        raise UnauthenticatedError(f"invalid token: claim {roles_claim!r} must hold the roles "
                                   f"(a list of strings or a space-separated string)")
    return Principal(subject=subject, project_id=project, roles=frozenset(roles))


def should_fetch(*, known: bool, age: float | None, since_attempt: float | None, config: OidcConfig) -> bool:
    """Whether a token needing key `kid` fetches the JWKS now. age: of the keys held (None: none yet);
    since_attempt: since the last fetch, successful or not (None: never). Every fetch waits out refetch_seconds."""
    if since_attempt is not None and since_attempt < config.refetch_seconds:
        return False
    return age is None or not known or age >= config.max_age_seconds


# --- the provider's keys --------------------------------------------------------------------------------------------

def get_json(url: str, timeout: float) -> dict:
    """One bounded GET of a JSON object."""
    if not url.startswith(("https://", "http://")):
        raise UnavailableError(f"OIDC provider URL {url!r} is not http(s)")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - scheme checked above
            body = reply.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UnavailableError(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise UnavailableError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise UnavailableError(f"{url} did not answer JSON") from None
    if not isinstance(document, dict):
        raise UnavailableError(f"{url} did not answer a JSON object")
    return document


class JwksCache:
    """The provider's signing keys by kid, fetched when a token needs one not held (rate-limited) or when old."""

    def __init__(self, config: OidcConfig, fetch: Callable[[str, float], dict] = get_json,
                 clock: Callable[[], float] = time.monotonic):
        self._config, self._fetch, self._clock = config, fetch, clock
        self._lock = threading.Lock()
        self._keys: dict[str, dict] = {}
        self._fetched_at: float | None = None    # the keys held are from then
        self._attempted_at: float | None = None  # the last fetch, successful or not
        self._jwks_url = config.jwks_url
        self.fetches = 0                         # requests for the JWKS, for tests and logs
        self.generation = 0                      # moves with each key set fetched (auth.TokenCache entries)

    def wants_fetch(self, kid: str) -> bool:
        now = self._clock()
        return should_fetch(known=kid in self._keys,
                            age=None if self._fetched_at is None else now - self._fetched_at,
                            since_attempt=None if self._attempted_at is None else now - self._attempted_at,
                            config=self._config)

    def stale(self) -> bool:
        """No keys yet, or held for max_age_seconds: tokens verified with them are verified again (which fetches
        the set anew, so a key the provider withdrew stops working)."""
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._config.max_age_seconds

    def key(self, kid: str) -> dict:
        """The JWK named `kid`, fetching the set first when allowed; refuses an unknown kid."""
        if self.wants_fetch(kid):
            self.refresh(kid)
        jwk = self._keys.get(kid)
        if jwk is None:
            raise UnauthenticatedError(f"invalid token: unknown key id {kid!r} (not in the OIDC provider's JWKS)")
        return jwk

    def refresh(self, kid: str) -> None:
        """Fetches the set once (threads that queued behind a fetch see its result and fetch no more). Keeps the
        keys held when the provider fails; raises UnavailableError only if `kid` is then still unknown."""
        with self._lock:
            if not self.wants_fetch(kid):
                return
            self._attempted_at = self._clock()
            try:
                self._keys = self._fetch_keys()
                self._fetched_at = self._attempted_at
                self.generation += 1
            except UnavailableError as exc:
                log.warning("OIDC keys not fetched", extra={"fields": {"error": str(exc)}})
                if kid not in self._keys:
                    raise

    async def refresh_async(self, kid: str) -> None:
        """refresh on a thread, so that a slow provider does not stall the event loop."""
        if self.wants_fetch(kid):
            await asyncio.to_thread(self.refresh, kid)

    def _fetch_keys(self) -> dict[str, dict]:
        timeout = self._config.http_timeout_seconds
        if not self._jwks_url:
            discovery = self._fetch(self._config.discovery_url, timeout)
            if discovery.get("issuer") != self._config.issuer:
                raise UnavailableError(f"the discovery document names issuer {discovery.get('issuer')!r}, "
                                       f"not {self._config.issuer!r}")
            if not isinstance(discovery.get("jwks_uri"), str):
                raise UnavailableError("the discovery document has no jwks_uri")
            self._jwks_url = discovery["jwks_uri"]
        self.fetches += 1
        document = self._fetch(self._jwks_url, timeout)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise UnavailableError(f"{self._jwks_url} holds no 'keys' list")
        keys = {jwk["kid"]: jwk for jwk in entries
                if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and jwk.get("use", "sig") == "sig"}
        log.info("OIDC keys fetched", extra={"fields": {"kids": sorted(keys)}})
        return keys


class OidcVerifier:
    """Verifies a provider token: signature with the key its kid names, issuer, audience, times, claims."""

    def __init__(self, config: OidcConfig, keys: JwksCache | None = None):
        self.config = config
        self.keys = keys or JwksCache(config)

    @staticmethod
    def kid_of(header: Mapping[str, Any]) -> str:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError("invalid token: no key id (kid) in its header")
        return kid

    def verify(self, token: str, header: Mapping[str, Any]) -> Principal:
        return self.verify_expiring(token, header)[0]

    def verify_expiring(self, token: str, header: Mapping[str, Any]) -> tuple[Principal, float]:
        """verify, and when the token expires (its `exp`, epoch seconds)."""
        alg, kid = header.get("alg"), self.kid_of(header)
        jwk = self.keys.key(kid)
        check_key_fits(alg, kid, jwk)
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWKError as exc:
            raise UnauthenticatedError(f"invalid token: key {kid!r} of the provider is unusable: {exc}") from None
        config = self.config
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=config.audience, issuer=config.issuer,
                                leeway=config.leeway_seconds, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise UnauthenticatedError("token not yet valid (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError(f"invalid token: audience is not {config.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError(f"invalid token: issuer is not {config.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError(f"invalid token: signature does not verify with key {kid!r}") from None
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"invalid token: {exc}") from None
        return principal_from_claims(claims, config.project_claim, config.roles_claim), float(claims["exp"])
