"""`cbr-admin`: operator commands that need the stack's own secret, not a user's token.

    cbr-admin token issue --project P --role R --ttl 8h [--subject S] [--run-dir DIR]

prints an HS256 token for project P with role R (repeatable), valid for the ttl. The secret is CBR_JWT_SECRET, or
the one a run folder's stack.json records (`--run-dir .run`, the embedded stack's folder)."""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
from pathlib import Path

from cbr_common import auth

# The roles a person can hold (README "Roles": a project's users, an operator's auditor); `service` and
# `region_peer` are the services' own.
USER_ROLES = (auth.ROLE_FULL_ACCESS, auth.ROLE_BACKUPS_VAULTS_FULL_ACCESS, auth.ROLE_READONLY, auth.ROLE_AUDITOR)
MAX_TTL_SECONDS = 366 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TTL = re.compile(r"(\d+)([smhdw])")


class AdminError(Exception):
    """A clear message for the operator; the command exits non-zero."""


def parse_ttl(text: str) -> int:
    """'90' (seconds), '30m', '8h', '7d', '1w', '1h30m' -> seconds; positive and at most a year."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    elif re.fullmatch(r"(?:\d+[smhdw])+", text):
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _TTL.findall(text))
    else:
        raise AdminError(f"ttl {text!r} is not a duration like 90s, 30m, 8h, 7d or 1h30m")
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise AdminError(f"ttl must be between 1 second and {MAX_TTL_SECONDS // 86400} days, got {text!r}")
    return seconds


def check_roles(roles: list[str]) -> list[str]:
    unknown = [role for role in roles if role not in USER_ROLES]
    if unknown:
        raise AdminError(f"unknown role {unknown[0]!r}: one of {', '.join(USER_ROLES)}")
    return sorted(set(roles))


def check_project(project: str) -> str:
    if not project or len(project) > 128 or any(c.isspace() or not c.isprintable() for c in project):
        raise AdminError(f"project {project!r} must be 1 to 128 printable characters without spaces")
    return project


def secret_from(environ, run_dir: str | None) -> str:
    """The run folder's secret when one is named, else CBR_JWT_SECRET."""
    if run_dir:
        path = Path(run_dir) / "stack.json"
        try:
            secret = json.loads(path.read_text()).get("jwt_secret", "")
        except FileNotFoundError:
            raise AdminError(f"{path} does not exist: is {run_dir} a stack's run folder (`make up` makes .run)?") \
                from None
        except (OSError, ValueError) as exc:
            raise AdminError(f"cannot read the secret from {path}: {exc}") from None
        if not isinstance(secret, str) or not secret:
            raise AdminError(f"{path} holds no jwt_secret")
        return secret
    secret = environ.get("CBR_JWT_SECRET", "")
    if not secret:
        raise AdminError("no signing secret: set CBR_JWT_SECRET (the services' own) or give --run-dir (e.g. .run)")
    return secret


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cbr-admin", description="CBR operator commands.")
    groups = top.add_subparsers(dest="group", required=True, metavar="{token}")
    token = groups.add_parser("token", help="tokens for a project's users").add_subparsers(
        dest="action", required=True, metavar="{issue}")
    issue = token.add_parser("issue", help="print a token for a project and role(s), valid for --ttl")
    issue.add_argument("--project", required=True, help="the project id the token is for")
    issue.add_argument("--role", required=True, action="append", metavar="ROLE",
                       help=f"repeatable; one of {', '.join(USER_ROLES)}")
    issue.add_argument("--ttl", required=True, help="validity, e.g. 8h, 30m, 7d, 1h30m, or seconds")
    issue.add_argument("--subject", help="who the token names (default: cbr-admin:<your user name>)")
    issue.add_argument("--run-dir", metavar="DIR", help="take the secret from DIR/stack.json instead of "
                                                        "CBR_JWT_SECRET")
    return top


def main(argv: list[str] | None = None, environ=None) -> int:
    args = parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        project, roles, ttl = check_project(args.project), check_roles(args.role), parse_ttl(args.ttl)
        subject = args.subject or f"cbr-admin:{getpass.getuser()}"
        secret = secret_from(environ, args.run_dir)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = int(time.time())
    print(auth.issue_token(secret, project_id=project, subject=subject, roles=roles, ttl_seconds=ttl, now=now))
    expires = dt.datetime.fromtimestamp(now + ttl, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"token for project {project}, roles {', '.join(roles)}, subject {subject}, expires {expires}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
