"""The key provider and the vault keys it wraps: round trips, a wrong KEK or a moved key refused, the KEK file's
mode checked, escrow sealed and opened, and the operator command's export and import."""
from __future__ import annotations

import os

import pytest

from cbr_backup.keys import (KeyFileProvider, KeyUnwrapError, create_kek_file, key_provider, new_vault_keys,
                             read_kek_file, unwrap_vault_keys, wrap_vault_keys)
from cbr_backup.keys.__main__ import main as keys_command
from cbr_backup.keys.escrow import EscrowError, open_kek, seal_kek
from cbr_common.settings import Settings, SettingsError


def provider() -> KeyFileProvider:
    return KeyFileProvider(os.urandom(32))


def test_wrap_unwrap_round_trip_binds_the_place():
    p = provider()
    kek_id, wrapped = p.wrap(b"k" * 32, b"vault-a")
    assert kek_id == p.kek_id and b"k" * 32 not in wrapped
    assert p.unwrap(kek_id, wrapped, b"vault-a") == b"k" * 32
    with pytest.raises(KeyUnwrapError, match="does not authenticate"):
        p.unwrap(kek_id, wrapped, b"vault-b")  # moved to another vault's row
    with pytest.raises(KeyUnwrapError):
        p.unwrap(kek_id, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"vault-a")


def test_a_wrong_kek_fails_and_says_which_kek_wrapped_it():
    p, other = provider(), provider()
    kek_id, wrapped = p.wrap(b"k" * 32, b"aad")
    with pytest.raises(KeyUnwrapError, match=kek_id):
        other.unwrap(kek_id, wrapped, b"aad")
    with pytest.raises(KeyUnwrapError, match="does not authenticate"):
        other.unwrap(other.kek_id, wrapped, b"aad")  # even if it claimed to be the other KEK's


@pytest.mark.parametrize("encrypted", [True, False])
def test_vault_keys_round_trip(encrypted):
    p = provider()
    keys = new_vault_keys(encrypted)
    assert len(keys.id_key) == 32 and (keys.enc_key is not None) == encrypted
    wrapped = wrap_vault_keys(p, "v1", keys)
    assert keys.id_key not in wrapped.wrapped_id_key and (wrapped.wrapped_enc_key is None) == (not encrypted)
    assert unwrap_vault_keys(p, "v1", wrapped) == keys
    with pytest.raises(KeyUnwrapError):
        unwrap_vault_keys(p, "v2", wrapped)
    if encrypted:  # the id key and the data key cannot be swapped
        swapped = type(wrapped)(wrapped.kek_id, wrapped.wrapped_enc_key, wrapped.wrapped_id_key)
        with pytest.raises(KeyUnwrapError):
            unwrap_vault_keys(p, "v1", swapped)


def test_the_kek_file_is_made_once_with_mode_0600(tmp_path):
    path = create_kek_file(tmp_path / "run" / "kek")
    assert os.stat(path).st_mode & 0o777 == 0o600
    kek = read_kek_file(path)
    assert len(kek) == 32
    create_kek_file(path)  # an existing KEK is never replaced
    assert read_kek_file(path) == kek


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_kek_file_others_may_read_is_refused(tmp_path, mode):
    path = create_kek_file(tmp_path / "kek")
    os.chmod(path, mode)
    with pytest.raises(SettingsError, match=f"mode {mode:04o}.*chmod 600"):
        read_kek_file(path)


def test_a_kek_file_of_the_wrong_size_or_missing_is_refused(tmp_path):
    path = tmp_path / "kek"
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(SettingsError, match="exactly 32 bytes"):
        read_kek_file(path)
    with pytest.raises(SettingsError, match="cannot be read"):
        read_kek_file(tmp_path / "absent")


def test_the_setting_is_required_by_name(tmp_path):
    base = dict(service="backup", database_url="x", nats_url="x", jwt_secret="x")
    with pytest.raises(SettingsError, match="missing required setting CBR_KEK_FILE"):
        key_provider(Settings(**base))
    p = key_provider(Settings(**base, kek_file=str(create_kek_file(tmp_path / "kek"))))
    assert p.kek_id == KeyFileProvider(read_kek_file(tmp_path / "kek")).kek_id
    assert Settings.from_env("backup", {"CBR_DATABASE_URL": "x", "CBR_NATS_URL": "x", "CBR_JWT_SECRET": "x",
                                        "CBR_KEK_FILE": "/k"}).kek_file == "/k"


def test_escrow_seals_with_a_passphrase():
    kek = os.urandom(32)
    sealed = seal_kek(kek, "correct horse battery")
    assert kek not in sealed
    assert open_kek(sealed, "correct horse battery") == kek
    with pytest.raises(EscrowError, match="does not open"):
        open_kek(sealed, "wrong horse battery!")
    with pytest.raises(EscrowError, match="at least 12"):
        seal_kek(kek, "short")


def test_export_then_import_gives_back_the_kek(tmp_path, monkeypatch):
    kek_file = create_kek_file(tmp_path / "kek")
    monkeypatch.setenv("CBR_KEK_FILE", str(kek_file))
    monkeypatch.setenv("CBR_ESCROW_PASSPHRASE", "a passphrase for tests")
    assert keys_command(["export", "--out", str(tmp_path / "escrow")]) == 0
    assert read_kek_file(kek_file) not in (tmp_path / "escrow").read_bytes()
    assert keys_command(["export", "--out", str(tmp_path / "escrow")]) == 1  # never over an existing file
    assert keys_command(["import", "--in", str(tmp_path / "escrow"), "--out", str(tmp_path / "back")]) == 0
    assert read_kek_file(tmp_path / "back") == read_kek_file(kek_file)  # read_kek_file also checks mode 0600
    monkeypatch.setenv("CBR_ESCROW_PASSPHRASE", "not the passphrase")
    assert keys_command(["import", "--in", str(tmp_path / "escrow"), "--out", str(tmp_path / "again")]) == 1
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("module", ["cbr_backup", "cbr_backup.worker"])
def test_the_service_and_the_worker_refuse_to_start_without_a_private_kek(tmp_path, module):
    import subprocess
    import sys
    env = dict(os.environ, CBR_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
               CBR_NATS_URL="nats://127.0.0.1:1", CBR_JWT_SECRET="x" * 32, CBR_LISTEN_ADDR="127.0.0.1:0",
               CBR_POOL_DIR=str(tmp_path / "pool"), CBR_FS_ROOT=str(tmp_path / "fs"),
               CBR_STORE_DIR=str(tmp_path / "store"))
    env.pop("CBR_KEK_FILE", None)
    missing = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "missing required setting CBR_KEK_FILE" in missing.stderr, missing.stderr
    kek = create_kek_file(tmp_path / "kek")
    os.chmod(kek, 0o644)
    open_to_all = subprocess.run([sys.executable, "-m", module], env=dict(env, CBR_KEK_FILE=str(kek)),
                                 capture_output=True, text=True, timeout=60)
    assert open_to_all.returncode == 2 and "mode 0644" in open_to_all.stderr, open_to_all.stderr
