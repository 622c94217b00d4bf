"""Fire one run's spike on the worker processes, from the daemon's side.

For each run a :class:`SpikeOnWorkers` deals the spike round-robin to the pool's workers
(:mod:`spikewatch.engine.worker_pool`), sends each its share with the planned monotonic
instants, merges the attempts they send back into the run's own
:class:`~spikewatch.core.attempt.Attempt` objects, and tells them when to close what
they hold. The limits, the abort rule and a lost worker are described in
:mod:`spikewatch.engine.worker_pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from spikewatch.config import TargetConfig
from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome
from spikewatch.engine.clock import now as _now
from spikewatch.engine.connection import Losses
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.worker_messages import (
    Abort,
    Attempts,
    Close,
    Closed,
    Failed,
    Finish,
    Health,
    Prepare,
    Prepared,
    Progress,
    Spike,
    WireError,
    WorkerHealth,
    WorkerMessage,
    apply_share,
    group_by_instant,
    split_round_robin,
    target_to_wire,
)
from spikewatch.engine.worker_pool import (
    ANSWER_MARGIN,
    FINISH_TIMEOUT,
    FINISH_TIMEOUT_CAP,
    START_TIMEOUT,
    WorkerLostError,
    WorkerPool,
    WorkerProcess,
)

log = logging.getLogger(__name__)


def abort_reached(rule: AbortRule, finished: int, failed: int) -> str:
    """Return why ``rule`` stops the spike after these counts, or "" while it does not."""
    if not rule.should_abort(finished, failed):
        return ""
    return f"abort.error_ratio={rule.error_ratio:g} reached: {failed} of {finished} failed"


class SpikeOnWorkers:
    """One run's spike, spread over a pool: prepare → fire → close held → finish."""

    def __init__(
        self, pool: WorkerPool, run: str, registry: ConnectionRegistry, *, reserve: int
    ) -> None:
        self.pool = pool
        self.run = run
        self.registry = registry
        self.reserve = reserve
        self.failures: list[str] = []
        self.shares: list[list[Attempt]] = [[] for _ in pool.workers]
        self.health: list[WorkerHealth | None] = [None] * pool.size
        self._ready: list[bool] = [False] * pool.size
        #: Sent a prepare: the worker may hold a run to finish even if it never answered.
        self._asked: list[bool] = [False] * pool.size
        self._slots = [0] * pool.size
        self._held = [0] * pool.size
        self._budget: list[tuple[int, str]] = [(0, "")] * pool.size
        self._close_timeout = 1.0
        self._opened = False
        self._rule = AbortRule(None, 1)
        self._counts: list[tuple[int, int]] = []
        self._abort_reason = ""
        self._churn = False
        #: A churn's connections open at once, at most: the sum of each worker's peak.
        self.peak_in_flight = 0

    def _lose(self, number: int, exc: WorkerLostError) -> None:
        self._ready[number] = False
        # The process is gone (or killed): so are its connections, and their slots.
        self._release(number, self._slots[number])
        self._held[number] = 0
        if str(exc) not in self.failures:
            self.failures.append(str(exc))

    def _release(self, number: int, count: int) -> None:
        count = min(count, self._slots[number])
        for _ in range(count):
            self.registry.release()
        self._slots[number] -= count

    async def prepare(self, target: TargetConfig, address: str) -> None:
        """Start missing workers and have each build the target's connection settings."""
        self._close_timeout = target.close_timeout
        self._opened = True
        message = Prepare(
            run=self.run,
            target=target_to_wire(target),
            address=address,
            lag_interval=self.pool.lag_interval,
        )

        async def one(worker: WorkerProcess) -> None:
            try:
                await asyncio.wait_for(worker.ensure_started(), START_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self._lose(worker.number, WorkerLostError(f"worker {worker.number}: {exc}"))
                return
            worker.open_inbox(self.run)
            answer: WorkerMessage | WireError
            try:
                self._asked[worker.number] = True
                worker.send(message)
                answer = await worker.receive(self.run, START_TIMEOUT, "get ready")
            except WorkerLostError as exc:
                self._lose(worker.number, exc)
                return
            except WireError as exc:
                answer = exc
            if isinstance(answer, Prepared):
                self._ready[worker.number] = True
            else:
                error = answer.error if isinstance(answer, Failed) else answer
                cause = f"worker {worker.number} cannot prepare: {error}"
                self._lose(worker.number, WorkerLostError(cause))

        await asyncio.gather(*(one(w) for w in self.pool.workers))

    async def fire(
        self,
        attempts: Sequence[Attempt],
        rule: AbortRule,
        answer_by: float,
        *,
        churn: bool = False,
        max_in_flight: int | None = None,
    ) -> str:
        """Fire ``attempts`` (planned, in start order) over the workers; fill them in.

        Return the abort rule's reason when it stopped the spike, else "". ``answer_by``
        (monotonic) is when every worker must have reported, or it is killed. A ``churn``
        holds nothing: its connections close after their cycle, and ``max_in_flight``
        (dealt to the workers like the slots) bounds how many are open at once.
        """
        # The slots free now (up to the spike's size) are taken for the whole spike and
        # dealt to the workers like the attempts; each worker takes from its budget at
        # each attempt's instant and gives back a failed one's at once, so a later batch
        # can use it, as in one process. Past its budget an attempt is `aborted`.
        wanted = len(attempts)
        if max_in_flight is not None:
            wanted = min(wanted, max_in_flight)
        budget = 0
        while budget < wanted and self.registry.try_acquire(self.reserve):
            budget += 1
        self.shares = split_round_robin(list(attempts), self.pool.size)
        budgets = [len(b) for b in split_round_robin(list(range(budget)), self.pool.size)]
        full = self.registry.full_reason(self.reserve)
        for number in range(self.pool.size):
            self._slots[number] = budgets[number]
            self._budget[number] = (
                budgets[number],
                f"{full} (worker {number}'s share of the {budget} free: {budgets[number]})",
            )
        self._rule = rule
        self._counts = [(0, 0)] * self.pool.size
        self._abort_reason = ""
        self._churn = churn
        self.peak_in_flight = 0
        in_flight: list[tuple[int | None, str]] = [(None, "")] * self.pool.size
        if max_in_flight is not None:
            shares = split_round_robin(list(range(max_in_flight)), self.pool.size)
            in_flight = [
                (
                    len(s),
                    f"churn.max_in_flight={max_in_flight} reached (worker {n}'s share: {len(s)})",
                )
                for n, s in enumerate(shares)
            ]
        await asyncio.gather(
            *(
                self._fire_share(w, share, answer_by, in_flight[w.number])
                for w, share in zip(self.pool.workers, self.shares, strict=True)
            )
        )
        return self._abort_reason

    async def _fire_share(
        self,
        worker: WorkerProcess,
        share: list[Attempt],
        by: float,
        in_flight: tuple[int | None, str] = (None, ""),
    ) -> None:
        if not share:
            return
        try:
            await self._collect_share(worker, share, by, in_flight)
        except WorkerLostError as exc:
            self._fail_share(worker.number, share, str(exc), _now())
            self._lose(worker.number, exc)
            return
        # Failed attempts' connections are closed; only the held ones keep their slot
        # (a churn holds none).
        held = 0 if self._churn else sum(1 for a in share if a.outcome == Outcome.OK)
        self._held[worker.number] = held
        self._release(worker.number, self._slots[worker.number] - held)

    async def _collect_share(
        self,
        worker: WorkerProcess,
        share: list[Attempt],
        by: float,
        in_flight: tuple[int | None, str],
    ) -> None:
        if not self._ready[worker.number]:
            raise WorkerLostError(self.failures[-1] if self.failures else "not ready")
        budget, full = self._budget[worker.number]
        worker.send(
            Spike(
                run=self.run,
                groups=group_by_instant(share),
                progress=self._rule.error_ratio is not None,
                slots=budget,
                full=full,
                churn=self._churn,
                max_in_flight=in_flight[0],
                in_flight_full=in_flight[1],
                receive_budget_bytes=self._receive_share,
                receive_budget_named=self._receive_share_named(),
            )
        )
        loop = asyncio.get_running_loop()
        while True:
            try:
                answer = await worker.receive(
                    self.run, by - loop.time(), "report its share of the spike"
                )
                done = self._take_answer(worker.number, share, answer)
            except WireError as exc:
                cause = f"worker {worker.number} sent a bad report: {exc}"
                worker.kill(cause)
                raise WorkerLostError(cause) from None
            if done:
                return

    def _take_answer(self, number: int, share: list[Attempt], answer: WorkerMessage) -> bool:
        """Take one answer to a spike message; return True once the share is in."""
        if isinstance(answer, Progress):
            self._counts[number] = (answer.finished, answer.failed)
            self._check_abort()
            return False
        if not isinstance(answer, Attempts):
            raise WireError(f"{answer.type!r} instead of its attempts")
        apply_share({a.conn: a for a in share}, answer.attempts)
        self.peak_in_flight += answer.peak_in_flight
        return True

    @property
    def _receive_share(self) -> int:
        """A worker's share of limits.max_receive_buffer_bytes: the daemon's budget split
        evenly, so that all processes together hold no more."""
        return max(1, self.registry.receive_budget.limit // self.pool.size)

    def _receive_share_named(self) -> str:
        """Name a worker's receive budget as what it is, a part of the configured total
        (its refusals say so, and so do its held connections' drop examples)."""
        return (
            f"worker share {self._receive_share} of limits.max_receive_buffer_bytes="
            f"{self.registry.receive_budget.limit} over {self.pool.size} workers"
        )

    def _check_abort(self) -> None:
        """Apply the abort rule to every worker's progress together."""
        if self._abort_reason:
            return
        finished = sum(c[0] for c in self._counts)
        failed = sum(c[1] for c in self._counts)
        self._abort_reason = abort_reached(self._rule, finished, failed)
        if not self._abort_reason:
            return
        for w in self.pool.workers:
            if self._ready[w.number]:
                with contextlib.suppress(WorkerLostError):
                    w.send(Abort(run=self.run, reason=self._abort_reason))

    @staticmethod
    def _fail_share(number: int, share: list[Attempt], cause: str, now: float) -> None:
        for attempt in share:
            attempt.void(f"{cause}; the attempts of worker {number}'s share are lost", now)

    async def _ask(
        self,
        question: Close | Finish,
        answers: tuple[str, ...],
        within: float,
        whom: Sequence[bool],
    ) -> list[WorkerMessage | None]:
        """Send ``question`` to each worker in ``whom``; return the first of ``answers`` each
        sends, or None (no worker, or a bad answer: logged, as good as none).

        Anything else in the inbox is left over from a step that was cancelled (a late
        ``prepared``, ``progress`` or ``attempts``) and is skipped.
        """
        loop = asyncio.get_running_loop()
        by = loop.time() + within
        doing = f"answer {question.type!r}"

        async def one(worker: WorkerProcess) -> WorkerMessage | None:
            if not (whom[worker.number] and worker.alive):
                return None
            try:
                worker.send(question)
                while True:
                    try:
                        answer = await worker.receive(self.run, by - loop.time(), doing)
                    except WireError as exc:
                        if exc.kind in answers:
                            log.warning("worker %d sent a bad answer: %s", worker.number, exc)
                            return None
                        continue
                    if answer.type in answers:
                        return answer
            except WorkerLostError as exc:
                self._lose(worker.number, exc)
                return None

        return list(await asyncio.gather(*(one(w) for w in self.pool.workers)))

    async def close_held(self) -> Losses:
        """Have every worker close the spike connections it holds, and wait until it has.

        Return how many of them were lost before: dropped by the target (and why one
        was), and closed by a worker's own receive budget.
        """
        within = self._close_timeout + ANSWER_MARGIN
        answers = await self._ask(Close(run=self.run), ("closed", "failed"), within, self._ready)
        dropped, example, to_prober = 0, None, 0
        for answer in answers:
            if isinstance(answer, Closed):
                dropped += answer.dropped
                example = example or answer.drop_example
                to_prober += answer.lost_to_prober
        for number in range(self.pool.size):
            if self._ready[number]:
                self._release(number, self._held[number])
                self._held[number] = 0
        return Losses(dropped, example, to_prober)

    async def finish(self) -> None:
        """End the run on every worker: it closes what is left and reports its health."""
        if not self._opened:
            return
        within = min(max(FINISH_TIMEOUT, self._close_timeout + 2.0), FINISH_TIMEOUT_CAP)
        answers = await self._ask(Finish(run=self.run), ("health", "failed"), within, self._asked)
        for number, answer in enumerate(answers):
            if isinstance(answer, Health):
                self.health[number] = answer.worker_health()
            self._release(number, self._slots[number])
        for worker in self.pool.workers:
            worker.close_inbox(self.run)
        self._opened = False
