"""The vault service's sampled gauges (cbr_common/metrics.py): each vault's usage, size and alarm threshold."""
from __future__ import annotations

from sqlalchemy import select

from cbr_common import metrics
from cbr_common.metrics import Sampler
from cbr_vault.adapters.tables import vaults
from cbr_vault.domain.rules import GIB


def usage_sampler(db) -> Sampler:
    async def sample() -> None:
        async with db.sessions() as session:
            rows = (await session.execute(select(vaults.c.project_id, vaults.c.vault_id, vaults.c.name,
                                                 vaults.c.used_bytes, vaults.c.size_gb, vaults.c.threshold))).all()
        metrics.VAULT_USED.replace({(p, v, n): used for p, v, n, used, _, _ in rows})
        metrics.VAULT_CAPACITY.replace({(p, v, n): size * GIB for p, v, n, _, size, _ in rows})
        metrics.VAULT_THRESHOLD.replace({(p, v, n): threshold / 100 for p, v, n, _, _, threshold in rows})
    return sample
