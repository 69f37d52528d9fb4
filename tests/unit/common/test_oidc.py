"""OIDC rules: which key fits which algorithm, claim mapping, when the JWKS is fetched, and every refusal."""
from __future__ import annotations

import time

import jwt
import pytest

from cbr_common import auth, errors
from cbr_common.oidc import (JwksCache, OidcConfig, OidcVerifier, check_key_fits, claim_at, principal_from_claims,
                             should_fetch)
from cbr_common.settings import Settings, SettingsError
from tests.support.oidc import hmac_token, new_key, public_jwk, public_pem

ISSUER, AUDIENCE, SECRET = "https://idp.example", "cbr-api", "k" * 32
CONFIG = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://idp.example/jwks")
RSA_KEY, EC_KEY = new_key("RSA"), new_key("EC")
Unauthenticated = errors.UnauthenticatedError


class FakeProvider:
    """The fetch function of a JwksCache: counts requests, answers the keys it holds (or fails)."""

    def __init__(self, keys: dict):
        self.keys, self.urls, self.down = dict(keys), [], False

    def __call__(self, url: str, timeout: float) -> dict:
        self.urls.append(url)
        if self.down:
            raise errors.UnavailableError("provider down")
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": "https://idp.example/discovered-jwks"}
        return {"keys": [public_jwk(kid, key) for kid, key in self.keys.items()]}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claims(**changes) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "project_id": "proj", "roles": ["cbr_readonly"],
            "iat": now, "exp": now + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(kid: str, key, alg: str, **changes) -> str:
    return jwt.encode(claims(**changes), key, algorithm=alg, headers={"kid": kid})


def authenticator(config: OidcConfig = CONFIG, provider: FakeProvider | None = None, clock=None):
    provider = provider or FakeProvider({"rsa-1": RSA_KEY, "ec-1": EC_KEY})
    keys = JwksCache(config, fetch=provider, clock=clock or Clock())
    return auth.Authenticator(SECRET, OidcVerifier(config, keys)), provider


@pytest.mark.parametrize("alg, jwk, fits", [
    ("RS256", {"kty": "RSA"}, True),
    ("RS256", {"kty": "RSA", "alg": "RS256"}, True),
    ("ES256", {"kty": "EC", "crv": "P-256"}, True),
    ("RS256", {"kty": "EC", "crv": "P-256"}, False),       # an RSA header on an EC key
    ("ES256", {"kty": "RSA"}, False),
    ("ES256", {"kty": "EC", "crv": "P-384"}, False),       # ES256 is P-256 only
    ("RS256", {"kty": "RSA", "alg": "RS512"}, False),      # the key is published for another algorithm
    ("HS256", {"kty": "oct"}, False),
    ("none", {"kty": "RSA"}, False),
])
def test_key_fits_algorithm(alg, jwk, fits):
    if fits:
        check_key_fits(alg, "k1", jwk)
    else:
        with pytest.raises(Unauthenticated):
            check_key_fits(alg, "k1", jwk)


def test_claims_at_dotted_paths():
    claims_ = {"realm_access": {"roles": ["a"]}, "cbr.project": "p", "n": 1}
    assert claim_at(claims_, "realm_access.roles") == ["a"]
    assert claim_at(claims_, "cbr.project") == "p"          # a claim named with a dot wins
    assert claim_at(claims_, "realm_access.missing") is None
    assert claim_at(claims_, "n.deeper") is None


def test_principal_from_claims():
    principal = principal_from_claims({"sub": "bob", "tenant": {"id": "t1"}, "scope": "cbr_readonly extra"},
                                      "tenant.id", "scope")
    assert (principal.subject, principal.project_id, principal.roles) == ("bob", "t1",
                                                                         {"cbr_readonly", "extra"})
    for bad in ({"tenant": {"id": "t1"}, "scope": "r"},               # no sub
                {"sub": "b", "scope": "r"},                          # no project
                {"sub": "b", "tenant": {"id": ""}, "scope": "r"},     # empty project
                {"sub": "b", "tenant": {"id": "t1"}},                  # no roles
                {"sub": "b", "tenant": {"id": "t1"}, "scope": []},     # empty roles
                {"sub": "b", "tenant": {"id": "t1"}, "scope": [1]}):   # roles not strings
        with pytest.raises(Unauthenticated):
            principal_from_claims(bad, "tenant.id", "scope")


@pytest.mark.parametrize("known, age, since_attempt, fetch", [
    (False, None, None, True),     # nothing held yet
    (False, 100.0, 100.0, True),   # unknown kid, last fetch long ago
    (False, 5.0, 5.0, False),      # unknown kid, but a fetch was just made: rate-limited
    (True, 5.0, 5.0, False),
    (True, 100.0, 100.0, False),   # known and young
    (True, 4000.0, 4000.0, True),  # known but older than max age
    (True, 4000.0, 10.0, False),   # old, but the last (failed) attempt was just now
])
def test_should_fetch(known, age, since_attempt, fetch):
    assert should_fetch(known=known, age=age, since_attempt=since_attempt, config=CONFIG) is fetch


def test_good_rs256_and_es256_tokens():
    authenticator_, _ = authenticator()
    for token in (sign("rsa-1", RSA_KEY, "RS256"), sign("ec-1", EC_KEY, "ES256")):
        principal = authenticator_.verify(token)
        assert (principal.subject, principal.project_id, principal.roles) == ("alice", "proj", {"cbr_readonly"})


def test_hs256_tokens_keep_working_beside_oidc():
    authenticator_, provider = authenticator()
    principal = authenticator_.verify(auth.issue_token(SECRET, "proj", "svc", ["service"]))
    assert principal.roles == {"service"} and provider.urls == []
    with pytest.raises(Unauthenticated, match="not accepted"):
        auth.Authenticator("", None).verify(hmac_token(claims(iss="cbr"), b""))


def rejections() -> dict[str, tuple[str, str]]:
    """name -> (token, words the refusal must hold)."""
    now = int(time.time())
    return {
        "unknown kid": (sign("nobody", new_key("RSA"), "RS256"), "unknown key id 'nobody'"),
        "forged signature": (sign("rsa-1", new_key("RSA"), "RS256"), "signature"),
        "wrong audience": (sign("rsa-1", RSA_KEY, "RS256", aud="other-api"), "audience"),
        "no audience": (sign("rsa-1", RSA_KEY, "RS256", aud=None), "aud"),
        "wrong issuer": (sign("rsa-1", RSA_KEY, "RS256", iss="https://evil.example"), "issuer"),
        "expired": (sign("ec-1", EC_KEY, "ES256", exp=now - 600), "expired"),
        "no expiry": (sign("ec-1", EC_KEY, "ES256", exp=None), "exp"),
        "not yet valid": (sign("rsa-1", RSA_KEY, "RS256", nbf=now + 600), "not yet valid"),
        "hs256 with the rsa public key": (hmac_token(claims(), public_pem(RSA_KEY), {"kid": "rsa-1"}), "signature"),
        "alg none": (hmac_token(claims(), b"", {"kid": "rsa-1"}, alg="none"), "'none' is not accepted"),
        "rs256 header on an ec key": (sign("ec-1", RSA_KEY, "RS256"), "does not fit key 'ec-1'"),
        "no kid": (jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "no key id"),
        "no project": (sign("rsa-1", RSA_KEY, "RS256", project_id=None), "no project"),
        "no roles": (sign("rsa-1", RSA_KEY, "RS256", roles=None), "roles"),
        "rs384": (sign("rsa-1", RSA_KEY, "RS384"), "'RS384' is not accepted"),
    }


@pytest.mark.parametrize("case", list(rejections()))
def test_rejections(case):
    token, words = rejections()[case]
    authenticator_, _ = authenticator()
    with pytest.raises(Unauthenticated, match="(?i)" + words.replace("(", r"\(")):
        authenticator_.verify(token)


def test_a_flood_of_unknown_kids_fetches_once_per_interval():
    clock = Clock()
    authenticator_, provider = authenticator(clock=clock)
    authenticator_.verify(sign("rsa-1", RSA_KEY, "RS256"))
    for n in range(50):
        with pytest.raises(Unauthenticated, match="unknown key id"):
            authenticator_.verify(sign(f"made-up-{n}", RSA_KEY, "RS256"))
    assert len(provider.urls) == 1
    clock.now += CONFIG.refetch_seconds
    provider.keys["rsa-2"] = rotated = new_key("RSA")       # the provider rotated meanwhile
    assert authenticator_.verify(sign("rsa-2", rotated, "RS256")).project_id == "proj"
    assert len(provider.urls) == 2


def test_old_keys_are_fetched_again_and_kept_while_the_provider_is_down():
    clock = Clock()
    authenticator_, provider = authenticator(clock=clock)
    authenticator_.verify(sign("rsa-1", RSA_KEY, "RS256"))
    clock.now += CONFIG.max_age_seconds
    provider.down = True
    assert authenticator_.verify(sign("rsa-1", RSA_KEY, "RS256")).subject == "alice"  # held keys still serve
    assert len(provider.urls) == 2
    clock.now += CONFIG.refetch_seconds
    with pytest.raises(errors.UnavailableError, match="provider down"):
        authenticator_.verify(sign("new", new_key("RSA"), "RS256"))
    provider.down = False
    clock.now += CONFIG.refetch_seconds
    del provider.keys["rsa-1"]                                # a key the provider withdrew stops working
    with pytest.raises(Unauthenticated, match="unknown key id 'rsa-1'"):
        authenticator_.verify(sign("rsa-1", RSA_KEY, "RS256"))


def test_discovery_finds_the_jwks():
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE)
    authenticator_, provider = authenticator(config)
    authenticator_.verify(sign("ec-1", EC_KEY, "ES256"))
    assert provider.urls == [f"{ISSUER}/.well-known/openid-configuration", "https://idp.example/discovered-jwks"]


def test_configurable_claims():
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://idp.example/jwks",
                        project_claim="tenant", roles_claim="realm_access.roles")
    authenticator_, _ = authenticator(config)
    token = sign("rsa-1", RSA_KEY, "RS256", project_id=None, roles=None, tenant="t9",
                 realm_access={"roles": ["cbr_full_access"]})
    principal = authenticator_.verify(token)
    assert (principal.project_id, principal.roles) == ("t9", {"cbr_full_access"})


def test_settings():
    env = {"CBR_DATABASE_URL": "db", "CBR_NATS_URL": "nats", "CBR_JWT_SECRET": SECRET}
    assert Settings.from_env("vault", env).oidc_issuer == ""
    settings = Settings.from_env("vault", {**env, "CBR_OIDC_ISSUER": ISSUER, "CBR_OIDC_AUDIENCE": AUDIENCE,
                                           "CBR_OIDC_ROLES_CLAIM": "groups"})
    config = OidcConfig.from_settings(settings)
    assert (config.issuer, config.audience, config.roles_claim, config.project_claim) == (
        ISSUER, AUDIENCE, "groups", "project_id")
    for bad in ({"CBR_OIDC_ISSUER": ISSUER},                                            # no audience
                {"CBR_OIDC_JWKS_URL": "https://idp/jwks", "CBR_OIDC_AUDIENCE": AUDIENCE},  # no issuer
                {"CBR_OIDC_ISSUER": "idp.example", "CBR_OIDC_AUDIENCE": AUDIENCE},      # not a URL
                {"CBR_OIDC_ISSUER": ISSUER, "CBR_OIDC_AUDIENCE": AUDIENCE, "CBR_OIDC_HTTP_TIMEOUT_SECONDS": "0"}):
        with pytest.raises(SettingsError, match="CBR_OIDC"):
            Settings.from_env("vault", {**env, **bad})


async def test_keys_are_fetched_off_the_event_loop():
    """The interceptor awaits prepare() before verify(): the fetch runs on a thread, verify then finds the key."""
    import threading
    threads = []
    provider = FakeProvider({"rsa-1": RSA_KEY})

    def fetch(url, timeout):
        threads.append(threading.current_thread())
        return provider(url, timeout)
    keys = JwksCache(CONFIG, fetch=fetch, clock=Clock())
    authenticator_ = auth.Authenticator(SECRET, OidcVerifier(CONFIG, keys))
    metadata = (("authorization", f"Bearer {sign('rsa-1', RSA_KEY, 'RS256')}"),)
    await authenticator_.prepare(metadata)
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert authenticator_.principal_from_metadata(metadata).subject == "alice"
    assert len(threads) == 1
    hs256 = auth.issue_token(SECRET, "p", "s", ["service"])
    for other in ((), (("authorization", "Bearer junk"),), (("authorization", f"Bearer {hs256}"),)):
        await authenticator_.prepare(other)                  # nothing to fetch for these
    assert len(threads) == 1
