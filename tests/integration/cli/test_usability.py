"""Names for ids, profiles, JSON errors, --version, completion, tables within 120 columns and the policies' next
run time, against the real services."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess

from tests.integration.cli.conftest import one_error_line

DAILY = "FREQ=DAILY;BYHOUR=6;BYMINUTE=0"


async def test_ambiguous_unknown_and_short_names(cbr, services):
    twins = await asyncio.gather(*(cbr.json("disk", "create", "twin", "--size", "1M") for _ in range(2)))
    vault = await cbr.json("vault", "create", "named", "--type", "disk", "--size", "1G")
    other_project = cbr.using(CBR_TOKEN=services.token(cbr.project_id + "-other"))
    ambiguous, ambiguous_json, unknown, short, elsewhere, by_name_filter = await asyncio.gather(
        cbr("vault", "add-resources", "named", "twin"),
        cbr("vault", "add-resources", "named", "twin", "--json"),
        cbr("vault", "show", "nameless"),
        cbr.json("vault", "show", vault["vault_id"][:8]),
        other_project("vault", "show", "named"),
        cbr.json("vault", "list", "--name", "nam"))
    assert ambiguous.code == 13 and ambiguous.stdout == ""
    line = one_error_line(ambiguous)
    assert line.startswith("error: 2 disk, server or file systems match 'twin': ")
    assert all(f"twin (disk {disk['resource_id']})" in line for disk in twins), line
    error = ambiguous_json.json_err()["error"]
    assert (error["code"], error["exit_code"], error["details"]["name"]) == ("AMBIGUOUS", 13, "twin")
    assert sorted(c["id"] for c in error["details"]["candidates"]) == sorted(d["resource_id"] for d in twins)
    assert unknown.code == 4 and "no vault named 'nameless'" in one_error_line(unknown)
    assert short == vault  # the short id a table shows resolves back
    assert elsewhere.code == 4  # names resolve within the caller's project only
    assert by_name_filter["count"] == 1

    [server] = await asyncio.gather(cbr.json("server", "create", "single", twins[1]["resource_id"]))
    typed = await cbr.json("vault", "create", "servers", "--type", "server", "--size", "1G", "--resource", "single")
    assert [r["resource_id"] for r in typed["resources"]] == [server["resource_id"]]  # --type narrows the names
    single = await cbr.json("disk", "create", "single", "--size", "1M")
    mixed = await cbr("vault", "add-resources", "named", "single")  # a server and a disk of that name
    assert mixed.code == 13 and "(server " in mixed.stderr and "(disk " in mixed.stderr
    added = await cbr.json("vault", "add-resources", "named", "single", twins[0]["resource_id"], "--type", "disk")
    assert added == {"added_resource_ids": [single["resource_id"], twins[0]["resource_id"]]}


def write_profiles(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_profiles_and_their_precedence(cbr, services, tmp_path):
    """--profile beats the environment (a wrong CBR_TOKEN there is overridden); the environment beats the profile
    CBR_PROFILE names; [default] is the last resort; a profile that is not there is a usage error."""
    endpoints = "".join(f"{name.lower()}_endpoint = {cbr.settings[f'CBR_{name}_ADDR']}\n"
                        for name in ("VAULT", "BACKUP", "POLICY", "REPLICATION"))
    token_file = tmp_path / "token"
    token_file.write_text(cbr.settings["CBR_TOKEN"] + "\n")
    config = tmp_path / "profiles.ini"
    write_profiles(config, f"[default]\n{endpoints}token_file = token\n\n"
                           f"[profile good]\n{endpoints}token = {cbr.settings['CBR_TOKEN']}\n\n"
                           f"[profile stale]\ntoken = not-a-token\n")
    await cbr.json("vault", "create", "mine", "--type", "disk", "--size", "1G")
    bare = cbr.using(**{key: "" for key in cbr.settings}, CBR_CONFIG_FILE=str(config))
    wrong_env = bare.using(CBR_TOKEN="not-a-token")
    by_flag, by_env_profile, defaulted, stale, missing, missing_file = await asyncio.gather(
        wrong_env.json("vault", "list", "--profile", "good"),
        wrong_env.using(CBR_PROFILE="good")("vault", "list"),
        bare.json("vault", "list"),
        bare("vault", "list", "--profile", "stale"),
        bare("vault", "list", "--profile", "nope"),
        bare.using(CBR_CONFIG_FILE=str(tmp_path / "none.ini"))("vault", "list"))
    assert [v["name"] for v in by_flag["items"]] == ["mine"]
    assert by_env_profile.code == 7 and "UNAUTHENTICATED" in one_error_line(by_env_profile)
    assert [v["name"] for v in defaulted["items"]] == ["mine"]  # endpoints and token_file of [default]
    assert stale.code == 7  # its token wins; the endpoints it lacks come from [default]
    assert missing.code == 2 and "no profile 'nope'" in one_error_line(missing)
    assert missing_file.code == 2 and "does not exist" in one_error_line(missing_file)


async def test_errors_as_json(cbr):
    usage, config, refused, plain = await asyncio.gather(
        cbr("vault", "create", "v", "--type", "tape", "--size", "1G", "--json"),
        cbr.using(CBR_VAULT_ADDR="")("vault", "list", "--json"),
        cbr("vault", "create", "no spaces", "--type", "disk", "--size", "1G", "--json"),
        cbr("vault", "create", "no spaces", "--type", "disk", "--size", "1G"))
    for result, code, exit_code in ((usage, "USAGE", 2), (config, "CONFIG", 2), (refused, "INVALID_ARGUMENT", 3)):
        assert result.code == exit_code and result.stdout == "", str(result)
        error = result.json_err()["error"]
        assert (error["code"], error["exit_code"]) == (code, exit_code), error
        assert set(error) == {"code", "message", "exit_code", "details"}
    assert refused.json_err()["error"]["details"] == {"cbr_code": "BackupService.6401"}
    assert "invalid choice" in usage.json_err()["error"]["message"]
    assert one_error_line(plain).startswith("error: INVALID_ARGUMENT (BackupService.6401)")


async def test_version_and_completion(cbr, tmp_path):
    from cbr_cli import __version__
    version, bash, zsh, unknown = await asyncio.gather(
        cbr.ok("--version"), cbr.ok("completion", "bash"), cbr.ok("completion", "zsh"), cbr("completion", "fish"))
    assert version.stdout.strip() == f"cbr {__version__}" and re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert unknown.code == 2
    assert zsh.stdout.startswith("#compdef cbr\n") and "bashcompinit" in zsh.stdout
    script = tmp_path / "cbr.bash"
    script.write_text(bash.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = (f'source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _cbr_complete; '
                 f'printf "%s\\n" "${{COMPREPLY[@]}}"')
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()

    assert {"vault", "backup", "policy", "completion", "--json", "--quiet"} <= set(complete("cbr", ""))
    assert complete("cbr", "vault", "cr") == ["create"]
    assert complete("cbr", "--profile", "prod", "backup", "re") == ["restore"]
    assert complete("cbr", "vault", "create", "x", "--type", "") == ["server", "disk", "file_system"]
    assert "--wait" in complete("cbr", "backup", "restore", "b", "--")


async def test_tables_fit_120_columns_with_names(cbr):
    long = "n" * 55  # names take up to 64 characters
    disk = await cbr.json("disk", "create", f"disk-{long}", "--size", "1M")
    policy = await cbr.json("policy", "create", f"p{long[:40]}", "--type", "backup", "--pattern", DAILY,
                            "--max-backups", "10", "--timezone", "Europe/Berlin")
    vault = await cbr.json("vault", "create", f"vault-{long}", "--type", "disk", "--size", "1G",
                           "--resource", disk["resource_id"])
    await cbr.ok("backup", "create", vault["vault_id"], "--name", f"backup-{long}", "--wait", timeout=90)
    commands = (("vault", "list"), ("disk", "list"), ("backup", "list"), ("task", "list"), ("policy", "list"))
    tables = await asyncio.gather(*(cbr.ok(*command) for command in commands))
    for command, table in zip(commands, tables):
        widths = [len(line) for line in table.stdout.splitlines()]
        assert widths and max(widths) <= 120, (command, table.stdout)
    backups = tables[2].stdout
    assert "vault-nnn" in backups and "disk-nnn" in backups and "…" in backups  # names, cut to fit
    assert vault["vault_id"] not in backups and vault["vault_id"][:8] not in backups
    assert policy["policy_id"][:8] in tables[4].stdout and policy["policy_id"] not in tables[4].stdout


async def test_policies_show_their_next_run_time(cbr):
    now = dt.datetime.now(dt.timezone.utc)
    daily, off = await asyncio.gather(
        cbr.json("policy", "create", "daily", "--type", "backup", "--pattern", DAILY),
        cbr.json("policy", "create", "off", "--type", "backup", "--pattern", DAILY, "--disabled"))
    listed, table, shown = await asyncio.gather(cbr.json("policy", "list"), cbr.ok("policy", "list"),
                                                cbr.ok("policy", "show", "daily"))
    next_run = dt.datetime.fromisoformat(daily["next_run_time"].replace("Z", "+00:00"))
    assert now < next_run <= now + dt.timedelta(days=1) and (next_run.hour, next_run.minute) == (6, 0)
    assert "next_run_time" not in off
    assert {p["name"]: p.get("next_run_time") for p in listed["items"]} == {"daily": daily["next_run_time"],
                                                                            "off": None}
    local = next_run.astimezone().strftime("%Y-%m-%d %H:%M")
    row = next(line for line in table.stdout.splitlines() if line.split()[1:2] == ["daily"])
    assert local in row and "NEXT RUN" in table.stdout
    assert any(line.split()[:1] == ["next_run_time"] and local in line for line in shown.stdout.splitlines())
    assert json.loads(json.dumps(listed))  # the JSON round-trips
