"""The policy rules as pure functions, and the proto conversion of CBR's -1 ("unset") counts."""
from __future__ import annotations

import datetime as dt

import pytest

from cbr.policy.v1 import policy_pb2 as pp
from cbr_policy.domain import errors, rules
from cbr_policy.domain.model import OperationDefinition, Policy, Trigger
from cbr_policy.grpc_api import convert

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 3, 1, 12, tzinfo=UTC)
REGION = "local"


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64])
def test_good_names(name):
    assert rules.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "p\n", "ä", "a.b", None])
def test_bad_names(name):
    with pytest.raises(errors.InvalidNameError):
        rules.check_name(name)


@pytest.mark.parametrize("operation_type", ["", "unknown", "BACKUP", "archive"])
def test_unknown_operation_types(operation_type):
    with pytest.raises(errors.UnknownOperationTypeError):
        rules.check_operation_type(operation_type)


REPLICATION = {"destination_region": "eu-de-2", "destination_project_id": "far"}


@pytest.mark.parametrize("operation_type, fields", [
    ("backup", {}),
    ("backup", {"max_backups": 1}),
    ("backup", {"max_backups": 99_999, "day_backups": 100, "year_backups": 100, "timezone": "UTC+08:00"}),
    ("backup", {"retention_duration_days": 99_999}),
    ("backup", {"retention_duration_days": 1, "max_backups": -1}),
    ("backup", {"full_backup_interval": 1}),
    ("backup", {"full_backup_interval": 100}),
    ("backup", {"timezone": "Europe/Berlin"}),
    ("replication", REPLICATION),
    ("replication", {**REPLICATION, "destination_project_id": "p" * 255, "max_backups": 5}),
])
def test_good_definitions(operation_type, fields):
    definition = OperationDefinition(**fields)
    assert rules.check_operation_definition(operation_type, definition, REGION) == definition


@pytest.mark.parametrize("operation_type, fields, error", [
    ("backup", {"max_backups": 0}, errors.InvalidRetentionError),
    ("backup", {"max_backups": 100_000}, errors.InvalidRetentionError),
    ("backup", {"retention_duration_days": -2}, errors.InvalidRetentionError),
    ("backup", {"week_backups": 101, "timezone": "UTC"}, errors.InvalidRetentionError),
    ("backup", {"month_backups": -1, "timezone": "UTC"}, errors.InvalidRetentionError),
    ("backup", {"retention_duration_days": 3, "max_backups": 3}, errors.RetentionConflictError),
    ("backup", {"retention_duration_days": 3, "year_backups": 1, "timezone": "UTC"}, errors.RetentionConflictError),
    ("backup", {"day_backups": 1}, errors.GfsWithoutTimezoneError),
    ("backup", {"timezone": "UTC+8"}, errors.InvalidTimezoneError),
    ("backup", {"destination_region": "eu-de-2"}, errors.InvalidDestinationError),
    ("backup", {"destination_project_id": "far"}, errors.InvalidDestinationError),
    ("replication", {}, errors.InvalidDestinationError),
    ("replication", {**REPLICATION, "destination_region": REGION}, errors.InvalidDestinationError),
    ("replication", {**REPLICATION, "destination_region": "eu de"}, errors.InvalidDestinationError),
    ("replication", {**REPLICATION, "destination_project_id": "p" * 256}, errors.InvalidDestinationError),
    ("replication", {**REPLICATION, "destination_project_id": "a\x00b"}, errors.InvalidDestinationError),
    ("backup", {"full_backup_interval": 0}, errors.InvalidFullBackupIntervalError),
    ("backup", {"full_backup_interval": 101}, errors.InvalidFullBackupIntervalError),
    ("replication", {**REPLICATION, "full_backup_interval": 3}, errors.InvalidFullBackupIntervalError),
])
def test_bad_definitions(operation_type, fields, error):
    with pytest.raises(error):
        rules.check_operation_definition(operation_type, OperationDefinition(**fields), REGION)


def test_trigger_start_defaults_to_the_given_time():
    trigger, schedule = rules.check_trigger(Trigger(patterns=("FREQ=DAILY;BYHOUR=6;BYMINUTE=0",)), "", NOW)
    assert trigger.start_time == NOW and schedule.start == NOW
    assert schedule.next_fire(NOW) == dt.datetime(2025, 3, 2, 6, tzinfo=UTC)
    start = dt.datetime(2030, 1, 1, tzinfo=UTC)
    trigger, _ = rules.check_trigger(Trigger(patterns=("FREQ=DAILY;BYHOUR=6;BYMINUTE=0",), start_time=start), "", NOW)
    assert trigger.start_time == start


@pytest.mark.parametrize("start", [dt.datetime(1969, 12, 31, 23, 59, tzinfo=UTC), dt.datetime(2100, 1, 1, tzinfo=UTC)])
def test_trigger_start_out_of_range(start):
    with pytest.raises(errors.InvalidTimeRangeError):
        rules.check_trigger(Trigger(patterns=("FREQ=DAILY;BYHOUR=6;BYMINUTE=0",), start_time=start), "", NOW)


def test_ids_and_pages():
    assert rules.check_id("6F9619FF-8B86-D011-B42D-00C04FC964FF", "policy_id") == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    with pytest.raises(errors.InvalidIdError):
        rules.check_id("policy-1", "policy_id")
    assert rules.check_page(0, 0) == (1000, 0)
    with pytest.raises(errors.InvalidPagingError):
        rules.check_page(1001, 0)


def test_unset_counts_are_minus_one_inside_and_unset_outside():
    msg = pp.OperationDefinition(day_backups=2, timezone="UTC", retention_duration_days=-1)
    definition = convert.definition_in(msg)
    assert (definition.max_backups, definition.retention_duration_days, definition.full_backup_interval) == (-1, -1, -1)
    assert definition.day_backups == 2 and definition.timezone == "UTC"
    out = convert.definition_out(definition)
    assert not out.HasField("max_backups") and not out.HasField("retention_duration_days")
    assert convert.definition_out(OperationDefinition(max_backups=7)).max_backups == 7


def test_policy_round_trip():
    policy = Policy(policy_id="6f9619ff-8b86-d011-b42d-00c04fc964ff", project_id="p", name="n",
                    operation_type="replication", enabled=False,
                    trigger=Trigger(("FREQ=WEEKLY;BYDAY=MO;BYHOUR=1;BYMINUTE=0",), NOW),
                    operation_definition=OperationDefinition(destination_region="r", destination_project_id="q"),
                    created_time=NOW, updated_time=NOW)
    msg = convert.policy_out(policy)
    assert msg.operation_type == pp.OPERATION_TYPE_REPLICATION and not msg.enabled
    assert msg.trigger.start_time.ToDatetime(UTC) == NOW
    request = pp.CreatePolicyRequest(name=msg.name, operation_type=msg.operation_type, enabled=msg.enabled,
                                     trigger=msg.trigger, operation_definition=msg.operation_definition)
    command = convert.create_policy_in("p", request)
    assert (command.trigger, command.operation_definition, command.enabled) == \
        (policy.trigger, policy.operation_definition, False)
    assert convert.create_policy_in("p", pp.CreatePolicyRequest()).enabled is True  # CBR's default
    assert convert.operation_type(0) == "" and convert.operation_type(99) == "unknown"


def test_update_command_keeps_what_is_not_given():
    command = convert.update_policy_in("p", pp.UpdatePolicyRequest(policy_id="x", enabled=False))
    assert (command.name, command.enabled, command.trigger, command.operation_definition) == (None, False, None, None)
    command = convert.update_policy_in("p", pp.UpdatePolicyRequest(policy_id="x", trigger=pp.PolicyTrigger(),
                                                                   operation_definition=pp.OperationDefinition()))
    assert command.trigger == Trigger() and command.operation_definition == OperationDefinition()


def test_out_of_range_timestamps_are_invalid_time_ranges():
    msg = pp.PolicyTrigger(patterns=["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"])
    msg.start_time.seconds = 10 ** 13  # beyond year 9999
    with pytest.raises(errors.InvalidTimeRangeError):
        convert.trigger_in(msg)
