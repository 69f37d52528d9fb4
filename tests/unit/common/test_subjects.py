"""The event subject table: one subject per event, of the form cbr.<producer>.<event>, for every event message."""
from __future__ import annotations

import re

import pytest

from cbr.events.v1 import (audit_events_pb2, backup_events_pb2, policy_events_pb2, replication_events_pb2,
                           vault_events_pb2)
from cbr_common.subjects import SUBJECTS, subject_of


def test_every_event_message_has_a_subject_and_no_subject_is_shared():
    types = {key[0] if isinstance(key, tuple) else key for key in SUBJECTS}
    for module in (audit_events_pb2, backup_events_pb2, policy_events_pb2, replication_events_pb2, vault_events_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            if "event_id" not in descriptor.fields_by_name:
                continue  # a part of an event (e.g. ResourceBackups), not an event
            assert getattr(module, descriptor.name) in types, descriptor.name
    assert len(set(SUBJECTS.values())) == len(SUBJECTS)
    assert all(re.fullmatch(r"cbr\.[a-z]+\.[a-z_]+", s) for s in SUBJECTS.values())


def test_subject_of():
    assert subject_of(backup_events_pb2.BackupCompleted) == "cbr.backup.completed"
    assert subject_of(vault_events_pb2.VaultPolicyChanged, "dissociated") == "cbr.vault.policy_dissociated"
    with pytest.raises(LookupError, match="VaultPolicyChanged"):
        subject_of(vault_events_pb2.VaultPolicyChanged)  # the kind is needed
