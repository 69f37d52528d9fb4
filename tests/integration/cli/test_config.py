"""Where `cbr` finds the services and its token: the environment first, then `.run/cbr.env` or --env-file."""
from __future__ import annotations

import asyncio
import socket

from tests.integration.cli.conftest import one_error_line


def write_env(path, settings: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# as make up writes it\n" + "".join(f"{k}={v}\n" for k, v in settings.items()))


async def test_env_file_in_the_run_folder_when_the_environment_lacks_it(cbr, tmp_path):
    write_env(tmp_path / ".run" / "cbr.env", cbr.settings)
    bare = cbr.using(**{key: "" for key in cbr.settings})
    below = tmp_path / "some" / "folder"
    below.mkdir(parents=True)
    here, from_below = await asyncio.gather(bare.json("vault", "list"), bare.json("vault", "list", cwd=below))
    assert here["count"] == 0 and from_below["count"] == 0


async def test_env_file_option_and_precedence(cbr, tmp_path):
    elsewhere = tmp_path / "elsewhere.env"
    write_env(elsewhere, {**cbr.settings, "CBR_TOKEN": "not-a-token"})
    bare = cbr.using(**{key: "" for key in cbr.settings})
    token_only = cbr.using(**{key: "" for key in cbr.settings if key != "CBR_TOKEN"})
    rejected, overridden, missing = await asyncio.gather(
        bare("--env-file", str(elsewhere), "vault", "list"),
        token_only.json("vault", "list", "--env-file", str(elsewhere)),  # the environment wins over the file
        bare("vault", "list", "--env-file", str(tmp_path / "nope.env")))
    assert rejected.code == 7
    assert overridden["count"] == 0
    assert missing.code == 2 and "cannot read env file" in one_error_line(missing)


async def test_missing_and_unreachable_service(cbr):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refuses connections
        unset, down, tls = await asyncio.gather(
            cbr.using(CBR_VAULT_ADDR="")("vault", "list"),
            cbr.using(CBR_BACKUP_ADDR=closed)("disk", "list", "--timeout", "5"),
            cbr.using(CBR_TLS_CA="/nonexistent/ca.pem")("vault", "list"))
    assert unset.code == 2 and "CBR_VAULT_ADDR is not set" in one_error_line(unset)
    assert down.code == 9 and one_error_line(down).startswith("error: UNAVAILABLE")
    assert tls.code == 2 and "CBR_TLS_CA" in one_error_line(tls)
