"""The `policy` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from sqlalchemy import MetaData

from cbr_common.outbox import add_outbox_tables

metadata = MetaData(schema="policy")
add_outbox_tables(metadata)
