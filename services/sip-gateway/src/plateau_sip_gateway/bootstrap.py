"""The composition root of the SIP gateway: its parts, wired by constructor injection."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field

import asyncpg
import structlog

from plateau_runtime.eventstore import EventStore
from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service
from plateau_sip_gateway.adapters.allowlist_feed import (
    CONSUMER,
    allowlist_consumer,
    load_allowlist,
)
from plateau_sip_gateway.adapters.cluster import BindingsMirror, CallOwners
from plateau_sip_gateway.adapters.recorder import Recorder
from plateau_sip_gateway.adapters.replicas import ReplicaClient
from plateau_sip_gateway.b2bua import B2bua
from plateau_sip_gateway.config import (
    MediaConfig,
    directory_for,
    load_media,
    load_passwords,
    load_trunks,
)
from plateau_sip_gateway.domain.admission import Admission
from plateau_sip_gateway.domain.allowlist import AllowList
from plateau_sip_gateway.domain.digest import DigestPolicy
from plateau_sip_gateway.domain.edge import TrustedProxies
from plateau_sip_gateway.domain.peers import PeerBindings, SharedBindings
from plateau_sip_gateway.domain.trunks import TrunkDirectory, TrunksConfig
from plateau_sip_gateway.entrypoints.call_control import Replicas, call_control_service
from plateau_sip_gateway.entrypoints.sip import SipEntrypoint
from plateau_sip_gateway.keepalive import TrunkKeepAlive
from plateau_sip_gateway.media import media_from_settings
from plateau_sip_gateway.media.calls import CallMedia
from plateau_sip_gateway.registrar_service import RegistrarService
from plateau_sip_gateway.settings import (
    GatewaySettings,
    digest_algorithms,
    resolve_outbound_proxy,
)
from plateau_sip_gateway.sip.endpoint import Endpoint, EndpointSettings

SPEC: ServiceSpec = service("sip-gateway")
SWEEP_INTERVAL_S = 5.0
PEERS_LOAD_TIMEOUT_S = 15.0

log = structlog.get_logger(__name__)


@dataclass
class Gateway:
    """The gateway's parts and its SIP life cycle (``run`` is the ``sip`` background task)."""

    settings: GatewaySettings
    store: EventStore
    recorder: Recorder
    registrar: RegistrarService
    b2bua: B2bua
    allowlist: AllowList
    endpoint: Endpoint | None = None
    keepalive: TrunkKeepAlive | None = None
    media_config: MediaConfig = field(default_factory=MediaConfig)
    media: CallMedia | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Several replicas (PLATEAU_SIP_REPLICA): call owners and everyone's bindings.
    replicas: Replicas | None = None
    mirror: BindingsMirror | None = None
    bindings: SharedBindings | None = None

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        store: EventStore,
        *,
        trunks: TrunksConfig | None = None,
        passwords: dict[str, str] | None = None,
        media: MediaConfig | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> Gateway:
        """The gateway's parts; ``pool`` (the service's) is needed with several replicas."""
        algorithms = digest_algorithms(settings.sip_digest_algorithms)
        realm = settings.sip_realm
        if passwords is None:
            passwords = load_passwords(settings.sip_extensions_file, settings.home)
        key = settings.sip_nonce_secret.encode() or secrets.token_bytes(32)
        registrar = RegistrarService.create(
            realm=realm,
            secrets=[key],
            directory=directory_for(passwords, realm, algorithms),
            digest=DigestPolicy(realm, algorithms=algorithms),
        )
        trunk_config = trunks or load_trunks(settings.sip_trunks_file, settings.sip_tenant)
        directory = TrunkDirectory(trunk_config)
        recorder = Recorder(store)
        allowlist = AllowList()
        replicas: Replicas | None = None
        mirror: BindingsMirror | None = None
        bindings: SharedBindings | None = None
        if settings.clustered:
            if pool is None:
                raise ValueError("several replicas share their state in the database: pass pool")
            owners = CallOwners(pool, settings.sip_replica, settings.sip_replica_address)
            replicas = Replicas(owners, ReplicaClient())
            peers = PeerBindings(settings.sip_replica)
            mirror = BindingsMirror(
                pool, peers, resync_s=settings.sip_replica_resync_s, on_resync=owners.prune
            )
            bindings = SharedBindings(registrar.registrar, peers)
            registrar.on_change = mirror.changed
        b2bua = B2bua(
            trunks=directory,
            admission=Admission.for_trunks(directory),
            registrar=bindings or registrar.registrar,
            allowlist=allowlist,
            recorder=recorder,
            ring_timeout_s=settings.sip_ring_timeout_s,
            unknown_source_tenant=settings.sip_tenant,
            on_open=replicas.owners.opened if replicas is not None else None,
        )
        # Read now, so a wrong media file stops the start-up instead of a call.
        media_config = media or load_media(settings.sip_media_file)
        return cls(
            settings,
            store,
            recorder,
            registrar,
            b2bua,
            allowlist,
            media_config=media_config,
            replicas=replicas,
            mirror=mirror,
            bindings=bindings,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Close calls left open, listen for SIP, sweep registrations until ``stop``."""
        settings = self.settings
        port = await media_from_settings(settings.sip_rtpengine_enabled, settings.sip_rtpengine_ng)
        media = CallMedia(port, self.media_config)
        self.media = self.b2bua.media = media
        log.info("sip_gateway.media", description=media.description)
        for line in media.start_report():
            (log.info if media.available else log.warning)("sip_gateway.media_config", note=line)
        mirroring: asyncio.Task[None] | None = None
        if self.replicas is not None and self.mirror is not None:
            # This replica's name is stable: bindings a crash left are its own, and stale.
            await self.mirror.clear_own()
            loaded = asyncio.Event()
            mirroring = asyncio.create_task(self.mirror.run(stop, loaded))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loaded.wait(), PEERS_LOAD_TIMEOUT_S)
        owners = self.replicas.owners if self.replicas is not None else None
        await self.b2bua.close_open_calls(
            self.store, owners.held_elsewhere if owners is not None else None
        )
        if settings.sip_outbound_proxy:
            proxy = await resolve_outbound_proxy(settings.sip_outbound_proxy)
            self.b2bua.outbound_proxy = proxy
            log.info(
                "sip_gateway.outbound_proxy", address=proxy.next_hop.address, route=proxy.route
            )
        endpoint = await Endpoint.listen(
            EndpointSettings(
                host=settings.sip_host,
                udp_port=settings.sip_port,
                tcp_port=settings.sip_port if settings.sip_tcp else None,
                advertised_host=settings.sip_advertised_host,
            )
        )
        self.endpoint = endpoint
        entry = SipEntrypoint(
            self.b2bua,
            self.registrar,
            self.recorder,
            settings.sip_tenant,
            proxies=TrustedProxies.parse(settings.sip_trusted_proxies),
        )
        endpoint.on_request(entry.handle)
        self.b2bua.attach(endpoint)
        log.info(
            "sip_gateway.listening",
            udp=endpoint.local_address("UDP"),
            trunks=[t.name for t in self.b2bua.trunks],
        )
        self.keepalive = TrunkKeepAlive(
            endpoint, self.b2bua.trunks, outbound_proxy=self.b2bua.outbound_proxy
        )
        keepalive = asyncio.create_task(self.keepalive.run(stop))
        self.ready.set()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL_S)
                for event in self.registrar.sweep():
                    self.recorder.record(settings.sip_tenant, [event])
        finally:
            keepalive.cancel()
            # Bindings live in memory: softphones must register again after a restart.
            for event in self.registrar.registrar.unregister_all("gateway_restart"):
                self.recorder.record(settings.sip_tenant, [event])
            if self.mirror is not None:
                await self.mirror.clear_own()  # only this replica's rows: the others stay
            self.b2bua.attach(None)
            await self.b2bua.stop()
            await endpoint.close()
            await media.close()
            await self.recorder.drain()
            if mirroring is not None:
                await asyncio.wait([mirroring], timeout=PEERS_LOAD_TIMEOUT_S)
            if self.replicas is not None:
                await self.replicas.owners.drain()
                await self.replicas.client.close()


def allowlist_group(settings: GatewaySettings) -> str:
    """The allow-list feed's consumer group: one per replica, since each replica needs
    every fact (members of one group would each get a share of the partitions)."""
    return f"{CONSUMER}-{settings.sip_replica}" if settings.clustered else CONSUMER


def gateway_components(gateway: Gateway, pool: asyncpg.Pool) -> Components:
    """The gRPC service and background tasks of a built gateway.

    The kept allow-list is loaded before SIP listens (``Originate`` answers UNAVAILABLE
    until then) and before the feed applies newer facts on top of it.
    """
    settings = gateway.settings
    feed = allowlist_consumer(
        pool, settings.kafka_bootstrap, gateway.allowlist, allowlist_group(settings)
    )
    loaded = asyncio.Event()

    async def follow_dialer(stop: asyncio.Event) -> None:
        facts = await load_allowlist(pool, gateway.allowlist)
        log.info("sip_gateway.allowlist_loaded", facts=facts)
        loaded.set()
        await feed.run(stop)

    async def sip(stop: asyncio.Event) -> None:
        waiting = asyncio.ensure_future(loaded.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()
        if not stop.is_set():
            await gateway.run(stop)

    return Components(
        grpc_services=[call_control_service(gateway.b2bua, gateway.replicas)],
        tasks={"sip": sip, "allowlist-feed": follow_dialer},
    )


def wire(resources: ServiceResources) -> Components:
    """The SIP gateway's ``CallControl`` servicer and its SIP and allow-list tasks."""
    settings = resources.settings
    if not isinstance(settings, GatewaySettings):
        settings = GatewaySettings.model_validate(settings.model_dump())
    gateway = Gateway.build(settings, resources.store, pool=resources.pool)
    return gateway_components(gateway, resources.pool)


def build_host() -> ServiceHost:
    """The host that runs the SIP gateway (``python -m plateau_sip_gateway``)."""
    return ServiceHost(SPEC, wire, settings_type=GatewaySettings)
