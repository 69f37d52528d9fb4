"""What the store keeps so that it survives losing the database (DESIGN.md 14): the vault's wrapped keys and a
sealed record per manifest (the backup row it belongs to, and a server backup's row for its disks).

    <vault>/keys/<32 hex of SHA-256(kek_id)>   "CBRVKEY1" | JSON: the vault's keys as the database row holds them,
                                               wrapped by that KEK (never a clear key); one object per KEK
    <vault>/backups/<manifest id>              sealed (section 4, context = the store key) "CBRBREC1" | JSON | MAC
                                               MAC = BLAKE3-256 keyed with a key derived from the vault id key,
                                               over the store key and everything before it

The keys object is not sealed (it is what opens the seal); its wrapped keys are bound to the vault and role by the
wrap's associated data. A record is named by its manifest id, so that it goes when its manifest goes (GC), and a
retry (a new manifest id) never meets its predecessor's record.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field

import blake3

from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.keys.vault_keys import WrappedVaultKeys

KEYS_MAGIC = b"CBRVKEY1"
RECORD_MAGIC = b"CBRBREC1"
VERSION = 1
_MAC_SIZE = 32
_MAC_CONTEXT = "cbr 2026-12 backup record mac"
# The backup row's columns a record keeps; status (available), corruption and verification are not the store's.
ROW_FIELDS = ("backup_id", "project_id", "checkpoint_id", "vault_id", "resource_id", "resource_type", "name",
              "resource_name", "resource_size_bytes", "parent_id", "device", "description", "image_type",
              "incremental", "auto_trigger", "policy_id", "logical_bytes", "stored_bytes", "added_bytes",
              "manifest_kind", "manifest_id", "base_backup_id", "task_id", "created_time", "started_time",
              "protected_time", "expired_time", "namespace_id", "source_region", "source_project_id",
              "source_vault_id", "source_backup_id", "replication_record_id")
_TIME_FIELDS = ("created_time", "started_time", "protected_time", "expired_time")
CHECKPOINT_FIELDS = ("checkpoint_id", "name", "description", "incremental", "auto_trigger", "policy_id",
                     "created_time")


def keys_prefix(vault_id: str) -> str:
    return f"{vault_id}/keys/"


def keys_key(vault_id: str, kek_id: str) -> str:
    # kek_id may hold characters a store key may not ("file:..."): the key names its hash instead.
    return f"{vault_id}/keys/{hashlib.sha256(kek_id.encode()).hexdigest()[:32]}"


def records_prefix(vault_id: str) -> str:
    return f"{vault_id}/backups/"


def record_key(vault_id: str, manifest_id: str) -> str:
    return f"{vault_id}/backups/{manifest_id}"


# The vault's keys object

@dataclass(frozen=True)
class KeysObject:
    vault_id: str
    project_id: str
    wrapped: WrappedVaultKeys

    @property
    def encrypted(self) -> bool:
        return self.wrapped.wrapped_enc_key is not None


def encode_keys(obj: KeysObject) -> bytes:
    w = obj.wrapped
    body = {"format": "cbr-vault-keys", "version": VERSION, "vault_id": obj.vault_id, "project_id": obj.project_id,
            "kek_id": w.kek_id, "wrapped_id_key": w.wrapped_id_key.hex(), "encrypted": obj.encrypted,
            "wrapped_enc_key": None if w.wrapped_enc_key is None else w.wrapped_enc_key.hex()}
    return KEYS_MAGIC + json.dumps(body, sort_keys=True).encode()


def decode_keys(data: bytes, key: str = "") -> KeysObject:
    """The keys object, checked for form only: whether it is genuine shows when the KEK unwraps it."""
    try:
        if not data.startswith(KEYS_MAGIC):
            raise ValueError("bad magic")
        body = json.loads(data[len(KEYS_MAGIC):])
        if body["format"] != "cbr-vault-keys" or body["version"] != VERSION:
            raise ValueError("unknown format or version")
        enc = body["wrapped_enc_key"]
        wrapped = WrappedVaultKeys(body["kek_id"], bytes.fromhex(body["wrapped_id_key"]),
                                   None if enc is None else bytes.fromhex(enc))
        if body["encrypted"] != (enc is not None):
            raise ValueError("encrypted flag and data key disagree")
        return KeysObject(body["vault_id"], body["project_id"], wrapped)
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestCorruptError(f"vault keys object {key}: {exc}") from None


# Backup records

@dataclass(frozen=True)
class BackupRecord:
    """One manifest's backup row; for a disk of a server backup also the server backup's row (`parent`)."""
    run_id: str                       # the job's run that wrote it (a retry writes another record)
    backup: dict                      # ROW_FIELDS of the row that owns the manifest
    parent: dict | None = None        # ROW_FIELDS of the server backup, or None
    checkpoint: dict = field(default_factory=dict)  # CHECKPOINT_FIELDS of its checkpoint
    parts: int = 1                    # how many manifests (records) the backup has: a server's disks

    @property
    def manifest_id(self) -> str:
        return self.backup["manifest_id"]

    @property
    def top_level_id(self) -> str:
        return (self.parent or self.backup)["backup_id"]


def row_fields(row) -> dict:
    """The ROW_FIELDS of a Backup (or any object with those attributes), times as ISO strings."""
    return {name: _plain(getattr(row, name)) for name in ROW_FIELDS}


def records_for(backup, checkpoint: dict, run_id: str) -> list[BackupRecord]:
    """The records of a backup row (with its `children`: a server backup's disks, each carrying the server's row)."""
    if backup.children:
        parent = row_fields(backup)
        return [BackupRecord(run_id, row_fields(c), parent, checkpoint, len(backup.children)) for c in backup.children]
    return [BackupRecord(run_id, row_fields(backup), None, checkpoint)]


def checkpoint_fields(cp) -> dict:
    return {name: _plain(getattr(cp, name)) for name in CHECKPOINT_FIELDS}


def times(values: dict) -> dict:
    """A record's row (or checkpoint) with its times as datetimes again."""
    return {k: dt.datetime.fromisoformat(v) if k in _TIME_FIELDS and v else v for k, v in values.items()}


def _plain(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def encode_record(keys: VaultKeys, vault_id: str, record: BackupRecord) -> bytes:
    key = record_key(vault_id, record.manifest_id)
    body = {"format": "cbr-backup-record", "version": VERSION, "run_id": record.run_id, "backup": record.backup,
            "parent": record.parent, "checkpoint": record.checkpoint, "parts": record.parts}
    data = RECORD_MAGIC + json.dumps(body, sort_keys=True).encode()
    return ChunkCodec(keys).seal(data + _mac(keys, key, data), key.encode())


def decode_record(keys: VaultKeys, vault_id: str, manifest_id: str, value: bytes) -> BackupRecord:
    """The record, checked: sealed for this key, its MAC (made with this vault's id key), form and version, and that
    it names this vault and manifest. Anything else raises ManifestCorruptError (a ChunkCorruptError from the seal)."""
    key = record_key(vault_id, manifest_id)
    plain = ChunkCodec(keys).unseal(value, key.encode(), key)
    data, mac = plain[:-_MAC_SIZE], plain[-_MAC_SIZE:]
    if len(plain) < len(RECORD_MAGIC) + _MAC_SIZE or not hmac.compare_digest(mac, _mac(keys, key, data)):
        raise ManifestCorruptError(f"backup record {key}: bad MAC (altered, or another vault's)")
    try:
        if not data.startswith(RECORD_MAGIC):
            raise ValueError("bad magic")
        body = json.loads(data[len(RECORD_MAGIC):])
        if body["format"] != "cbr-backup-record" or body["version"] != VERSION:
            raise ValueError("unknown format or version")
        record = BackupRecord(body["run_id"], body["backup"], body["parent"], body["checkpoint"], body["parts"])
        if record.backup["vault_id"] != vault_id or record.manifest_id != manifest_id:
            raise ValueError("names another vault or manifest")
        return record
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestCorruptError(f"backup record {key}: {exc}") from None


def _mac(keys: VaultKeys, key: str, data: bytes) -> bytes:
    mac_key = blake3.blake3(keys.id_key, derive_key_context=_MAC_CONTEXT).digest()
    return blake3.blake3(key.encode() + b"\0" + data, key=mac_key).digest()


# Writing them (the backup job, a KEK rotation)

def ensure_keys_object(store, obj: KeysObject) -> bool:
    """Puts the keys object for obj's KEK unless the store has it; True if it was written (the caller flushes,
    then may drop the objects of other KEKs with drop_other_keys)."""
    key = keys_key(obj.vault_id, obj.wrapped.kek_id)
    if store.exists_many([key]):
        return False
    store.put(key, encode_keys(obj))
    return True


def drop_other_keys(store, vault_id: str, kek_id: str) -> int:
    """Deletes the vault's keys objects wrapped by other KEKs (after a rotation: only once the new one is durable)."""
    keep = keys_key(vault_id, kek_id)
    stale = [key for key in store.iterate(keys_prefix(vault_id)) if key != keep]
    for key in stale:
        store.delete(key)
    return len(stale)


def write_records(store, keys: VaultKeys, vault_id: str, keys_object: KeysObject,
                  records: list[BackupRecord]) -> None:
    """The keys object (if new), then the records, then one flush: durable before the backup becomes available."""
    wrote_keys = ensure_keys_object(store, keys_object)
    for record in records:
        if not store.put(record_key(vault_id, record.manifest_id), encode_record(keys, vault_id, record)):
            raise FileExistsError(f"backup record of manifest {record.manifest_id} exists already")
    store.flush()
    if wrote_keys:
        drop_other_keys(store, vault_id, keys_object.wrapped.kek_id)


def read_keys_objects(store, vault_id: str) -> list[KeysObject]:
    return [decode_keys(store.get(key), key) for key in sorted(store.iterate(keys_prefix(vault_id)))]


def rewrap_keys_object(store, vault_id: str, wrapped: WrappedVaultKeys) -> bool:
    """After a KEK rotation: the keys object for the new KEK (the project taken from the old one), made durable,
    then the old KEK's objects deleted. False when the vault has none (no backup completed there yet: its first
    backup writes one)."""
    existing = read_keys_objects(store, vault_id)
    if not existing:
        return False
    ensure_keys_object(store, KeysObject(vault_id, existing[0].project_id, wrapped))
    store.flush()
    drop_other_keys(store, vault_id, wrapped.kek_id)
    return True
