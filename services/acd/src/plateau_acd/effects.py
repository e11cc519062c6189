"""Sends the effects of committed decisions to the gateway, and records what its answers mean.

* A reservation becomes ``CallControl.ConnectAgent`` with the reservation's event id as the
  request id, so a repeat (after a restart of the acd, or a retry) does nothing twice.
  Whether the agent leg then rings, is refused or rings out arrives later as gateway events.
* ``UNAVAILABLE`` (gateway down or slow) and ``FAILED_PRECONDITION`` (the call is still
  busy with an earlier agent leg, say of an agent who logged out while it rang) are retried
  with back-off for as long as the reservation holds; ``NOT_FOUND`` means the call is gone
  at the gateway: it is recorded as the call's end (an abandon when it was waiting), never
  retried; any other refusal of the request releases the agent and requeues the call at
  the head of its queue.
* A routing failure becomes ``CallControl.Hangup``; an unreachable gateway is retried a few
  times, a call already gone needs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from plateau_acd.adapters.gateway import Answer, ConnectRequest, Gateway, Outcome
from plateau_acd.domain import routing
from plateau_acd.handlers import Acd, Effect, HangupOrder, Reservation
from plateau_contracts.events.calls import AgentLegFailure
from plateau_runtime.outbox import Backoff

log = structlog.get_logger(__name__)

_HANGUP_ATTEMPTS = 5
_CONCURRENCY = 32


class Effects:
    """The worker that turns effects into gateway requests (a background task)."""

    def __init__(self, acd: Acd, gateway: Gateway) -> None:
        self._acd = acd
        self._gateway = gateway
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        self._running: set[asyncio.Task[None]] = set()
        self._retries: dict[object, Backoff] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Send effects as they come until ``stop``."""
        queue = self._acd.effects
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getting, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if getting not in done:
                    getting.cancel()
                    break
                effect = getting.result()
                await self._slots.acquire()
                task = asyncio.create_task(self._send(effect, stop))
                self._running.add(task)
                task.add_done_callback(self._finished)
        finally:
            stopping.cancel()
            for task in list(self._running):
                task.cancel()
            for task in list(self._running):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("acd.effect_failed", exc_info=task.exception())

    async def _send(self, effect: Effect, stop: asyncio.Event) -> None:
        if isinstance(effect, Reservation):
            await self._connect(effect, stop)
        else:
            await self._hang_up(effect, stop)

    async def _connect(self, reservation: Reservation, stop: asyncio.Event) -> None:
        acd = self._acd
        book = acd.book(reservation.tenant)
        if not book.is_current(reservation):
            self._retries.pop(reservation.event_id, None)
            return
        queue = book.state.queues.get(reservation.queue_id)
        ring_timeout = queue.config.ring_timeout_s if queue else 15
        answer = await self._gateway.connect_agent(
            ConnectRequest(
                tenant=reservation.tenant,
                request_id=str(reservation.event_id),
                call_id=reservation.call_id,
                agent_id=reservation.agent_id,
                extension=reservation.extension,
                queue_id=reservation.queue_id,
                ring_timeout_s=ring_timeout,
            )
        )
        context = {
            "tenant": reservation.tenant,
            "call_id": reservation.call_id,
            "agent_id": reservation.agent_id,
            "detail": answer.detail,
        }
        match answer.outcome:
            case Outcome.ACCEPTED:
                self._retries.pop(reservation.event_id, None)
            case Outcome.UNAVAILABLE | Outcome.REFUSED:
                # Unreachable, or the call is busy with an agent leg the acd no longer
                # counts on (an agent who logged out while ringing): try again while the
                # reservation holds; the gateway's facts end it otherwise.
                backoff = self._retries.setdefault(reservation.event_id, Backoff(0.2, 5.0))
                delay = backoff.next_delay()
                log.warning(
                    "acd.connect_retry", outcome=answer.outcome.value, retry_in_s=delay, **context
                )
                self._later(reservation, delay, stop)
            case Outcome.CALL_GONE:
                self._retries.pop(reservation.event_id, None)
                log.info("acd.connect_call_gone", **context)
                await acd.decide(
                    reservation.tenant,
                    routing.CallHungUp(reservation.call_id, acd.now()),
                    causation_id=reservation.event_id,
                )
            case Outcome.FAILED:
                self._retries.pop(reservation.event_id, None)
                log.error("acd.connect_failed", **context)
                await acd.decide(
                    reservation.tenant,
                    routing.AgentLegFailed(
                        reservation.call_id, reservation.agent_id, AgentLegFailure.OTHER, acd.now()
                    ),
                    causation_id=reservation.event_id,
                )

    async def _hang_up(self, order: HangupOrder, stop: asyncio.Event) -> None:
        backoff = Backoff(0.2, 5.0)
        answer = Answer(Outcome.UNAVAILABLE)
        for _ in range(_HANGUP_ATTEMPTS):
            answer = await self._gateway.hang_up(
                order.tenant, str(order.event_id), order.call_id, order.no_queue
            )
            if answer.outcome is not Outcome.UNAVAILABLE or stop.is_set():
                break
            await asyncio.sleep(backoff.next_delay())
        if answer.outcome not in (Outcome.ACCEPTED, Outcome.CALL_GONE):
            log.warning(
                "acd.hangup_not_done",
                tenant=order.tenant,
                call_id=order.call_id,
                outcome=answer.outcome.value,
                detail=answer.detail,
            )

    def _later(self, effect: Effect, delay: float, stop: asyncio.Event) -> None:
        if stop.is_set():
            return
        asyncio.get_running_loop().call_later(delay, self._acd.effects.put_nowait, effect)
