"""The `cbr` command run as a subprocess (the services share the test's event loop, so it must not block)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

CONFIG_KEYS = ("CBR_VAULT_ADDR", "CBR_BACKUP_ADDR", "CBR_POLICY_ADDR", "CBR_REPLICATION_ADDR", "CBR_TOKEN",
               "CBR_TLS_CA", "CBR_TLS_CERT", "CBR_TLS_KEY", "CBR_PROFILE", "CBR_CONFIG_FILE")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def json_err(self):
        """The one JSON error line on stderr (--json)."""
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, str(self)
        return json.loads(lines[0])

    def __str__(self) -> str:  # what a failed assertion shows
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Cbr:
    """Runs `python -m cbr_cli` in `cwd` with exactly the CBR settings given (none from the outer environment)."""

    def __init__(self, settings: dict[str, str], cwd: Path, project_id: str = ""):
        self.settings, self.cwd, self.project_id = settings, cwd, project_id

    def using(self, **settings: str) -> "Cbr":
        """The same command with settings changed; an empty value removes the setting."""
        merged = {**self.settings, **settings}
        return Cbr({k: v for k, v in merged.items() if v}, self.cwd, self.project_id)

    async def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 20) -> Result:
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_KEYS}
        env.update(self.settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cbr_cli", *args, cwd=cwd or self.cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise
        return Result(process.returncode, stdout.decode(), stderr.decode())

    async def ok(self, *args: str, **kwargs) -> Result:
        result = await self(*args, **kwargs)
        assert result.code == 0, str(result)
        return result

    async def json(self, *args: str, **kwargs):
        return (await self.ok(*args, "--json", **kwargs)).json()


def addresses(services) -> dict[str, str]:
    return {f"CBR_{name.upper()}_ADDR": runtime.address for name, runtime in services.runtimes.items()}


@pytest.fixture
def cbr(services, tmp_path) -> Cbr:
    """The command as a full-access user of a project of its own, configured through the environment (and no
    config file: CBR_CONFIG_FILE names one that a test may write)."""
    project_id = f"project-{uuid.uuid4().hex[:12]}"
    return Cbr({**addresses(services), "CBR_TOKEN": services.token(project_id),
                "XDG_CONFIG_HOME": str(tmp_path / "config-home")}, tmp_path, project_id)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), str(result)
    return lines[0]
