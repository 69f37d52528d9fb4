"""The data path's settings are checked when a worker starts, not at its first backup or GC."""
from __future__ import annotations

import pytest

from cbr_backup.worker.main import check_data_path_settings
from cbr_common.settings import SettingsError


@pytest.mark.parametrize("name, value", [("CBR_PACK_TARGET_MIB", "0"), ("CBR_PACK_TARGET_MIB", "2048"),
                                         ("CBR_PACK_TARGET_MIB", "big"), ("CBR_REPACK_BELOW", "1.5"),
                                         ("CBR_REPACK_BELOW", "-0.1"), ("CBR_REPACK_BELOW", "half")])
def test_a_bad_value_is_a_settings_error_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        check_data_path_settings()
    assert name in str(refused.value) or value in str(refused.value)


def test_good_values_and_defaults_pass(monkeypatch):
    monkeypatch.delenv("CBR_PACK_TARGET_MIB", raising=False)
    monkeypatch.delenv("CBR_REPACK_BELOW", raising=False)
    check_data_path_settings()
    monkeypatch.setenv("CBR_PACK_TARGET_MIB", "8")
    monkeypatch.setenv("CBR_REPACK_BELOW", "0.25")
    check_data_path_settings()
