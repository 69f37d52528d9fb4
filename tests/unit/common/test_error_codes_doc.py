"""The README's table of error codes is the one the code raises."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import cbr_backup.domain.errors as backup_errors
import cbr_common.request_validation as common_errors
import cbr_policy.domain.errors as policy_errors
import cbr_replication.domain.errors as replication_errors
import cbr_vault.domain.errors as vault_errors
from cbr_common.grpc_errors import status_code_for

README = Path(__file__).resolve().parents[3] / "README.md"


def documented_rows() -> set[tuple[str, str, str, str]]:
    text = README.read_text()
    block = text[text.index("<!-- error-codes:begin -->"):text.index("<!-- error-codes:end -->")]
    return {tuple(cell.strip().strip("`") for cell in line.strip("|").split("|"))
            for line in block.splitlines() if re.match(r"\| (common|vault|backup|policy|replication) \|", line)}


def raised_rows() -> set[tuple[str, str, str, str]]:
    rows = set()
    for service, module in (("common", common_errors), ("vault", vault_errors), ("backup", backup_errors),
                            ("policy", policy_errors), ("replication", replication_errors)):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and getattr(cls, "cbr_code", None):
                rows.add((service, name, status_code_for(cls("x")).name, cls.cbr_code))
    return rows


def test_readme_lists_every_error_code():
    assert documented_rows() == raised_rows()


def test_codes_are_unique_per_service():
    for service in ("vault", "backup", "policy", "replication"):
        codes = [row[3] for row in raised_rows() if row[0] in (service, "common")]
        assert len(codes) == len(set(codes)), sorted(codes)
