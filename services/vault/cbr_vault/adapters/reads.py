"""The vault service's hot reads (GetVault, ListVaults), each one statement on a connection without a transaction.

A vault with its resources, tags and bind rules used to take four queries in a session's transaction (BEGIN, four
SELECTs, ROLLBACK: six round trips and SQLAlchemy's ORM session around them). Here the children come back as JSON
arrays from correlated subqueries of the same statement, built once at import (SQLAlchemy then compiles each
statement once and reuses it), and a page carries its total count as a window function.
"""
from __future__ import annotations

from sqlalchemy import and_, bindparam, exists, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from cbr_vault.adapters.repository import _VAULT_FIELDS, VaultFilter
from cbr_vault.adapters.tables import bind_rules, vault_resources, vault_tags, vaults
from cbr_vault.domain.model import Tag, Vault, VaultResource

_RESOURCE_KEYS = ("resource_id", "type", "name", "exclude_volumes", "protect_status", "size_bytes",
                  "backup_size_bytes", "backup_count")


def _json_children(table, columns, order_by):
    """A correlated subquery: the vault's rows of `table` as one JSON array of arrays, in `order_by` order."""
    row = func.json_build_array(*columns)
    return (select(func.coalesce(func.json_agg(aggregate_order_by(row, *order_by)), literal_column("'[]'::json")))
            .where(table.c.vault_id == vaults.c.vault_id).scalar_subquery())


_CHILDREN = (
    _json_children(vault_resources, [vault_resources.c[k] for k in _RESOURCE_KEYS], [vault_resources.c.position])
    .label("resources_json"),
    _json_children(vault_tags, [vault_tags.c.key, vault_tags.c.value], [vault_tags.c.key]).label("tags_json"),
    _json_children(bind_rules, [bind_rules.c.key, bind_rules.c.value], [bind_rules.c.key, bind_rules.c.value])
    .label("rules_json"),
)
_GET = select(vaults, *_CHILDREN).where(vaults.c.vault_id == bindparam("vault_id"),
                                        vaults.c.project_id == bindparam("project_id"))


def _vault(row) -> Vault:
    return Vault(vault_id=row["vault_id"], project_id=row["project_id"],
                 backup_policy_id=row["backup_policy_id"] or "",
                 replication_policy_id=row["replication_policy_id"] or "",
                 replication_destination_vault_id=row["replication_destination_vault_id"] or "",
                 resources=[VaultResource(resource_id=r[0], type=r[1], name=r[2], exclude_volumes=tuple(r[3] or ()),
                                          protect_status=r[4], size_bytes=r[5], backup_size_bytes=r[6],
                                          backup_count=r[7]) for r in row["resources_json"]],
                 tags=[Tag(k, v) for k, v in row["tags_json"]],
                 bind_rules=[Tag(k, v) for k, v in row["rules_json"]],
                 **{f: row[f] for f in _VAULT_FIELDS})


class VaultReads:
    def __init__(self, connection: AsyncConnection):
        self._c = connection

    async def get(self, project_id: str, vault_id: str) -> Vault | None:
        row = (await self._c.execute(_GET, {"vault_id": vault_id, "project_id": project_id})).mappings().first()
        return None if row is None else _vault(row)

    async def list(self, flt: VaultFilter, limit: int, offset: int) -> tuple[list[Vault], int]:
        where = [vaults.c.project_id == flt.project_id]
        if flt.name:
            where.append(vaults.c.name.contains(flt.name, autoescape=True))
        for column, value in ((vaults.c.object_type, flt.object_type), (vaults.c.protect_type, flt.protect_type),
                              (vaults.c.status, flt.status)):
            if value:
                where.append(column == value)
        if flt.policy_id:
            where.append(or_(vaults.c.backup_policy_id == flt.policy_id,
                             vaults.c.replication_policy_id == flt.policy_id))
        if flt.vault_ids:
            where.append(vaults.c.vault_id.in_(flt.vault_ids))
        if flt.resource_ids:
            where.append(exists().where(vault_resources.c.vault_id == vaults.c.vault_id,
                                        vault_resources.c.resource_id.in_(flt.resource_ids)))
        rows = (await self._c.execute(
            select(vaults, *_CHILDREN, func.count().over().label("total")).where(and_(*where))
            .order_by(vaults.c.created_time.desc(), vaults.c.vault_id).limit(limit).offset(offset))).mappings().all()
        if rows:
            count = rows[0]["total"]
        elif offset:  # past the last page: the window had no row to count on
            count = (await self._c.execute(select(func.count()).select_from(vaults).where(and_(*where)))).scalar_one()
        else:
            count = 0
        return [_vault(r) for r in rows], count
