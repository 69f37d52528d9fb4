"""Operator commands for the key-encryption key: `python -m cbr_backup.keys rotate|export|import`.

rotate --new-kek-file NEW   re-wrap every vault's keys with the KEK in NEW (data is not re-encrypted). Stop the
                            backup service and its workers first, then start them with CBR_KEK_FILE=NEW.
                            Reads CBR_DATABASE_URL and CBR_KEK_FILE (the current KEK). Running it again is safe.
                            With the workers' store (CBR_STORE_URL or CBR_STORE_DIR) it also rewrites the vaults'
                            keys objects there (DESIGN.md 14); else each vault's next backup does.
export --out PATH           write the current KEK (CBR_KEK_FILE) sealed with a passphrase, for escrow
import --in PATH --out KEK  open an escrow file into a new KEK file (mode 0600)

The passphrase comes from CBR_ESCROW_PASSPHRASE, else it is asked for on the terminal.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from cbr_backup.keys.escrow import EscrowError, open_kek, seal_kek
from cbr_backup.keys.provider import KeyFileProvider, KeyUnwrapError, read_kek_file
from cbr_common.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbr_backup.keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="re-wrap every vault's keys with a new KEK")
    rotate.add_argument("--new-kek-file", required=True, type=Path)
    export = commands.add_parser("export", help="write the KEK sealed with a passphrase (escrow)")
    export.add_argument("--out", required=True, type=Path)
    restore = commands.add_parser("import", help="open an escrow file into a new KEK file")
    restore.add_argument("--in", dest="source", required=True, type=Path)
    restore.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "rotate":
            rewrapped, skipped, namespaces = asyncio.run(
                _rotate(_env("CBR_DATABASE_URL"), _env("CBR_KEK_FILE"), args.new_kek_file))
            print(f"re-wrapped the keys of {rewrapped} vaults ({skipped} had the new KEK already) and of "
                  f"{namespaces} replica namespaces; now start the backup service and workers with "
                  f"CBR_KEK_FILE={args.new_kek_file}")
            if os.environ.get("CBR_STORE_URL") or os.environ.get("CBR_STORE_DIR"):
                written = asyncio.run(_rewrap_store(_env("CBR_DATABASE_URL")))
                print(f"rewrote the keys objects of {written} vaults in the store")
            else:
                print("the store's keys objects keep the old wrapping until each vault's next backup (set "
                      "CBR_STORE_DIR or CBR_STORE_URL to rewrite them now)")
        elif args.command == "export":
            _write_new(args.out, seal_kek(read_kek_file(_env("CBR_KEK_FILE")), _passphrase(confirm=True)))
            print(f"wrote the KEK sealed with the passphrase to {args.out}; keep it and the passphrase apart")
        else:
            _write_new(args.out, open_kek(args.source.read_bytes(), _passphrase(confirm=False)))
            print(f"wrote the KEK to {args.out} (mode 0600)")
    except (SettingsError, EscrowError, KeyUnwrapError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _rotate(database_url: str, kek_file: str, new_kek_file: Path) -> tuple[int, int, int]:
    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.service.vault_keys import rotate_kek, rotate_namespace_keys
    from cbr_common.db import Database

    old, new = KeyFileProvider.from_file(kek_file), KeyFileProvider.from_file(new_kek_file)
    db = Database(database_url, metadata.schema, pool_size=1, statement_timeout=60.0)
    try:
        async with BackupUnitOfWork(db) as uow:  # one transaction: every vault moves to the new KEK, or none
            rewrapped, skipped = await rotate_kek(uow, old, new)
            namespaces = await rotate_namespace_keys(uow, old, new)
            await uow.commit()
        return rewrapped, skipped, len(namespaces)
    finally:
        await db.close()


async def _rewrap_store(database_url: str) -> int:
    """Each vault's keys object and replica namespace object in the store, as the database now wraps them
    (DESIGN.md 14.1, 17.3)."""
    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.datapath.records import rewrap_keys_object
    from cbr_backup.keys.vault_keys import WrappedVaultKeys
    from cbr_backup.transfer.namespaces import put_namespace_object
    from cbr_backup.transfer.repository import TransferRepository
    from cbr_backup.worker.main import chunk_store
    from cbr_common.db import Database
    from cbr_common.errors import DataLossError
    from cbr_common.settings import Settings

    store = chunk_store(Settings(service="backup", database_url=database_url, nats_url="", jwt_secret="",
                                 store_dir=os.environ.get("CBR_STORE_DIR", ""),
                                 store_url=os.environ.get("CBR_STORE_URL", "")))
    db = Database(database_url, metadata.schema, pool_size=1, statement_timeout=60.0)
    written = 0
    try:
        async with BackupUnitOfWork(db) as uow:
            rows = {v: await uow.backups.vault_keys(v) for v in await uow.backups.vault_ids_with_keys()}
            namespaces = await TransferRepository(uow.session).all_namespaces()
    finally:
        await db.close()
    for row in namespaces:
        await asyncio.to_thread(put_namespace_object, store, row)
    for vault_id, wrapped in rows.items():
        if not isinstance(wrapped, WrappedVaultKeys):
            continue
        try:
            written += await asyncio.to_thread(rewrap_keys_object, store, vault_id, wrapped)
        except DataLossError as exc:  # the rotation itself is done; the vault's next backup writes its object
            print(f"warning: vault {vault_id}: its keys object was not rewritten: {exc}", file=sys.stderr)
    return written


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"missing required setting {name}")
    return value


def _passphrase(confirm: bool) -> str:
    if os.environ.get("CBR_ESCROW_PASSPHRASE"):
        return os.environ["CBR_ESCROW_PASSPHRASE"]
    first = getpass.getpass("escrow passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise EscrowError("the two passphrases differ")
    return first


def _write_new(path: Path, data: bytes) -> None:
    """A new file of mode 0600 (never over an existing one: it may be the only copy of a key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
