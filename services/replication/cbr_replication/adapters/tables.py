"""The `replication` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, Index, Integer, LargeBinary, MetaData, String, \
    Table, Text, text

from cbr_common.outbox import add_outbox_tables

metadata = MetaData(schema="replication")
add_outbox_tables(metadata)

# One backup's replication to one destination vault (cbr.replication.v1.ReplicationRecord). A request_id names
# one record per project; a backup has at most one open (waiting, replicating) record per destination vault,
# so concurrent requests for it meet at that index and answer the one record.
records = Table(
    "records", metadata,
    Column("replication_record_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("source_region", String(63), nullable=False),
    Column("source_vault_id", String(36), nullable=False),
    Column("source_backup_id", String(36), nullable=False),
    Column("resource_type", String(16), nullable=False),
    Column("resource_id", String(36), nullable=False),
    Column("destination_region", String(63), nullable=False),
    Column("destination_project_id", String(64), nullable=False),
    Column("destination_vault_id", String(36), nullable=False),
    Column("destination_backup_id", String(36), nullable=False, server_default=""),
    Column("status", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, server_default=""),
    Column("request_id", String(64), nullable=False, server_default=""),
    Column("checkpoint_request_id", String(64), nullable=False, server_default=""),
    Column("auto_trigger", Boolean, nullable=False, server_default="false"),
    Column("policy_id", String(36), nullable=False, server_default=""),
    Column("retention", LargeBinary),  # a serialized cbr.replication.v1.ReplicaRetention (auto replicas)
    Column("rate_limit_mbps", Float, nullable=False, server_default="0"),  # migration replication_0004
    Column("task_id", String(36), nullable=False, server_default=""),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("bytes_done", BigInteger, nullable=False, server_default="0"),
    Column("bytes_total", BigInteger, nullable=False, server_default="0"),
    Column("chunk_bytes_sent", BigInteger, nullable=False, server_default="0"),
    Column("present_bytes", BigInteger, nullable=False, server_default="0"),
    Column("resent_bytes", BigInteger, nullable=False, server_default="0"),
    Column("metadata_bytes", BigInteger, nullable=False, server_default="0"),
    Column("chunks_sent", BigInteger, nullable=False, server_default="0"),
    Column("chunks_present", BigInteger, nullable=False, server_default="0"),
    Column("source_manifest_digest", LargeBinary, nullable=False, server_default=text("''::bytea")),
    Column("replica_manifest_digest", LargeBinary, nullable=False, server_default=text("''::bytea")),
    Column("error_code", String(64), nullable=False, server_default=""),
    Column("error_message", Text, nullable=False, server_default=""),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    Column("started_time", DateTime(timezone=True)),
    Column("ended_time", DateTime(timezone=True)),
    Index("ux_records_request", "project_id", "request_id", unique=True,
          postgresql_where=text("request_id <> ''")),
    Index("ux_records_open", "source_backup_id", "destination_region", "destination_vault_id", unique=True,
          postgresql_where=text("status IN ('waiting', 'replicating')")),
    Index("ix_records_backup", "source_backup_id", "destination_region", "destination_vault_id"),
    Index("ix_records_project_created", "project_id", "created_time"),
    Index("ix_records_checkpoint_request", "project_id", "checkpoint_request_id",
          postgresql_where=text("checkpoint_request_id <> ''")),
)

# A ReplicateCheckpoint with a request_id (a policy tick's is its tick id): its arguments, so that a repeat
# answers the records it made and a reuse with other arguments is refused.
checkpoint_requests = Table(
    "checkpoint_requests", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("vault_id", String(36), nullable=False),
    Column("destination_region", String(63), nullable=False),
    Column("destination_project_id", String(64), nullable=False),
    Column("destination_vault_id", String(36), nullable=False),
    Column("auto_trigger", Boolean, nullable=False),
    Column("policy_id", String(36), nullable=False, server_default=""),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

# The source vaults whose lag the lag check measures, and in which region: written by each replication policy
# tick (the vault is bound to that policy), whether or not the tick could replicate. Vaults with records are
# measured as well, in their records' regions.
lag_watches = Table(
    "lag_watches", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("source_vault_id", String(36), primary_key=True),
    Column("destination_region", String(63), primary_key=True),
    Column("policy_id", String(36), nullable=False, server_default=""),
    Column("seen_time", DateTime(timezone=True), nullable=False),
)

# The (resource, destination region)s whose crossing of CBR_REPLICATION_LAG_ALERT_SECONDS was published and
# which have not recovered since: the row is the "once" of cbr.replication.lagging.
lagging = Table(
    "lagging", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("source_vault_id", String(36), primary_key=True),
    Column("resource_id", String(36), primary_key=True),
    Column("destination_region", String(63), primary_key=True),
    Column("oldest_unreplicated_backup_id", String(36), nullable=False),
    Column("crossed_time", DateTime(timezone=True), nullable=False),
)
