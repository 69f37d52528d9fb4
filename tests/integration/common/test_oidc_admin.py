"""`cbr-admin token issue` as an operator runs it: its token works through `cbr`, its mistakes exit non-zero."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import jwt
import pytest

from tests.integration.cli.conftest import Cbr, addresses, one_error_line


async def admin(*args: str, cwd, **env: str) -> tuple[int, str, str]:
    """`python -m cbr_cli.admin` with exactly the CBR settings given."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CBR_")} | env
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "cbr_cli.admin", *args, cwd=cwd, env=environ,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_an_issued_token_works_through_the_cli(services, tmp_path):
    project = f"project-{uuid.uuid4().hex[:12]}"
    code, stdout, stderr = await admin("token", "issue", "--project", project, "--role", "cbr_full_access",
                                       "--ttl", "8h", "--subject", "alice", cwd=tmp_path,
                                       CBR_JWT_SECRET=services.jwt_secret)
    assert code == 0, stderr
    token = stdout.strip()
    claims = jwt.decode(token, services.jwt_secret, algorithms=["HS256"], issuer="cbr")
    assert (claims["project_id"], claims["roles"], claims["sub"]) == (project, ["cbr_full_access"], "alice")
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert project in stderr and "expires" in stderr

    cbr = Cbr({**addresses(services), "CBR_TOKEN": token}, tmp_path, project)
    vault = await cbr.json("vault", "create", "admin-vault", "--type", "disk", "--size", "10G")
    assert [v["vault_id"] for v in (await cbr.json("vault", "list"))["items"]] == [vault["vault_id"]]


async def test_the_secret_from_a_run_folder(services, tmp_path):
    """--run-dir reads stack.json as the embedded stack writes it; a read-only token reads but cannot write."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "stack.json").write_text(json.dumps({"jwt_secret": services.jwt_secret, "ports": {}, "dev_token": "",
                                                "dev_token_expires": 0}))
    project = f"project-{uuid.uuid4().hex[:12]}"
    code, stdout, stderr = await admin("token", "issue", "--project", project, "--role", "cbr_readonly",
                                       "--ttl", "1h30m", "--run-dir", str(run), cwd=tmp_path)
    assert code == 0, stderr
    claims = jwt.decode(stdout.strip(), services.jwt_secret, algorithms=["HS256"], issuer="cbr")
    assert claims["exp"] - claims["iat"] == 5400 and claims["sub"].startswith("cbr-admin:")
    cbr = Cbr({**addresses(services), "CBR_TOKEN": stdout.strip()}, tmp_path, project)
    assert (await cbr.json("vault", "list"))["count"] == 0
    denied = await cbr("vault", "create", "nope", "--type", "disk", "--size", "10G")
    assert denied.code == 7 and one_error_line(denied).startswith("error: PERMISSION_DENIED"), str(denied)


@pytest.mark.parametrize("args, env, words", [
    (["--role", "admin", "--ttl", "8h"], {"CBR_JWT_SECRET": "s" * 32}, "unknown role 'admin'"),
    (["--role", "service", "--ttl", "8h"], {"CBR_JWT_SECRET": "s" * 32}, "unknown role 'service'"),
    (["--role", "cbr_readonly", "--ttl", "8 hours"], {"CBR_JWT_SECRET": "s" * 32}, "not a duration"),
    (["--role", "cbr_readonly", "--ttl", "0s"], {"CBR_JWT_SECRET": "s" * 32}, "between 1 second"),
    (["--role", "cbr_readonly", "--ttl", "400d"], {"CBR_JWT_SECRET": "s" * 32}, "between 1 second"),
    (["--role", "cbr_readonly", "--ttl", "8h"], {}, "no signing secret"),
    (["--role", "cbr_readonly", "--ttl", "8h", "--run-dir", "nowhere"], {}, "stack.json does not exist"),
])
async def test_mistakes_exit_non_zero_with_one_line(tmp_path, args, env, words):
    code, stdout, stderr = await admin("token", "issue", "--project", "p1", *args, cwd=tmp_path, **env)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and words in stderr, stderr


async def test_a_missing_argument_is_a_usage_error(tmp_path):
    code, stdout, stderr = await admin("token", "issue", "--role", "cbr_readonly", "--ttl", "8h", cwd=tmp_path,
                                       CBR_JWT_SECRET="s" * 32)
    assert code == 2 and stdout == "" and "--project" in stderr
