"""Services trusting a local OpenID Connect provider (keys made here, JWKS over HTTP): good RS256 and ES256 tokens
work over real gRPC, every bad one is UNAUTHENTICATED, a rotated key is picked up, and a flood of unknown key ids
costs the provider one fetch."""
from __future__ import annotations

import time

import grpc
import jwt
import pytest

from cbr.policy.v1 import policy_pb2 as pol
from cbr.vault.v1 import vault_pb2 as vp
from tests.integration.cli.conftest import Cbr, addresses, one_error_line
from tests.support.calls import create_vault, expect_error, vault_count
from tests.support.oidc import AUDIENCE, Provider, hmac_token, new_key, public_pem
from tests.support.services import Services

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def provider():
    provider = Provider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
async def oidc_services(infra, provider):
    """The four services trusting the provider, its keys found by discovery; every unknown kid may refetch."""
    services = await Services.start(infra, workers=0, **provider.settings(oidc_jwks_refetch_seconds=0.0))
    yield services
    await services.stop()


def caller(services, provider, project_id: str | None = None, **token_args):
    probe = services.caller(project_id)
    return services.caller(probe.project_id, token=provider.token(probe.project_id, **token_args))


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_good_tokens_work(oidc_services, provider, kid):
    user = caller(oidc_services, provider, kid=kid)
    vault = await create_vault(user, name=f"oidc-{kid}")
    listed = await user.vault.ListVaults(vp.ListVaultsRequest())
    assert [v.vault_id for v in listed.vaults] == [vault.vault_id]
    reader = caller(oidc_services, provider, user.project_id, kid=kid, roles=("cbr_readonly",))
    assert (await reader.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.name == f"oidc-{kid}"
    await expect_error(reader.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id)),
                       grpc.StatusCode.PERMISSION_DENIED)
    stranger = caller(oidc_services, provider, kid=kid)
    await expect_error(stranger.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id)),
                       grpc.StatusCode.NOT_FOUND)


async def test_hs256_tokens_keep_working(oidc_services):
    user = oidc_services.caller()
    await create_vault(user)
    assert await vault_count(user) == 1


def bad_tokens(provider, project_id: str) -> dict[str, tuple[str, str]]:
    """name -> (token, words of the refusal)."""
    now = int(time.time())
    good_claims = provider.claims(project_id)
    return {
        "unknown key id": (provider.token(project_id, kid="never-published", key=new_key("RSA")),
                           "unknown key id 'never-published'"),
        "forged signature": (provider.token(project_id, kid="rsa-1", key=new_key("RSA")), "signature"),
        "wrong audience": (provider.token(project_id, aud="someone-else"), "audience"),
        "wrong issuer": (provider.token(project_id, iss="http://127.0.0.1:1/evil"), "issuer"),
        "expired": (provider.token(project_id, kid="ec-1", iat=now - 7200, exp=now - 3600), "expired"),
        "not yet valid": (provider.token(project_id, nbf=now + 3600), "not yet valid"),
        "hs256 signed with the rsa public key": (
            hmac_token(good_claims, public_pem(provider.keys["rsa-1"]), {"kid": "rsa-1"}), "signature"),
        "alg none": (hmac_token(good_claims, b"", {"kid": "rsa-1"}, alg="none"), "'none' is not accepted"),
        "rs256 header on an ec key": (provider.token(project_id, kid="ec-1", key=new_key("RSA")),
                                      "does not fit key 'ec-1'"),
        "no project claim": (provider.token(project_id, project_id=None), "no project"),
        "no roles claim": (provider.token(project_id, roles=None), "roles"),
    }


@pytest.mark.parametrize("case", ["unknown key id", "forged signature", "wrong audience", "wrong issuer", "expired",
                                  "not yet valid", "hs256 signed with the rsa public key", "alg none",
                                  "rs256 header on an ec key", "no project claim", "no roles claim"])
async def test_bad_tokens_are_unauthenticated(oidc_services, provider, case):
    owner = caller(oidc_services, provider)
    await create_vault(owner)
    token, words = bad_tokens(provider, owner.project_id)[case]
    intruder = oidc_services.caller(owner.project_id, token=token)
    error = await expect_error(intruder.vault.ListVaults(vp.ListVaultsRequest()), UNAUTH)
    assert words.lower() in error.details().lower(), error.details()
    await expect_error(intruder.vault.CreateVault(vp.CreateVaultRequest(name="x", size_gb=1)), UNAUTH)
    await expect_error(intruder.policies.CreatePolicy(pol.CreatePolicyRequest(name="p")), UNAUTH)
    assert await vault_count(owner) == 1


async def test_a_rotated_key_is_picked_up(oidc_services, provider):
    user = caller(oidc_services, provider)
    await create_vault(user)
    provider.rotate("rsa-2", "RSA")
    provider.rotate("ec-2", "EC")
    for kid in ("rsa-2", "ec-2"):
        rotated = caller(oidc_services, provider, user.project_id, kid=kid)
        assert await vault_count(rotated) == 1


async def test_a_token_from_the_provider_works_through_the_cli(oidc_services, provider, tmp_path):
    project_id = oidc_services.caller().project_id
    cbr = Cbr({**addresses(oidc_services), "CBR_TOKEN": provider.token(project_id, kid="ec-1")}, tmp_path, project_id)
    vault = await cbr.json("vault", "create", "oidc-cli", "--type", "disk", "--size", "10G")
    listed = await cbr.json("vault", "list")
    assert [v["vault_id"] for v in listed["items"]] == [vault["vault_id"]]
    expired = await cbr.using(CBR_TOKEN=provider.token(project_id, exp=int(time.time()) - 3600))("vault", "list")
    assert expired.code == 7 and one_error_line(expired).startswith("error: UNAUTHENTICATED"), str(expired)
    assert "expired" in expired.stderr
    wrong_audience = await cbr.using(CBR_TOKEN=provider.token(project_id, aud="other"))("vault", "list")
    assert wrong_audience.code == 7 and "audience" in one_error_line(wrong_audience), str(wrong_audience)


async def test_profiles_carry_provider_tokens_and_bad_ones_are_refused(oidc_services, provider, tmp_path):
    """A config file like the AWS CLI's: endpoints and a provider's token per profile, picked with --profile; a
    forged, an expired and a wrong-audience token each end UNAUTHENTICATED (exit 7), whatever the command."""
    project_id = oidc_services.caller().project_id
    endpoints = "\n".join(f"{name}_endpoint = {runtime.address}" for name, runtime in oidc_services.runtimes.items())
    tokens = {"alice": provider.token(project_id, kid="rsa-1"),
              "forged": provider.token(project_id, kid="rsa-1", key=new_key("RSA")),
              "expired": provider.token(project_id, exp=int(time.time()) - 3600),
              "audience": provider.token(project_id, aud="other")}
    config = tmp_path / "config"
    config.write_text("".join(f"[profile {name}]\n{endpoints}\ntoken = {token}\n\n" for name, token in tokens.items()))
    cbr = Cbr({"CBR_CONFIG_FILE": str(config)}, tmp_path, project_id)
    created = (await cbr.ok("--profile", "alice", "vault", "create", "via-profile", "--type", "disk", "--size",
                            "10G", "-q")).stdout.split()
    listed = (await cbr.ok("--profile", "alice", "vault", "list", "-q")).stdout.split()
    assert created == listed and len(created) == 1
    for name, reason in (("forged", "signature"), ("expired", "expired"), ("audience", "audience")):
        refused = await cbr("--profile", name, "vault", "list")
        line = one_error_line(refused)
        assert refused.code == 7 and line.startswith("error: UNAUTHENTICATED") and reason in line, str(refused)


async def test_a_flood_of_unknown_key_ids_fetches_the_keys_once(infra, provider):
    """A service that refetches at most once an hour (its JWKS URL given, no discovery): the first unknown kid
    fetches, the rest are refused from what it holds."""
    provider_before = provider.jwks_fetches()
    services = await Services.start(infra, workers=0,
                                    **provider.settings(oidc_jwks_url=provider.jwks_url,
                                                        oidc_jwks_refetch_seconds=3600.0))
    try:
        user = caller(services, provider, kid="rsa-1")
        assert await vault_count(user) == 0
        fetched = provider.jwks_fetches()
        assert fetched == provider_before + 1   # the vault service's first fetch
        for n in range(25):
            intruder = services.caller(user.project_id, token=provider.token(
                user.project_id, kid=f"made-up-{n}", key=new_key("EC")))
            await expect_error(intruder.vault.ListVaults(vp.ListVaultsRequest()), UNAUTH)
        assert provider.jwks_fetches() == fetched
        assert await vault_count(caller(services, provider, user.project_id, kid="ec-1")) == 0
    finally:
        await services.stop()


def test_provider_tokens_carry_what_the_service_checks(provider):
    """The test provider itself: its tokens verify with its published keys (so refusals above are the service's)."""
    token = provider.token("p1", kid="ec-1")
    claims = jwt.decode(token, provider.keys["ec-1"].public_key(), algorithms=["ES256"], audience=AUDIENCE,
                        issuer=provider.issuer)
    assert claims["project_id"] == "p1"
