"""CBR_PROVIDER and the Ceph settings: parsed from the environment, checked before anything connects."""
from __future__ import annotations

import pytest

from cbr_backup.bootstrap import provider_for
from cbr_backup.providers.local import LocalProvider
from cbr_common.settings import Settings, SettingsError

BASE = {"CBR_DATABASE_URL": "postgresql+psycopg://x/y", "CBR_NATS_URL": "nats://x", "CBR_JWT_SECRET": "s"}


def test_the_local_provider_is_the_default(tmp_path):
    settings = Settings.from_env("backup", dict(BASE, CBR_POOL_DIR=str(tmp_path / "pool"),
                                                CBR_FS_ROOT=str(tmp_path / "fs")))
    assert (settings.provider, settings.rbd_pool, settings.rbd_namespace) == ("local", "rbd", "{project}")
    assert isinstance(provider_for(settings), LocalProvider)


def test_the_ceph_settings_are_read_and_an_unknown_provider_is_refused():
    settings = Settings.from_env("backup", dict(BASE, CBR_PROVIDER="ceph", CBR_CEPH_CONF="/etc/ceph/ceph.conf",
                                                CBR_CEPH_CLIENT="client.cbr", CBR_CEPH_KEYRING="/k",
                                                CBR_RBD_POOL="volumes", CBR_RBD_NAMESPACE="os-{project}"))
    assert (settings.provider, settings.ceph_conf, settings.ceph_client, settings.ceph_keyring, settings.rbd_pool,
            settings.rbd_namespace) == ("ceph", "/etc/ceph/ceph.conf", "client.cbr", "/k", "volumes", "os-{project}")
    with pytest.raises(SettingsError, match="CBR_PROVIDER"):
        Settings.from_env("backup", dict(BASE, CBR_PROVIDER="nfs"))


def test_the_ceph_provider_needs_its_cluster_named(tmp_path):
    settings = Settings.from_env("backup", dict(BASE, CBR_PROVIDER="ceph", CBR_POOL_DIR=str(tmp_path / "pool"),
                                                CBR_FS_ROOT=str(tmp_path / "fs")))
    with pytest.raises(SettingsError, match="CBR_CEPH_CONF"):
        provider_for(settings)
