"""`python -m cbr_common.migrate cbr_vault cbr_backup ...`: apply every named service's migrations."""
from __future__ import annotations

import os
import sys

from cbr_common.migrations import upgrade


def main(argv: list[str]) -> int:
    url = os.environ.get("CBR_DATABASE_URL", "").strip()
    if not url or len(argv) < 2:
        print("usage: CBR_DATABASE_URL=... python -m cbr_common.migrate MODULE [MODULE ...]", file=sys.stderr)
        return 2
    for module in argv[1:]:
        upgrade(url, module)
        print(f"migrated {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
