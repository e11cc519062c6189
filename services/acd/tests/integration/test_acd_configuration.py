"""Configuration applied as events: only what changed, versioned, read by a running acd."""

from __future__ import annotations

import pytest
from acd_harness import DNIS, tenant_config, world

from plateau_acd.configuration import apply_config
from plateau_acd.domain.config import load_config
from plateau_acd.handlers import Acd
from plateau_contracts.catalogue import parse
from plateau_contracts.events.routing import TenantConfigured
from plateau_runtime.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


async def test_applying_records_only_changes_as_the_next_version(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        acd = Acd(w.store, w.acd_pool)
        await acd.load()
        config = tenant_config(w.tenant)
        [first] = await apply_config(w.store, w.acd_pool, load_config(config), "one.yaml")
        assert first.version == 1 and first.changes
        [again] = await apply_config(w.store, w.acd_pool, load_config(config), "one.yaml")
        assert (again.version, again.changes) == (1, ())
        assert "up to date" in again.describe()

        tenant = config["tenants"][0]  # type: ignore[index]
        tenant["agents"] = tenant["agents"][:2]
        tenant["queues"][0]["ring_timeout_s"] = 9
        tenant["entry_points"] = []
        tenant["pause_codes"] = ["break", "lunch", "training"]
        [second] = await apply_config(w.store, w.acd_pool, load_config(config), "two.yaml")
        assert second.version == 2
        assert set(second.changes) == {
            "1 agent.removed",
            "1 entry_point.unmapped",
            "1 queue.configured",
            "1 tenant.configured",
        }

        await acd.refresh()  # the running acd reads what the tool recorded
        book = acd.book(w.tenant)
        assert book.config_version == 2
        assert sorted(book.profiles) == ["a-1", "a-2"]
        assert book.pause_codes == {"break", "lunch", "training"}
        assert DNIS not in book.state.entry_points
        assert book.state.queues["q-main"].config.ring_timeout_s == 9
        versions = [
            parse(e.envelope)
            for e in [x async for x in w.store.iterate()]
            if e.envelope.type == "tenant.configured"
        ]
        assert [
            (v.config_version, v.source) for v in versions if isinstance(v, TenantConfigured)
        ] == [
            (1, "one.yaml"),
            (2, "two.yaml"),
        ]
