"""The cache of verified tokens: a hit skips verification, and expiry, a withdrawn key and the bound are honored."""
from __future__ import annotations

import jwt
import pytest

from cbr_common import auth, errors
from cbr_common.oidc import JwksCache, OidcConfig, OidcVerifier
from tests.support.oidc import new_key
from tests.unit.common.test_oidc import AUDIENCE, ISSUER, Clock, FakeProvider, sign

SECRET = "k" * 32
PRINCIPAL = auth.Principal("alice", "proj", frozenset({"cbr_readonly"}))


class CountingDecode:
    """jwt.decode, counted: how many tokens were really verified."""

    def __init__(self, monkeypatch):
        self.calls, real = 0, jwt.decode

        def decode(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(jwt, "decode", decode)


def test_a_token_is_verified_once_then_served_from_the_cache(monkeypatch):
    decode = CountingDecode(monkeypatch)
    authenticator = auth.Authenticator(SECRET)
    token = auth.issue_token(SECRET, "proj", "alice", ["cbr_readonly"])
    first = authenticator.verify(token)
    assert authenticator.verify(token) == first == PRINCIPAL
    assert decode.calls == 1
    assert len(authenticator.cache) == 1


def test_an_entry_ends_when_the_token_expires():
    clock = Clock()
    cache = auth.TokenCache(clock=clock)
    cache.put("t", PRINCIPAL, expires=clock.now + 10)
    clock.now += 9.9
    assert cache.get("t") == PRINCIPAL
    clock.now += 0.1
    assert cache.get("t") is None
    assert len(cache) == 0  # dropped, not kept past its life


def test_an_entry_lives_at_most_max_life_seconds():
    clock = Clock()
    cache = auth.TokenCache(max_life_seconds=60, clock=clock)
    cache.put("t", PRINCIPAL, expires=clock.now + 3600)
    clock.now += 60
    assert cache.get("t") is None


def test_an_expired_cached_token_is_verified_again_and_refused(monkeypatch):
    """The cache's clock passes the token's exp: the token is not served from the cache, and jwt refuses it."""
    decode = CountingDecode(monkeypatch)
    issued = 1_000_000.0
    token = auth.issue_token(SECRET, "proj", "alice", ["cbr_readonly"], ttl_seconds=60, now=issued)
    clock = Clock()
    clock.now = issued + 30
    authenticator = auth.Authenticator(SECRET, cache=auth.TokenCache(clock=clock))
    authenticator.cache.put(token, PRINCIPAL, expires=issued + 60)  # as if verified while it was valid
    assert authenticator.verify(token) == PRINCIPAL and decode.calls == 0
    clock.now = issued + 60
    with pytest.raises(errors.UnauthenticatedError, match="expired"):
        authenticator.verify(token)
    assert decode.calls == 1


def test_refused_tokens_are_not_cached():
    authenticator = auth.Authenticator(SECRET)
    forged = auth.issue_token("x" * 32, "proj", "mallory", ["cbr_full_access"])
    for _ in range(2):
        with pytest.raises(errors.UnauthenticatedError):
            authenticator.verify(forged)
    assert len(authenticator.cache) == 0


def test_the_cache_is_bounded_least_recently_used_first():
    cache = auth.TokenCache(max_entries=3)
    for name in "abc":
        cache.put(name, PRINCIPAL, expires=2e9)
    assert cache.get("a") == PRINCIPAL  # a is now the most recently used
    cache.put("d", PRINCIPAL, expires=2e9)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert all(cache.get(name) == PRINCIPAL for name in "acd")


def test_a_key_the_provider_withdrew_stops_a_cached_token():
    """Once the key set is due a fetch (max age), a cached OIDC token is verified again against the new set."""
    rsa = new_key("RSA")
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://idp.example/jwks", max_age_seconds=600)
    provider, clock = FakeProvider({"rsa-1": rsa}), Clock()
    authenticator = auth.Authenticator(SECRET, OidcVerifier(config, JwksCache(config, fetch=provider, clock=clock)))
    token = sign("rsa-1", rsa, "RS256")
    assert authenticator.verify(token).subject == "alice"
    clock.now += 300
    assert authenticator.verify(token).subject == "alice"
    assert len(provider.urls) == 1  # the second answer came from the cache
    del provider.keys["rsa-1"]
    clock.now += 300  # the keys are now max_age old
    with pytest.raises(errors.UnauthenticatedError, match="unknown key id"):
        authenticator.verify(token)
    assert len(provider.urls) == 2


def test_a_new_key_set_verifies_cached_tokens_again():
    """Keys fetched for another token (an unknown kid) make the entries verified with the old set stale."""
    rsa, other = new_key("RSA"), new_key("RSA")
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://idp.example/jwks", refetch_seconds=0)
    provider = FakeProvider({"rsa-1": rsa})
    authenticator = auth.Authenticator(SECRET, OidcVerifier(config, JwksCache(config, fetch=provider,
                                                                              clock=Clock())))
    token = sign("rsa-1", rsa, "RS256")
    authenticator.verify(token)
    provider.keys = {"rsa-2": other}  # rsa-1 withdrawn, rsa-2 published
    authenticator.verify(sign("rsa-2", other, "RS256"))  # fetches the new set
    with pytest.raises(errors.UnauthenticatedError, match="unknown key id"):
        authenticator.verify(token)
