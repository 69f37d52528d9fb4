"""The settings' layers: --profile, the environment, --env-file, CBR_PROFILE, the found env file, [default]."""
from __future__ import annotations

import pytest

from cbr_cli.config import ConfigError, load_config

PROFILES = """\
[default]
vault_endpoint = default:1
backup_endpoint = default:2
token = default-token
timeout = 7

[profile prod]
vault_endpoint = prod:1
token_file = secrets/prod-token
tls_ca = certs/ca.pem
"""


@pytest.fixture
def home(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "prod-token").write_text("prod-token\n")
    (tmp_path / "config").write_text(PROFILES)
    return tmp_path


def env(home, **values) -> dict[str, str]:
    return {"CBR_CONFIG_FILE": str(home / "config"), **values}


def test_each_setting_from_the_highest_layer_that_has_it(home):
    work = home / "work"
    (work / ".run").mkdir(parents=True)
    (work / ".run" / "cbr.env").write_text("CBR_VAULT_ADDR=found:1\nCBR_POLICY_ADDR=found:3\n")
    bare = load_config(env(home), cwd=home)
    assert (bare.address("vault"), bare.address("backup"), bare.token, bare.timeout) == (
        "default:1", "default:2", "default-token", 7.0)
    found = load_config(env(home), cwd=work)  # the env file found beats [default]
    assert (found.address("vault"), found.address("policy"), found.address("backup")) == (
        "found:1", "found:3", "default:2")
    chosen = load_config(env(home, CBR_PROFILE="prod"), cwd=work)  # CBR_PROFILE beats the found env file
    assert (chosen.address("vault"), chosen.token, chosen.tls_ca) == ("prod:1", "prod-token",
                                                                       str(home / "certs" / "ca.pem"))
    environment = load_config(env(home, CBR_PROFILE="prod", CBR_TOKEN="env-token"), cwd=work)
    assert environment.token == "env-token"  # the environment beats CBR_PROFILE's profile
    flagged = load_config(env(home, CBR_TOKEN="env-token", CBR_VAULT_ADDR="env:1"), cwd=work, profile="prod")
    assert (flagged.token, flagged.address("vault")) == ("prod-token", "prod:1")  # --profile beats everything
    assert load_config(env(home), cwd=home, timeout=3.0).timeout == 3.0


def test_mistakes_are_named(home, tmp_path):
    with pytest.raises(ConfigError, match="no profile 'staging'.*profiles there: default, prod"):
        load_config(env(home), cwd=home, profile="staging")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"CBR_CONFIG_FILE": str(tmp_path / "missing")}, cwd=home)
    (home / "bad").write_text("[prod]\ntoken = x\n")
    with pytest.raises(ConfigError, match=r"\[prod\] should be \[default\] or \[profile NAME\]"):
        load_config({"CBR_CONFIG_FILE": str(home / "bad")}, cwd=home)
    (home / "bad").write_text("[default]\nendpoint = x\n")
    with pytest.raises(ConfigError, match="unknown key 'endpoint'"):
        load_config({"CBR_CONFIG_FILE": str(home / "bad")}, cwd=home)
    # No file where none was asked for is no error: the XDG default.
    assert load_config({"XDG_CONFIG_HOME": str(tmp_path / "nowhere")}, cwd=tmp_path).token == ""
