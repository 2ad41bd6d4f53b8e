"""Fallback between engines: a primary engine per direction, and a secondary
one that takes over while the primary fails.

A direction moves to the secondary engine after `connect_failures` failed
connects in a row, or after `after_s` without a working primary session. It
moves at once on a failure that no retry fixes, such as an invalid key, an
exhausted quota, or a model this key may not use. While on the secondary, it
opens a probe session of the primary every `retry_primary_s`. The first probe
that becomes ready takes over again, and a probe that fails is closed until
the next one. The probe takes over once the secondary has finished the speech
in flight (at most `handover_wait_s` later), so no utterance is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from media.audio import Pcm, Resampler
from media.engines.base import (
    Engine,
    EngineSession,
    SessionLabels,
    SessionListener,
    State,
    TranscriptKind,
    UpstreamFailure,
)
from media.logcontext import call_id_var, participant_id_var

logger = logging.getLogger(__name__)

# Input kept for a secondary session that opens now, so the utterance in
# progress when the primary gave up is translated from its start.
HISTORY_S = 2.0
# How often a pending hand-over checks whether the secondary has finished.
HANDOVER_POLL_S = 0.1

Role = Literal["primary", "secondary", "probe"]


@dataclass(frozen=True, kw_only=True)
class FallbackPolicy:
    """When a direction leaves its primary engine, and when it tries it again."""

    connect_failures: int = 3
    after_s: float = 10.0
    retry_primary_s: float = 60.0
    handover_wait_s: float = 15.0


class FallbackEngine(Engine):
    """Sessions of `primary` that fall back to `secondary`; named as `primary`."""

    def __init__(
        self, *, primary: Engine, secondary: Engine, policy: FallbackPolicy
    ) -> None:
        self.name = primary.name
        self.primary = primary
        self.secondary = secondary
        self._policy = policy

    def open_session(
        self,
        *,
        target_language: str,
        listener: SessionListener,
        labels: SessionLabels,
        source_language: str | None = None,
    ) -> FallbackSession:
        return FallbackSession(
            engine=self,
            policy=self._policy,
            target_language=target_language,
            source_language=source_language,
            listener=listener,
            labels=labels,
        )


class _Child:
    """One session of the primary or secondary engine, with its own input
    resampler, because the engines take audio at different rates."""

    def __init__(
        self,
        *,
        owner: FallbackSession,
        role: Role,
        engine: Engine,
        input_rate: int | None,
    ) -> None:
        self.owner = owner
        self.role = role
        self.engine = engine
        self.session = engine.open_session(
            target_language=owner.target_language,
            listener=_ChildListener(owner, self),
            labels=owner.labels,
            source_language=owner.source_language,
        )
        # None takes the session's own rate, as the primary does.
        self._input_rate = input_rate or self.session.input_rate
        self._resampler = (
            None
            if self.session.input_rate == self._input_rate
            else Resampler(self.session.input_rate)
        )

    def push(self, pcm: Pcm) -> None:
        if self._resampler is not None:
            pcm = self._resampler.resample_pcm(pcm, self._input_rate)
        self.session.push(pcm)


class _ChildListener:
    """Route one child's events to its owner, tagged with the child."""

    def __init__(self, owner: FallbackSession, child: _Child) -> None:
        self._owner = owner
        self._child = child

    def on_audio(self, pcm: Pcm, rate: int) -> None:
        if self._owner.is_active(self._child):
            self._owner.listener.on_audio(pcm, rate)

    def on_transcript(
        self, kind: TranscriptKind, delta: str, *, final: bool = False
    ) -> None:
        if self._owner.is_active(self._child):
            self._owner.listener.on_transcript(kind, delta, final=final)

    def on_state(self, state: State, reason: str, *, engine: str | None = None) -> None:
        self._owner.child_state(self._child, state, reason)

    def on_failure(self, failure: UpstreamFailure) -> None:
        self._owner.child_failure(self._child, failure)


class FallbackSession(EngineSession):
    """A direction's session that switches between a primary and a secondary."""

    def __init__(
        self,
        *,
        engine: FallbackEngine,
        policy: FallbackPolicy,
        target_language: str,
        source_language: str | None,
        listener: SessionListener,
        labels: SessionLabels,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.target_language = target_language
        self.source_language = source_language
        self.listener = listener
        self.labels = labels
        self.primary: _Child | None = _Child(
            owner=self, role="primary", engine=engine.primary, input_rate=None
        )
        self.input_rate = self.primary.session.input_rate
        self.secondary: _Child | None = None
        self.probe: _Child | None = None
        self._failures_in_row = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handover: asyncio.Task[None] | None = None
        self._closing = False
        self._history: deque[Pcm] = deque()
        self._history_samples = 0
        self.fallbacks = 0
        self.recoveries = 0

    def is_active(self, child: _Child) -> bool:
        if self.secondary is not None:
            return child is self.secondary
        return child is self.primary

    async def start(self) -> None:
        call_id_var.set(self.labels.call_id)
        participant_id_var.set(self.labels.participant_id)
        assert self.primary is not None
        self._arm_deadline()
        await self.primary.session.start()

    def push(self, pcm: Pcm) -> None:
        for child in (self.primary, self.secondary, self.probe):
            if child is not None:
                child.push(pcm)
        if self.secondary is None:
            self._remember(pcm)

    def _remember(self, pcm: Pcm) -> None:
        self._history.append(pcm)
        self._history_samples += pcm.size
        limit = int(HISTORY_S * self.input_rate)
        while self._history and self._history_samples - self._history[0].size >= limit:
            self._history_samples -= self._history.popleft().size

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for timer in (self._deadline, self._probe_timer):
            if timer is not None:
                timer.cancel()
        children = [c for c in (self.primary, self.secondary, self.probe) if c]
        self.primary = self.secondary = self.probe = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *self._tasks,
            *(child.session.close() for child in children),
            return_exceptions=True,
        )

    # Events of the children.

    def child_state(self, child: _Child, state: State, reason: str) -> None:
        if self._closing:
            return
        if child is self.primary and self.secondary is None:
            self._primary_state(state, reason)
        elif child is self.secondary:
            self._secondary_state(state, reason)
        elif child is self.probe and state == "ready":
            self._promote_probe()

    def child_failure(self, child: _Child, failure: UpstreamFailure) -> None:
        if self._closing:
            return
        if child is self.primary and self.secondary is None:
            self._failures_in_row += 1
            if not failure.retryable:
                self._fall_back(f"the realtime service rejected it ({failure.message})")
            elif self._failures_in_row >= self.policy.connect_failures:
                self._fall_back(f"{self._failures_in_row} connects failed in a row")
        elif child is self.secondary:
            # The last resort failed: the listener must learn of it.
            self.listener.on_failure(failure)
        elif child is self.probe:
            logger.info(
                "%s probe failed (%s); next try in %.0f s",
                self.engine.primary.name,
                failure.message,
                self.policy.retry_primary_s,
            )
            self.probe = None
            self._spawn(child.session.close(), "close-probe")
            self._schedule_probe()

    def _primary_state(self, state: State, reason: str) -> None:
        if state == "ready":
            self._failures_in_row = 0
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.listener.on_state("ready", reason)
            return
        self._arm_deadline()
        self.listener.on_state(state, reason)

    def _secondary_state(self, state: State, reason: str) -> None:
        assert self.secondary is not None
        name = self.secondary.engine.name
        if state == "ready":
            reason = (
                f"The {self.engine.primary.name} translation service is failing, "
                f"so the {name} engine translates meanwhile."
            )
            self.listener.on_state("degraded", reason, engine=name)
        else:
            self.listener.on_state(state, reason, engine=name)

    # Switching.

    def _fall_back(self, cause: str) -> None:
        primary = self.primary
        if primary is None or self.secondary is not None:
            return
        self.fallbacks += 1
        logger.warning("moving to the %s engine: %s", self.engine.secondary.name, cause)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.primary = None
        self.secondary = self._open("secondary")
        for pcm in self._history:
            self.secondary.push(pcm)
        self._history.clear()
        self._history_samples = 0
        self._spawn(primary.session.close(), "close-primary")
        self._spawn(self.secondary.session.start(), "start-secondary")
        self._schedule_probe()

    def _promote_probe(self) -> None:
        if self._handover is not None:
            return
        probe, secondary = self.probe, self.secondary
        assert probe is not None
        if secondary is not None and secondary.session.busy:
            logger.info(
                "the %s engine works again; moving back when the %s engine has "
                "finished the speech in flight",
                probe.engine.name,
                secondary.engine.name,
            )
            self._handover = self._spawn(self._hand_over(probe), "hand-over")
            return
        logger.info("the %s engine works again; moving back", probe.engine.name)
        self._switch_to_probe()

    async def _hand_over(self, probe: _Child) -> None:
        """Wait until the secondary is idle, then switch to `probe`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.handover_wait_s
        try:
            while self.secondary is not None and self.secondary.session.busy:
                if loop.time() >= deadline:
                    logger.warning(
                        "the %s engine is still busy after %.0f s; its speech in "
                        "flight is dropped",
                        self.secondary.engine.name,
                        self.policy.handover_wait_s,
                    )
                    break
                await asyncio.sleep(HANDOVER_POLL_S)
                if self.probe is not probe:
                    # The probe failed meanwhile, and a later one will try again.
                    return
        finally:
            self._handover = None
        self._switch_to_probe()

    def _switch_to_probe(self) -> None:
        probe, secondary = self.probe, self.secondary
        assert probe is not None
        self.recoveries += 1
        self.primary, self.probe, self.secondary = probe, None, None
        self._failures_in_row = 0
        if secondary is not None:
            self._spawn(secondary.session.close(), "close-secondary")
        self.listener.on_state("ready", "")

    def _schedule_probe(self) -> None:
        loop = asyncio.get_running_loop()
        self._probe_timer = loop.call_later(
            self.policy.retry_primary_s, self._start_probe
        )

    def _start_probe(self) -> None:
        self._probe_timer = None
        if self._closing or self.probe is not None or self.secondary is None:
            return
        logger.info("trying the %s engine again", self.engine.primary.name)
        self.probe = self._open("probe")
        self._spawn(self.probe.session.start(), "start-probe")

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.policy.after_s, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self._closing:
            self._fall_back(f"no working session for {self.policy.after_s:.0f} s")

    def _open(self, role: Role) -> _Child:
        engine = self.engine.secondary if role == "secondary" else self.engine.primary
        return _Child(owner=self, role=role, engine=engine, input_rate=self.input_rate)

    def _spawn(
        self, coroutine: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"fallback-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())
