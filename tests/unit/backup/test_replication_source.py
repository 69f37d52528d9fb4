"""The source side's pure rules (DESIGN.md 17): the send window, reads grouped by pack, message sizing, read
batches, and which backups may be replicated."""
import pytest

from cbr_backup.domain import errors as backup_errors
from cbr_backup.domain.backups import Backup
from cbr_backup.domain.replication_source import (
    MESSAGE_LIMIT, WINDOW, SendWindow, SourceBackupCorruptError, SourceBackupIsReplicaError,
    SourceBackupNotAvailableError, SourceBackupNotFoundError, check_not_replicating, check_replicable,
    combined_digest, group_reads, manifest_parts, read_batches, split_messages)

MIB = 1 << 20


def test_the_resume_bound_is_the_window_and_two_written_ahead_batches_within_64_mib():
    from cbr_backup.domain.replication_source import READ_BATCH
    assert SendWindow().limit == WINDOW
    assert WINDOW + 2 * READ_BATCH <= 56 * MIB  # DESIGN.md 17.8; issue 12 allows 64 MiB


def test_the_window_holds_at_most_its_limit_beyond_the_durable_messages():
    window = SendWindow(limit=32 * MIB)
    for seq in range(1, 9):
        assert window.room_for(4 * MIB)
        window.sent(seq, 4 * MIB)
    assert window.unacked == 32 * MIB
    assert not window.room_for(1)
    assert window.acked(3) == 12 * MIB
    assert window.unacked == 20 * MIB and window.durable_through == 3
    assert window.room_for(12 * MIB) and not window.room_for(12 * MIB + 1)
    assert window.acked(2) == 0  # an older acknowledgement frees nothing
    assert window.acked(8) == 20 * MIB
    assert window.drained and window.unacked == 0


def test_a_message_larger_than_the_window_still_goes_alone():
    window = SendWindow(limit=10)
    assert window.room_for(50)
    window.sent(1, 50)
    assert not window.room_for(1)
    window.acked(1)
    assert window.room_for(50)


def test_a_sequence_number_goes_once():
    window = SendWindow()
    window.sent(1, 10)
    with pytest.raises(ValueError):
        window.sent(1, 10)
    window.acked(1)
    with pytest.raises(ValueError):
        window.sent(1, 10)


def test_reads_are_grouped_by_pack_and_sorted_by_offset():
    p1, p2 = b"\x01" * 16, b"\x02" * 16
    ids = [bytes([i]) * 32 for i in range(6)]
    locations = {ids[0]: (p2, 500, 10), ids[1]: (p1, 300, 20), ids[2]: (p2, 100, 30), ids[3]: (None, 0, 40),
                 ids[4]: (p1, 0, 50)}
    reads = group_reads(ids, locations)
    assert reads.packs == [(p2, [(100, 30, ids[2]), (500, 10, ids[0])]),
                           (p1, [(0, 50, ids[4]), (300, 20, ids[1])])]
    assert reads.lone == [ids[3]]
    assert reads.missing == [ids[5]]


def test_messages_hold_at_most_the_limit_and_a_larger_chunk_goes_alone():
    overhead = 64
    sizes = [MIB] * 3 + [MIB - 4 * overhead, 5 * MIB, 10, 10]
    messages = split_messages(sizes, overhead=overhead)
    assert [list(m) for m in messages] == [[0, 1, 2, 3], [4], [5, 6]]
    for message in messages:
        total = sum(sizes[i] + overhead for i in message)
        assert total <= MESSAGE_LIMIT or len(message) == 1
    assert split_messages([]) == []
    assert [list(m) for m in split_messages([MESSAGE_LIMIT - 64, 1])] == [[0], [1]]


def test_read_batches_keep_the_order_and_their_size():
    ids = [bytes([i]) * 32 for i in range(5)]
    stored = {ids[0]: 6, ids[1]: 5, ids[2]: 20, ids[3]: 1, ids[4]: 1}
    assert read_batches(ids, stored, limit=10) == [[ids[0]], [ids[1]], [ids[2]], [ids[3], ids[4]]]
    assert read_batches(ids, stored, limit=100) == [ids]
    assert read_batches([], stored) == []


def backup(**values) -> Backup:
    fields = dict(backup_id="b1", project_id="p", checkpoint_id="c", vault_id="v1", resource_id="r",
                  resource_type="disk", name="n", status="available")
    return Backup(**{**fields, **values})


def test_only_whole_own_backups_are_replicated():
    assert check_replicable(backup(), "b1", "v1").backup_id == "b1"
    assert check_replicable(backup(status="restoring"), "b1").backup_id == "b1"  # reading it changes nothing
    with pytest.raises(SourceBackupNotFoundError):
        check_replicable(None, "b1")
    with pytest.raises(SourceBackupNotFoundError):
        check_replicable(backup(), "b1", "another-vault")
    for status in ("protecting", "error", "waiting_delete", "deleting"):
        with pytest.raises(SourceBackupNotAvailableError):
            check_replicable(backup(status=status), "b1")
    with pytest.raises(SourceBackupNotAvailableError):
        check_replicable(backup(resource_type="server", children=[backup(backup_id="d1", status="error")]), "b1")
    with pytest.raises(SourceBackupNotAvailableError):
        check_replicable(backup(parent_id="server-backup"), "b1")
    with pytest.raises(SourceBackupIsReplicaError):
        check_replicable(backup(image_type="replication"), "b1")
    with pytest.raises(SourceBackupCorruptError):
        check_replicable(backup(corrupt=True), "b1")
    with pytest.raises(SourceBackupCorruptError) as caught:
        check_replicable(backup(resource_type="server", children=[backup(backup_id="d1", corrupt=True)]), "b1")
    assert caught.value.cbr_code == "ReplicationService.6906"


def test_a_backup_being_replicated_is_not_deleted():
    check_not_replicating("b1", None)
    with pytest.raises(backup_errors.BackupStateError) as caught:
        check_not_replicating("b1", "task-1")
    assert "task-1" in caught.value.message


def test_a_servers_disks_cross_in_device_order_and_their_digests_join_in_it():
    disks = [backup(backup_id=f"d-{device}", device=device) for device in ("vdb", "vdaa", "vda")]
    server = backup(resource_type="server", children=disks)
    assert [p.device for p in manifest_parts(server)] == ["vda", "vdb", "vdaa"]
    assert manifest_parts(disks[0]) == [disks[0]]
    assert combined_digest([b"a" * 32, b"b" * 32]) == b"a" * 32 + b"b" * 32


def test_send_order_reads_each_pack_front_to_back_then_lone_chunks_then_the_unknown():
    from cbr_backup.domain.replication_source import send_order
    a, b, c, d, e = (bytes([n]) * 32 for n in (5, 4, 3, 2, 1))
    pack1, pack2 = b"\x01" * 16, b"\x02" * 16
    locations = {a: (pack2, 0, 10), b: (pack1, 300, 10), c: (pack1, 20, 10), d: (None, 0, 10)}
    order = send_order([a, b, c, d, e], locations)
    assert [chunk for chunk, _ in order] == [c, b, a, d, e]
    positions = [position for _, position in order]
    assert positions == sorted(positions)  # what sent_through is compared with
    assert positions[0] == b"\x00" + pack1 + (20).to_bytes(8, "big")
