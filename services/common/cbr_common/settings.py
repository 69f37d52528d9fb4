"""Frozen settings, read once from the environment at start-up."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping


class SettingsError(ValueError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    service: str                       # vault | backup | policy | replication
    database_url: str                  # CBR_DATABASE_URL, e.g. postgresql+psycopg://cbr@127.0.0.1:5432/cbr
    nats_url: str                      # CBR_NATS_URL, e.g. nats://127.0.0.1:4222 (a cluster: its nodes, comma-separated)
    jwt_secret: str                    # CBR_JWT_SECRET, HS256 key shared by issuers and services
    listen_addr: str = "127.0.0.1:0"   # CBR_LISTEN_ADDR host:port (port 0 picks a free one)
    peers: Mapping[str, str] = field(default_factory=dict)  # CBR_<SERVICE>_ADDR of the other services
    region: str = "local"              # CBR_REGION
    regions_file: str = ""             # CBR_REGIONS_FILE: the peer regions (cbr_common.regions)
    pool_dir: str = ""                 # CBR_POOL_DIR: local provider's disk pool (backup service)
    fs_root: str = ""                  # CBR_FS_ROOT: local provider's file-system root (backup service)
    provider: str = "local"            # CBR_PROVIDER: local | ceph (disks as RBD images; file systems stay local)
    ceph_conf: str = ""                # CBR_CEPH_CONF: the cluster's ceph.conf (ceph provider)
    ceph_client: str = ""              # CBR_CEPH_CLIENT: the cephx user, e.g. client.cbr ("": client.admin)
    ceph_keyring: str = ""             # CBR_CEPH_KEYRING: its keyring, if ceph.conf does not name it
    rbd_pool: str = "rbd"              # CBR_RBD_POOL: the pool of the projects' images
    rbd_namespace: str = "{project}"   # CBR_RBD_NAMESPACE: a project's namespace, "{project}" is its id
    store_dir: str = ""                # CBR_STORE_DIR: the chunk store's folder (backup workers)
    store_url: str = ""                # CBR_STORE_URL: s3://bucket[/prefix][?endpoint=URL&region=R] instead
    kek_file: str = ""                 # CBR_KEK_FILE: the 32-byte key-encryption key (backup service, workers)
    job_lease_seconds: float = 30.0    # CBR_JOB_LEASE_SECONDS: a job whose worker is silent this long goes again
    job_attempts: int = 3              # CBR_JOB_ATTEMPTS: deliveries of a job before it fails (timeout)
    rate_limit_mbps: float = 0.0       # CBR_RATE_LIMIT_MBPS: a worker's read/write pace per job; 0: no limit
    scheduler_clock: str = ""          # CBR_SCHEDULER_CLOCK: "" (system) or "<ISO start>@<unix anchor>x<speed>"
    scheduler_interval_seconds: float = 1.0  # CBR_SCHEDULER_INTERVAL_SECONDS: the policy scheduler's pass; 0: off
    firing_lease_seconds: float = 60.0  # CBR_SCHEDULER_FIRING_LEASE_SECONDS: a stopped scheduler's tick goes again
    replication_lag_alert_seconds: float = 86400.0  # CBR_REPLICATION_LAG_ALERT_SECONDS: lag published past it; 0: off
    replication_lag_check_seconds: float = 60.0  # CBR_REPLICATION_LAG_CHECK_SECONDS: the lag check's pass
    replication_transfer_ttl_hours: float = 24.0  # CBR_REPLICATION_TRANSFER_TTL_HOURS: an idle open transfer's life
    replication_peer_patience_seconds: float = 30.0  # CBR_REPLICATION_PEER_PATIENCE_SECONDS: a silent peer fails it
    tls_cert: str = ""                 # CBR_TLS_CERT / CBR_TLS_KEY: serve TLS when both are set
    tls_key: str = ""
    tls_client_ca: str = ""            # CBR_TLS_CLIENT_CA: require client certificates signed by it (mTLS)
    tls_ca: str = ""                   # CBR_TLS_CA: trust anchor for calls to peers
    # The backup service's listener for other regions (RegionTransferService alone), e.g. 0.0.0.0:7443 with its
    # own certificate (the name other regions' directories trust with tls_ca); "": served on CBR_LISTEN_ADDR.
    transfer_listen_addr: str = ""     # CBR_TRANSFER_LISTEN_ADDR
    transfer_tls_cert: str = ""        # CBR_TRANSFER_TLS_CERT / CBR_TRANSFER_TLS_KEY: serve it with TLS
    transfer_tls_key: str = ""
    log_level: str = "INFO"            # CBR_LOG_LEVEL
    metrics_addr: str = ""             # CBR_METRICS_ADDR: host:port of this process's Prometheus /metrics; "": off
    metrics_sample_seconds: float = 15.0  # CBR_METRICS_SAMPLE_SECONDS: how often gauges read from the database
    max_message_bytes: int = 16 * 1024 * 1024
    outbox_poll_seconds: float = 0.5   # CBR_OUTBOX_POLL_SECONDS
    nats_replicas: int = 1             # CBR_NATS_REPLICAS: copies of each JetStream stream (3 on a 3-node cluster)
    peer_timeout_seconds: float = 5.0  # CBR_PEER_TIMEOUT_SECONDS: deadline of service-to-service calls
    # Bounds on every wait for the database, so that a stalled one answers UNAVAILABLE within seconds:
    db_connect_timeout_seconds: float = 2.0    # CBR_DB_CONNECT_TIMEOUT_SECONDS
    db_statement_timeout_seconds: float = 5.0  # CBR_DB_STATEMENT_TIMEOUT_SECONDS (RPCs, heartbeats)
    db_pool_timeout_seconds: float = 5.0       # CBR_DB_POOL_TIMEOUT_SECONDS: waiting for a pooled connection
    job_statement_timeout_seconds: float = 600.0  # CBR_JOB_STATEMENT_TIMEOUT_SECONDS: a job's own statements
    # An OpenID Connect provider whose RS256/ES256 tokens are accepted beside HS256 ones (cbr_common.oidc);
    # off while CBR_OIDC_ISSUER is empty.
    oidc_issuer: str = ""              # CBR_OIDC_ISSUER: the tokens' `iss`
    oidc_audience: str = ""            # CBR_OIDC_AUDIENCE: required in `aud`
    oidc_jwks_url: str = ""            # CBR_OIDC_JWKS_URL; "": from <issuer>/.well-known/openid-configuration
    oidc_project_claim: str = "project_id"  # CBR_OIDC_PROJECT_CLAIM: dotted path, e.g. "cbr.project"
    oidc_roles_claim: str = "roles"    # CBR_OIDC_ROLES_CLAIM: dotted path, e.g. "realm_access.roles"
    oidc_leeway_seconds: float = 30.0  # CBR_OIDC_LEEWAY_SECONDS: clock skew allowed on exp, nbf and iat
    oidc_http_timeout_seconds: float = 3.0    # CBR_OIDC_HTTP_TIMEOUT_SECONDS: each request to the provider
    oidc_jwks_refetch_seconds: float = 30.0   # CBR_OIDC_JWKS_REFETCH_SECONDS: least time between two fetches
    oidc_jwks_max_age_seconds: float = 3600.0  # CBR_OIDC_JWKS_MAX_AGE_SECONDS: held keys are fetched again after

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"missing required setting {name}")
            return value

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            try:
                return float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"setting {name} must be a number, got {raw!r}") from None

        peers = {
            name: env[f"CBR_{name.upper()}_ADDR"]
            for name in ("vault", "backup", "policy", "replication")
            if env.get(f"CBR_{name.upper()}_ADDR")
        }
        return cls(
            service=service,
            database_url=required("CBR_DATABASE_URL"),
            nats_url=required("CBR_NATS_URL"),
            jwt_secret=required("CBR_JWT_SECRET"),
            listen_addr=env.get("CBR_LISTEN_ADDR", "127.0.0.1:0"),
            peers=peers,
            region=env.get("CBR_REGION", "local"),
            regions_file=env.get("CBR_REGIONS_FILE", ""),
            pool_dir=env.get("CBR_POOL_DIR", ""),
            fs_root=env.get("CBR_FS_ROOT", ""),
            provider=env.get("CBR_PROVIDER", "local").strip() or "local",
            ceph_conf=env.get("CBR_CEPH_CONF", ""),
            ceph_client=env.get("CBR_CEPH_CLIENT", ""),
            ceph_keyring=env.get("CBR_CEPH_KEYRING", ""),
            rbd_pool=env.get("CBR_RBD_POOL", "rbd").strip() or "rbd",
            rbd_namespace=env.get("CBR_RBD_NAMESPACE", "{project}"),
            store_dir=env.get("CBR_STORE_DIR", ""),
            store_url=env.get("CBR_STORE_URL", ""),
            kek_file=env.get("CBR_KEK_FILE", ""),
            job_lease_seconds=number("CBR_JOB_LEASE_SECONDS", 30.0),
            job_attempts=int(number("CBR_JOB_ATTEMPTS", 3)),
            rate_limit_mbps=number("CBR_RATE_LIMIT_MBPS", 0.0),
            scheduler_clock=env.get("CBR_SCHEDULER_CLOCK", ""),
            scheduler_interval_seconds=number("CBR_SCHEDULER_INTERVAL_SECONDS", 1.0),
            firing_lease_seconds=number("CBR_SCHEDULER_FIRING_LEASE_SECONDS", 60.0),
            replication_lag_alert_seconds=number("CBR_REPLICATION_LAG_ALERT_SECONDS", 86400.0),
            replication_lag_check_seconds=number("CBR_REPLICATION_LAG_CHECK_SECONDS", 60.0),
            replication_transfer_ttl_hours=number("CBR_REPLICATION_TRANSFER_TTL_HOURS", 24.0),
            replication_peer_patience_seconds=number("CBR_REPLICATION_PEER_PATIENCE_SECONDS", 30.0),
            tls_cert=env.get("CBR_TLS_CERT", ""),
            tls_key=env.get("CBR_TLS_KEY", ""),
            tls_client_ca=env.get("CBR_TLS_CLIENT_CA", ""),
            tls_ca=env.get("CBR_TLS_CA", ""),
            transfer_listen_addr=env.get("CBR_TRANSFER_LISTEN_ADDR", ""),
            transfer_tls_cert=env.get("CBR_TRANSFER_TLS_CERT", ""),
            transfer_tls_key=env.get("CBR_TRANSFER_TLS_KEY", ""),
            log_level=env.get("CBR_LOG_LEVEL", "INFO"),
            metrics_addr=env.get("CBR_METRICS_ADDR", "").strip(),
            metrics_sample_seconds=number("CBR_METRICS_SAMPLE_SECONDS", 15.0),
            outbox_poll_seconds=number("CBR_OUTBOX_POLL_SECONDS", 0.5),
            nats_replicas=int(number("CBR_NATS_REPLICAS", 1)),
            peer_timeout_seconds=number("CBR_PEER_TIMEOUT_SECONDS", 5.0),
            db_connect_timeout_seconds=number("CBR_DB_CONNECT_TIMEOUT_SECONDS", 2.0),
            db_statement_timeout_seconds=number("CBR_DB_STATEMENT_TIMEOUT_SECONDS", 5.0),
            db_pool_timeout_seconds=number("CBR_DB_POOL_TIMEOUT_SECONDS", 5.0),
            job_statement_timeout_seconds=number("CBR_JOB_STATEMENT_TIMEOUT_SECONDS", 600.0),
            oidc_issuer=env.get("CBR_OIDC_ISSUER", "").strip(),
            oidc_audience=env.get("CBR_OIDC_AUDIENCE", "").strip(),
            oidc_jwks_url=env.get("CBR_OIDC_JWKS_URL", "").strip(),
            oidc_project_claim=env.get("CBR_OIDC_PROJECT_CLAIM", "").strip() or "project_id",
            oidc_roles_claim=env.get("CBR_OIDC_ROLES_CLAIM", "").strip() or "roles",
            oidc_leeway_seconds=number("CBR_OIDC_LEEWAY_SECONDS", 30.0),
            oidc_http_timeout_seconds=number("CBR_OIDC_HTTP_TIMEOUT_SECONDS", 3.0),
            oidc_jwks_refetch_seconds=number("CBR_OIDC_JWKS_REFETCH_SECONDS", 30.0),
            oidc_jwks_max_age_seconds=number("CBR_OIDC_JWKS_MAX_AGE_SECONDS", 3600.0),
        )

    def database(self, schema: str, pool_size: int = 10):
        """The service's database handle, with these bounds."""
        from cbr_common.db import Database
        return Database(self.database_url, schema, pool_size=pool_size,
                        connect_timeout=self.db_connect_timeout_seconds,
                        statement_timeout=self.db_statement_timeout_seconds, pool_timeout=self.db_pool_timeout_seconds)

    def __post_init__(self):
        if self.provider not in ("local", "ceph"):
            raise SettingsError(f"CBR_PROVIDER must be local or ceph, not {self.provider!r}")
        if self.job_lease_seconds <= 0 or self.job_attempts < 1:
            raise SettingsError("CBR_JOB_LEASE_SECONDS must be positive and CBR_JOB_ATTEMPTS at least 1")
        if min(self.db_connect_timeout_seconds, self.db_statement_timeout_seconds, self.db_pool_timeout_seconds,
               self.job_statement_timeout_seconds) <= 0:
            raise SettingsError("the CBR_DB_*_TIMEOUT_SECONDS and CBR_JOB_STATEMENT_TIMEOUT_SECONDS must be positive")
        if bool(self.transfer_tls_cert) != bool(self.transfer_tls_key):
            raise SettingsError("CBR_TRANSFER_TLS_CERT and CBR_TRANSFER_TLS_KEY go together")
        if self.transfer_tls_cert and not self.transfer_listen_addr:
            raise SettingsError("CBR_TRANSFER_TLS_CERT needs CBR_TRANSFER_LISTEN_ADDR (the listener it serves)")
        if self.replication_lag_alert_seconds < 0 or self.replication_lag_check_seconds <= 0:
            raise SettingsError("CBR_REPLICATION_LAG_ALERT_SECONDS must not be negative and "
                                "CBR_REPLICATION_LAG_CHECK_SECONDS must be positive")
        if self.replication_transfer_ttl_hours <= 0 or self.replication_peer_patience_seconds <= 0:
            raise SettingsError("CBR_REPLICATION_TRANSFER_TTL_HOURS and CBR_REPLICATION_PEER_PATIENCE_SECONDS must "
                                "be positive")
        if self.metrics_addr and not self.metrics_addr.rpartition(":")[2].isdigit():
            raise SettingsError(f"CBR_METRICS_ADDR must be host:port, got {self.metrics_addr!r}")
        if not 1 <= self.nats_replicas <= 5:  # JetStream's own bounds
            raise SettingsError(f"CBR_NATS_REPLICAS must be 1 to 5, not {self.nats_replicas}")
        if self.metrics_sample_seconds <= 0:
            raise SettingsError("CBR_METRICS_SAMPLE_SECONDS must be positive")
        if self.scheduler_interval_seconds < 0 or self.firing_lease_seconds <= 0:
            raise SettingsError("CBR_SCHEDULER_INTERVAL_SECONDS must not be negative and "
                                "CBR_SCHEDULER_FIRING_LEASE_SECONDS must be positive")
        self._check_oidc()

    def _check_oidc(self) -> None:
        if not (self.oidc_issuer or self.oidc_audience or self.oidc_jwks_url):
            return
        if not (self.oidc_issuer and self.oidc_audience):
            raise SettingsError("CBR_OIDC_ISSUER and CBR_OIDC_AUDIENCE go together (and CBR_OIDC_JWKS_URL needs them)")
        for name, url in (("CBR_OIDC_ISSUER", self.oidc_issuer), ("CBR_OIDC_JWKS_URL", self.oidc_jwks_url)):
            if url and not url.startswith(("https://", "http://")):
                raise SettingsError(f"{name} must be an http(s) URL, got {url!r}")
        if self.oidc_leeway_seconds < 0 or min(self.oidc_http_timeout_seconds, self.oidc_jwks_max_age_seconds) <= 0 \
                or self.oidc_jwks_refetch_seconds < 0:
            raise SettingsError("CBR_OIDC_LEEWAY_SECONDS and CBR_OIDC_JWKS_REFETCH_SECONDS must not be negative, "
                                "CBR_OIDC_HTTP_TIMEOUT_SECONDS and CBR_OIDC_JWKS_MAX_AGE_SECONDS must be positive")

    def peer(self, name: str) -> str:
        try:
            return self.peers[name]
        except KeyError:
            raise SettingsError(f"missing required setting CBR_{name.upper()}_ADDR") from None
