"""The edge checks every request passes (cbr_common.request_validation) and how much of an input a message echoes."""
from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import status_pb2

from cbr.backup.v1 import backup_pb2 as bp, task_pb2 as tp
from cbr.common.v1 import common_pb2 as cp
from cbr.policy.v1 import policy_pb2 as pop
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common import errors
from cbr_common.echo import MAX_MESSAGE_CHARS, capped, short
from cbr_common.grpc_errors import status_for
from cbr_common.request_checks import canonical_id, id_list
from cbr_common.request_validation import (
    MAX_STRING_CHARS, InvalidRequestError, UndecodableRequest, check_request, lenient_deserializer)


def refusal(request) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        check_request(request, "Test")
    assert caught.value.cbr_code == "BackupService.6400"
    return caught.value.message


def test_a_plain_request_passes():
    check_request(vp.CreateVaultRequest(
        name="vault-1", description="line one\n\tline two\r\n", object_type=cp.OBJECT_TYPE_DISK,
        resources=[vp.ResourceRef(resource_id="r", type=cp.OBJECT_TYPE_DISK, exclude_volumes=["a"])],
        tags=[cp.Tag(key="k", value="v" * MAX_STRING_CHARS)]))
    check_request(vp.ListVaultsRequest())


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_are_refused_naming_the_field(char):
    message = refusal(vp.ListVaultsRequest(name=f"abc{char}def"))
    assert message.startswith("name: control character") and f"U+{ord(char):04X}" in message
    assert "position 3" in message and "abc" not in message


@pytest.mark.parametrize("char", ["\t", "\n", "\r", "é", "\u2028", "中"])
def test_tab_newline_and_printable_unicode_pass(char):
    check_request(vp.CreateVaultRequest(description=f"a{char}b"))


def test_too_long_strings_are_refused_without_echo():
    message = refusal(vp.ListVaultsRequest(name="x" * (MAX_STRING_CHARS + 1)))
    assert message == f"name: {MAX_STRING_CHARS + 1} characters, at most {MAX_STRING_CHARS} allowed"


@pytest.mark.parametrize("request_, path", [
    (vp.CreateVaultRequest(resources=[vp.ResourceRef(), vp.ResourceRef(name="\x00")]), "resources[1].name"),
    (vp.CreateVaultRequest(resources=[vp.ResourceRef(exclude_volumes=["ok", "\x00"])]),
     "resources[0].exclude_volumes[1]"),
    (vp.CreateVaultRequest(tags=[cp.Tag(key="k", value="\x07")]), "tags[0].value"),
    (vp.ListVaultsRequest(vault_ids=["a", "b", "c\x00"]), "vault_ids[2]"),
    (vp.UpdateVaultRequest(name="\x00"), "name"),  # proto3 optional
])
def test_nested_and_repeated_strings_name_their_path(request_, path):
    assert refusal(request_).startswith(f"{path}: ")


def test_map_keys_and_values_are_checked():
    task = tp.Task()
    task.extra_info["bad\x00key"] = "v"
    assert refusal(tp.GetTaskResponse(task=task)).startswith("task.extra_info (a key): ")
    task = tp.Task()
    task.extra_info["k"] = "v\x00"
    assert refusal(tp.GetTaskResponse(task=task)).startswith("task.extra_info['k']: ")


@pytest.mark.parametrize("seconds, nanos, ok", [
    (0, 0, True),
    (-62_135_596_800, 0, True),             # 0001-01-01T00:00:00Z
    (253_402_300_799, 999_999_999, True),   # 9999-12-31T23:59:59.999999999Z
    (-62_135_596_801, 0, False),
    (253_402_300_800, 0, False),
    (2**63 - 1, 0, False),
    (-(2**63), 0, False),
    (0, -1, False),
    (0, 1_000_000_000, False),
])
def test_timestamps_outside_their_range_are_refused(seconds, nanos, ok):
    request = bp.ListBackupsRequest()
    request.start_time.seconds, request.start_time.nanos = seconds, nanos
    if ok:
        check_request(request)
    else:
        assert refusal(request).startswith("start_time: ")


def test_nested_timestamps_are_checked():
    request = pop.CreatePolicyRequest()
    request.trigger.start_time.nanos = -1
    assert refusal(request).startswith("trigger.start_time: nanos")


@pytest.mark.parametrize("number", [4, 99, -1, 2**31 - 1])
def test_undefined_enum_numbers_are_refused(number):
    assert refusal(vp.ListVaultsRequest(object_type=number)) == f"object_type: {number} is not a value of ObjectType"


def test_undefined_enums_in_repeated_and_nested_fields_are_refused():
    request = vp.AddResourcesRequest(resources=[vp.ResourceRef(type=cp.OBJECT_TYPE_DISK), vp.ResourceRef(type=42)])
    assert refusal(request).startswith("resources[1].type: 42 ")


def test_undecodable_bodies_become_a_refusal_not_an_exception():
    parse = lenient_deserializer(vp.CreateVaultRequest.FromString)
    assert parse(vp.CreateVaultRequest(name="v").SerializeToString()).name == "v"
    garbage = parse(b"\x0a\x02\xff\xfe")  # field 1 (name) with bytes that are not UTF-8
    assert isinstance(garbage, UndecodableRequest)
    with pytest.raises(InvalidRequestError, match="CreateVault request is not a valid protobuf message"):
        check_request(garbage, "CreateVault")
    assert isinstance(parse(b"\xff\xff\xff\xff"), UndecodableRequest)  # not even a tag


def test_short_quotes_a_prefix_only():
    assert short("abc") == "'abc'"
    assert short("x" * 1000) == "'" + "x" * 40 + "'…"
    assert short("a\x00b") == "'a\\x00b'"  # control characters show escaped
    assert short(12) == "'12'"


def test_capped_keeps_short_messages_and_cuts_long_ones():
    assert capped("fine") == "fine"
    long = capped("y" * 10_000)
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("…")


def test_status_messages_are_capped():
    status = status_for(errors.InvalidArgumentError("bad value " + "z" * 100_000))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    message = status_pb2.Status.FromString(details).message
    assert len(status.details) == MAX_MESSAGE_CHARS and status.details == message and message.endswith("…")


def test_canonical_id_quotes_a_short_prefix():
    with pytest.raises(errors.InvalidArgumentError) as caught:
        canonical_id("n" * 5000, "vault_id", errors.InvalidArgumentError)
    assert len(caught.value.message) < 100


def test_a_handler_without_deserializer_keeps_raw_bytes():
    assert lenient_deserializer(None) is None
    check_request(b"raw bytes")  # nothing to check in a body no message type describes


def test_id_lists_are_capped_before_any_lookup():
    ids = [str(uuid.uuid4()) for _ in range(3)]
    assert id_list([i.upper() for i in ids], "vault_id", errors.InvalidArgumentError) == ids
    with pytest.raises(errors.InvalidArgumentError, match="at most 1000 of vault_id in one request, got 70000"):
        id_list(ids[:1] * 70_000, "vault_id", errors.InvalidArgumentError)
    with pytest.raises(errors.InvalidArgumentError, match="at most 2 "):
        id_list(ids, "vault_id", errors.InvalidArgumentError, limit=2)


def test_bytes_and_numbers_are_never_read_so_a_chunk_payload_is_not_copied_to_be_checked():
    from cbr.replication.v1 import replication_pb2 as rpb
    from cbr_common.request_validation import _ruled_fields
    assert _ruled_fields(rpb.WireChunk.DESCRIPTOR) == ()
    assert [f.name for f in _ruled_fields(rpb.PutChunksRequest.DESCRIPTOR)] == ["transfer_id", "chunks"]
    request = rpb.PutChunksRequest(transfer_id="bad\x01id", seq=1, chunks=[rpb.WireChunk(payload=b"\x00" * 64)])
    with pytest.raises(InvalidRequestError, match="transfer_id"):
        check_request(request)
    check_request(rpb.PutChunksRequest(seq=1, chunks=[rpb.WireChunk(chunk_id=b"\x01\x1f", payload=b"\x00\x7f")]))
