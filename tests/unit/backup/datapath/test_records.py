"""The store's records (DESIGN.md 14): the keys object and the sealed backup record round-trip, refuse tampering,
and the rebuild picks one complete run per backup."""
import datetime as dt
import json
import os

import pytest

from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import VaultKeys
from cbr_backup.datapath.errors import DataPathError
from cbr_backup.datapath.records import (BackupRecord, KeysObject, decode_keys, decode_record, drop_other_keys,
                                         encode_keys, encode_record, keys_key, read_keys_objects, record_key,
                                         rewrap_keys_object, row_fields, times, write_records)
from cbr_backup.domain.backups import Backup
from cbr_backup.keys import KeyFileProvider, unwrap_vault_keys, wrap_vault_keys
from cbr_backup.rebuild import RebuildRefused, choose_records, open_keys

VAULT = "vault-1"
NOW = dt.datetime(2026, 12, 4, 21, 0, tzinfo=dt.timezone.utc)


def _keys(encrypted: bool) -> VaultKeys:
    return VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)


def _record(manifest_id: str = "b1-rabc", backup_id: str = "b1", run_id: str = "abc", protected=NOW,
            parent: dict | None = None, parts: int = 1) -> BackupRecord:
    row = Backup(backup_id=backup_id, project_id="p1", checkpoint_id="c1", vault_id=VAULT, resource_id="d1",
                 resource_type="disk", name="daily", status="available", resource_name="disk one",
                 logical_bytes=10, stored_bytes=7, added_bytes=3, manifest_kind="disk", manifest_id=manifest_id,
                 base_backup_id="b0", incremental=True, created_time=NOW, protected_time=protected)
    return BackupRecord(run_id, row_fields(row), parent, {"checkpoint_id": "c1", "name": "cp"}, parts)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_record_round_trips(encrypted):
    keys = _keys(encrypted)
    record = _record()
    value = encode_record(keys, VAULT, record)
    assert decode_record(keys, VAULT, "b1-rabc", value) == record
    row = times(record.backup)
    assert row["protected_time"] == NOW and row["base_backup_id"] == "b0" and row["added_bytes"] == 3
    assert (b"disk one" in value) is not encrypted


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_tampered_or_moved_record_fails(encrypted):
    keys = _keys(encrypted)
    value = encode_record(keys, VAULT, _record())
    for i in (1, len(value) // 2, len(value) - 1):  # any byte flipped: the seal or the MAC fails
        bad = bytearray(value)
        bad[i] ^= 0x01
        with pytest.raises(DataPathError):
            decode_record(keys, VAULT, "b1-rabc", bytes(bad))
    with pytest.raises(DataPathError):  # presented as another manifest's record
        decode_record(keys, VAULT, "b2-rabc", value)
    with pytest.raises(DataPathError):  # another vault's keys
        decode_record(_keys(encrypted), VAULT, "b1-rabc", value)
    with pytest.raises(DataPathError):
        decode_record(keys, VAULT, "b1-rabc", value[:-1])


def test_an_unencrypted_record_rewritten_in_the_clear_fails_its_mac():
    keys = _keys(False)
    value = encode_record(keys, VAULT, _record())
    forged = value.replace(b'"logical_bytes": 10', b'"logical_bytes": 99')
    assert forged != value
    with pytest.raises(DataPathError, match="MAC"):
        decode_record(keys, VAULT, "b1-rabc", forged)


def test_the_keys_object_holds_wrapped_keys_only_and_round_trips(tmp_path):
    provider = KeyFileProvider(os.urandom(32))
    keys = _keys(True)
    obj = KeysObject(VAULT, "p1", wrap_vault_keys(provider, VAULT, keys))
    data = encode_keys(obj)
    assert keys.id_key not in data and keys.enc_key not in data
    assert keys.id_key.hex().encode() not in data and keys.enc_key.hex().encode() not in data
    back = decode_keys(data)
    assert back == obj and back.encrypted
    assert unwrap_vault_keys(provider, VAULT, back.wrapped) == keys
    body = json.loads(data[8:])
    body["encrypted"] = False  # a flag that disagrees with the data key
    with pytest.raises(DataPathError):
        decode_keys(data[:8] + json.dumps(body).encode())


def test_records_and_keys_are_written_then_found_by_the_provider_that_wrapped_them():
    store = MemoryChunkStore()
    old, new = KeyFileProvider(os.urandom(32)), KeyFileProvider(os.urandom(32))
    keys = _keys(True)
    write_records(store, keys, VAULT, KeysObject(VAULT, "p1", wrap_vault_keys(old, VAULT, keys)), [_record()])
    assert store.exists_many([record_key(VAULT, "b1-rabc"), keys_key(VAULT, old.kek_id)]) == {
        record_key(VAULT, "b1-rabc"), keys_key(VAULT, old.kek_id)}
    assert open_keys(store, old, VAULT)[1] == keys
    with pytest.raises(RebuildRefused, match="opens with this KEK"):
        open_keys(store, new, VAULT)
    # A rotation: the new KEK's object is written, the old one's goes.
    assert rewrap_keys_object(store, VAULT, wrap_vault_keys(new, VAULT, keys))
    assert [o.wrapped.kek_id for o in read_keys_objects(store, VAULT)] == [new.kek_id]
    assert open_keys(store, new, VAULT)[1] == keys
    assert drop_other_keys(store, VAULT, new.kek_id) == 0
    with pytest.raises(FileExistsError):  # a record is written once
        write_records(store, keys, VAULT, KeysObject(VAULT, "p1", wrap_vault_keys(new, VAULT, keys)), [_record()])


def test_the_rebuild_takes_one_complete_run_per_backup():
    later = NOW + dt.timedelta(minutes=5)
    first_try = _record("b1-r1", run_id="r1", protected=NOW)         # stopped after its record, before the commit
    retry = _record("b1-r2", run_id="r2", protected=later)           # the run that became available
    orphan = _record("b2-r1", backup_id="b2", run_id="r1")           # its manifest was deleted
    server = {**_record(backup_id="s1").backup, "resource_type": "server", "manifest_id": ""}
    disk_a = _record("sa-r1", backup_id="sa", run_id="r1", parent=server, parts=2)
    disk_b = _record("sb-r1", backup_id="sb", run_id="r1", parent=server, parts=2)
    half = _record("sc-r2", backup_id="sc", run_id="r2", parent=server, parts=2)  # a run with one disk of two
    present = {"b1-r1", "b1-r2", "sa-r1", "sb-r1", "sc-r2"}
    groups = choose_records([first_try, retry, orphan, disk_a, disk_b, half], present)
    assert [sorted(r.manifest_id for r in g) for g in groups] == [["b1-r2"], ["sa-r1", "sb-r1"]]


def test_gc_deletes_a_record_with_its_manifest_and_only_under_the_exclusive_lock():
    from cbr_backup.adapters.chunk_index import MemoryChunkIndex
    from cbr_backup.datapath.gc import collect_garbage

    store, index, keys = MemoryChunkStore(), MemoryChunkIndex(), _keys(True)
    provider = KeyFileProvider(os.urandom(32))
    keys_object = KeysObject(VAULT, "p1", wrap_vault_keys(provider, VAULT, keys))
    write_records(store, keys, VAULT, keys_object, [_record("b1-r1"), _record("b2-r1", backup_id="b2")])

    def collect():
        return collect_garbage(index, store, VAULT, lambda: (), live_manifest_ids={"b2-r1"},
                               grace=dt.timedelta(0), oldest_running_start=None)

    index.lock_vault(VAULT, exclusive=False)  # a backup runs: nothing is judged dead
    assert collect().records_deleted == 0
    index.unlock_vault(VAULT, exclusive=False)
    assert collect().records_deleted == 1
    assert set(store.iterate(f"{VAULT}/backups/")) == {record_key(VAULT, "b2-r1")}
    assert store.exists_many([keys_key(VAULT, provider.kek_id)])  # the keys object stays while the vault does


@pytest.mark.parametrize("layout", ["packs", "lone chunks"])
def test_the_store_alone_gives_the_rows_back(tmp_path, layout):
    """A disk backup's index rows and backup row, read from packs' trailers or (a vault from before packs) lone
    chunk files; a chunk found nowhere makes its backup corrupt."""
    from cbr_backup.adapters.chunk_index import MemoryChunkIndex
    from cbr_backup.datapath import backup_disk
    from cbr_backup.rebuild import read_store
    from tests.support.packs import drop_chunk, to_lone_chunks
    from tests.unit.backup.datapath.disk_images import MIB, make_disk

    store, index, keys = MemoryChunkStore(), MemoryChunkIndex(), _keys(True)
    provider = KeyFileProvider(os.urandom(32))
    result = backup_disk(make_disk(tmp_path / "disk.img", 4 * MIB, seed=3), keys, store, index, VAULT,
                         manifest_id="b1-rabc")
    if layout == "lone chunks":
        to_lone_chunks(store, keys, VAULT, index)
    write_records(store, keys, VAULT, KeysObject(VAULT, "p1", wrap_vault_keys(provider, VAULT, keys)), [_record()])
    rows = {(vault, chunk): row for (vault, chunk), row in index.rows.items()}
    found = read_store(store, provider, VAULT)
    assert found.keys == keys and [b.backup_id for b in found.backups] == ["b1"] and not found.backups[0].corrupt
    assert found.backups[0].status == "available" and found.backups[0].logical_bytes == 10
    expected = {chunk for (_v, chunk) in rows}
    assert {r[0] for r in found.chunk_rows} == expected == set(result.manifest.unique_ids())
    assert (found.lone_chunks, found.packs > 0) == ((len(expected), False) if layout == "lone chunks" else (0, True))
    # Every row as the index had it: raw and stored size, pack and offset (none for a lone chunk).
    assert {r[0]: (r[1], r[2], r[3], r[4]) for r in found.chunk_rows} == {
        chunk: (row[0], row[1], row[4], row[5]) for (_v, chunk), row in rows.items()}
    if layout == "packs":
        drop_chunk(store, keys, VAULT, sorted(expected)[0])
        again = read_store(store, provider, VAULT)
        assert again.missing_chunks == 1 and again.backups[0].corrupt
