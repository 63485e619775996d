"""The one place that moves an unlock request through its life.

Listeners hand it plain values (who, where, which request); it checks the policy, changes the store by
compare-and-set, calls ModelArts and tells the chat side what to show through the `Notifier` port. It never
sees a Slack payload, so it can be driven by the Slack app, the demo or a test alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.metrics import REQUEST_OUTCOMES, Metrics
from bot.modelarts.client import BatchOutcome, ModelArtsClient
from bot.modelarts.errors import ModelArtsError, PoolNotFound
from bot.modelarts.models import is_locked
from bot.policy import Authorizer, Policy
from bot.requests import (
    CommandError,
    NodeResult,
    NodeStatus,
    ParsedCommand,
    RequestState,
    UnlockRequest,
    check_node_limit,
    new_request_id,
)
from bot.store import Store

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_replica_id() -> str:
    """Who holds an execution lease: host, process and a random tag, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class NodeState:
    """What a node looks like before the unlock, as the preview reads it."""

    LOCKED = "locked"
    UNLOCKED = "unlocked"
    MISSING = "missing"


@dataclass(frozen=True)
class Preview:
    """Per-node lock state read from ModelArts before anyone approves; `error` when it could not be read."""

    states: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def nodes_in(self, state: str) -> list[str]:
        return [node for node, seen in self.states.items() if seen == state]

    @property
    def available(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Reply:
    """What to tell the person who acted, privately; `ok` is False for a refusal."""

    text: str
    ok: bool = True
    request: UnlockRequest | None = None
    about: str | None = None  # which input a refusal concerns: "pool" or "nodes" (the modal marks that field)


class LeaseLost(Exception):
    """Another replica holds the execution lease of a request we were working on."""


class AnnounceFailed(Exception):
    """The chat side could not post a request's approval message; the text says why (e.g. `not_in_channel`)."""


class Notifier(Protocol):
    """What the workflow needs from the chat side; the Slack implementation lives in bot/slack/notifier.py."""

    async def announce(self, request: UnlockRequest, preview: Preview | None) -> str:
        """Post the approval message in the request's channel and return its ts; raise `AnnounceFailed`."""

    async def refresh(
        self, request: UnlockRequest, results: Sequence[NodeResult] = (), preview: Preview | None = None
    ) -> None:
        """Redraw the approval message for the request's current state."""

    async def thread_note(self, request: UnlockRequest, text: str) -> None:
        """A short reply in the request's thread."""

    async def post_results(
        self, request: UnlockRequest, results: Sequence[NodeResult], *, problems: Sequence[str], resumed: bool
    ) -> None:
        """The summary and every node's result, in the request's thread."""

    async def whisper(self, channel_id: str, user_id: str, text: str) -> None:
        """A message only `user_id` sees."""


@dataclass(frozen=True)
class WorkflowSettings:
    """The knobs of the workflow that come from settings rather than the policy."""

    lease_seconds: float = 60.0
    preview_timeout_seconds: float = 10.0
    replica_id: str = field(default_factory=default_replica_id)
    # How long an unlock call a stopped replica had sent may still land at ModelArts (its HTTP timeout): a
    # replica taking over an `executing` request waits this long before reading lock state, so it does not
    # read "still locked" and send the same unlock a second time while the first is still on its way.
    in_flight_seconds: float = 30.0
    # How many submissions (policy check, preview, store, approval message) run at once. A burst of commands
    # waits its turn here, so their follow-up work cannot crowd out the acknowledgements of the next ones in
    # the event loop (Slack shows an error after 3 s without one); see bench/ack_latency.py, BENCHMARKS.md.
    submit_concurrency: int = 4


class Workflow:
    """Creates, decides, executes, expires and resumes unlock requests."""

    def __init__(
        self,
        *,
        store: Store,
        client: ModelArtsClient,
        policy: Policy,
        authorizer: Authorizer,
        notifier: Notifier,
        settings: WorkflowSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.authorizer = authorizer
        self.notifier = notifier
        self.settings = settings or WorkflowSettings()
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics(process=False)
        self._submitting = asyncio.Semaphore(self.settings.submit_concurrency)

    # -- making a request ------------------------------------------------------------------------------

    async def submit(
        self,
        command: ParsedCommand,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        retry_of: str | None = None,
    ) -> Reply:
        """Check the caller and the command, then create a pending request and post it for approval."""
        async with self._submitting:
            return await self._submit(
                command, team_id=team_id, channel_id=channel_id, user_id=user_id, retry_of=retry_of
            )

    async def _submit(
        self, command: ParsedCommand, *, team_id: str, channel_id: str, user_id: str, retry_of: str | None
    ) -> Reply:
        refusal = await self.vet(command.pool, len(command.nodes), user_id=user_id, channel_id=channel_id)
        if refusal is not None:
            return refusal
        pool_policy = self.policy.for_pool(command.pool)
        preview = await self.preview(command.pool, command.nodes)
        if isinstance(preview, Reply):
            self._refused(user_id=user_id, channel_id=channel_id, pool=command.pool, why="pool_not_found")
            return preview
        if command.dry_run:
            return Reply(dry_run_text(command, preview))

        now = self.clock()
        request = UnlockRequest(
            id=new_request_id(),
            team_id=team_id,
            channel_id=channel_id,
            requester_id=user_id,
            pool=command.pool,
            nodes=command.nodes,
            reason=command.reason,
            created_at=now,
            expires_at=now + timedelta(seconds=pool_policy.ttl_seconds),
            two_person=pool_policy.two_person,
            retry_of=retry_of,
        )
        await self.store.create_request(request, actor=user_id)
        if preview is not None:
            await self.store.set_preview(request.id, preview.states)
        try:
            ts = await self.notifier.announce(request, preview)
        except AnnounceFailed as exc:
            # Without its message nobody can approve it: close it now rather than leave it pending.
            log.exception(
                "could not post request",
                extra={"event": "announce_failed", "request_id": request.id, "channel_id": channel_id},
            )
            closed = await self.store.transition(
                request.id,
                RequestState.PENDING,
                RequestState.CANCELLED,
                actor=SYSTEM_ACTOR,
                now=self.clock(),
                detail=f"could not post the approval message: {exc}",
            )
            if closed is not None:
                self._note(closed, "cancelled", user_id=SYSTEM_ACTOR, why="announce_failed")
            return Reply(
                f":warning: I could not post the approval message in this channel ({exc}); "
                "nothing was requested. Invite me to the channel (`/invite @unlock-bot`) and try again.",
                ok=False,
            )
        await self.store.set_message_ts(request.id, ts)
        self._note(request, "created", user_id=user_id, nodes=len(request.nodes))
        count = plural(len(request.nodes), "node")
        text = f"Request `{request.id}` for {count} in `{request.pool}` is waiting for approval."
        if command.duplicates_dropped:
            text += f" {plural(command.duplicates_dropped, 'duplicate node name')} dropped."
        return Reply(text, request=request)

    async def vet(self, pool: str, node_count: int, *, user_id: str, channel_id: str) -> Reply | None:
        """The checks that need no ModelArts call: may this user ask this here, and for this many nodes?"""
        decision = await self.authorizer.can_request(user_id, channel_id, pool)
        if not decision.allowed:
            self._refused(user_id=user_id, channel_id=channel_id, pool=pool, why="policy")
            return Reply(f":no_entry: {decision.reason}", ok=False, about="pool")
        try:
            check_node_limit(node_count, self.policy.for_pool(pool).max_nodes_per_request, pool=pool)
        except CommandError as exc:
            self._refused(user_id=user_id, channel_id=channel_id, pool=pool, why="node_limit")
            return Reply(f":no_entry: {exc}", ok=False, about="nodes")
        return None

    async def preview(self, pool: str, nodes: Sequence[str]) -> Preview | Reply:
        """Read each node's lock state; a missing pool refuses the request, other faults only lose the preview."""
        try:
            async with asyncio.timeout(self.settings.preview_timeout_seconds):
                listed = await self.client.list_nodes(pool)
        except PoolNotFound as exc:
            return Reply(
                f":no_entry: Pool `{pool}` was not found in this ModelArts project ({exc}).",
                ok=False,
                about="pool",
            )
        except (ModelArtsError, TimeoutError) as exc:
            reason = str(exc) or "ModelArts did not answer in time"
            log.warning("preview unavailable", extra={"event": "preview_failed", "pool": pool, "error": reason})
            return Preview(error=reason)
        by_name = {node.name: node for node in listed}
        states = {}
        for name in nodes:
            found = by_name.get(name)
            if found is None:
                states[name] = NodeState.MISSING
            else:
                states[name] = NodeState.LOCKED if is_locked(found) else NodeState.UNLOCKED
        return Preview(states=states)

    # -- deciding --------------------------------------------------------------------------------------

    async def approve(self, request_id: str, user_id: str) -> Reply:
        """Approve and run a pending request; at most once, whoever clicks and however often."""
        request = await self.store.get_request(request_id)
        if request is None:
            return Reply(f":warning: I know no request `{request_id}`.", ok=False)
        if request.state is not RequestState.PENDING:
            return Reply(already_decided_text(request), ok=False)
        if request.expires_at <= self.clock():
            await self.expire(request)
            return Reply(
                f":hourglass: Request `{request.id}` expired before it was approved; nothing was unlocked.",
                ok=False,
            )
        decision = await self.authorizer.can_approve(user_id, request)
        if not decision.allowed:
            return Reply(f":no_entry: {decision.reason}", ok=False)
        now = self.clock()
        approved = await self.store.transition(
            request.id,
            RequestState.PENDING,
            RequestState.APPROVED,
            actor=user_id,
            now=now,
            unexpired=True,
            decided_by=user_id,
            decided_at=now,
        )
        if approved is None:
            return await self._lost_race(request_id)
        self._note(approved, "approved", user_id=user_id)
        await self.execute(approved)
        return Reply(f"You approved `{request_id}`.", request=approved)

    async def deny(self, request_id: str, user_id: str) -> Reply:
        """An approver turns a pending request down."""
        request = await self.store.get_request(request_id)
        if request is None:
            return Reply(f":warning: I know no request `{request_id}`.", ok=False)
        if request.state is not RequestState.PENDING:
            return Reply(already_decided_text(request), ok=False)
        decision = await self.authorizer.can_approve(user_id, request)
        if not decision.allowed and user_id != request.requester_id:
            return Reply(f":no_entry: {decision.reason}", ok=False)
        if not decision.allowed:
            return Reply(":no_entry: You cannot deny your own request; use Cancel to withdraw it.", ok=False)
        return await self._close(request, RequestState.DENIED, user_id, "denied")

    async def cancel(self, request_id: str, user_id: str) -> Reply:
        """The requester withdraws a pending request."""
        request = await self.store.get_request(request_id)
        if request is None:
            return Reply(f":warning: I know no request `{request_id}`.", ok=False)
        if request.state is not RequestState.PENDING:
            return Reply(already_decided_text(request), ok=False)
        decision = await self.authorizer.can_cancel(user_id, request)
        if not decision.allowed:
            return Reply(f":no_entry: {decision.reason}", ok=False)
        return await self._close(request, RequestState.CANCELLED, user_id, "cancelled")

    async def _close(self, request: UnlockRequest, state: RequestState, user_id: str, verb: str) -> Reply:
        now = self.clock()
        closed = await self.store.transition(
            request.id,
            RequestState.PENDING,
            state,
            actor=user_id,
            now=now,
            decided_by=user_id,
            decided_at=now,
        )
        if closed is None:
            return await self._lost_race(request.id)
        self._note(closed, state.value, user_id=user_id)
        await self.notifier.refresh(closed)
        return Reply(f"You {verb} `{request.id}`.", request=closed)

    def _note(
        self, request: UnlockRequest, event: str, *, user_id: str, level: int = logging.INFO, **fields: Any
    ) -> None:
        """The one log line per request transition (who acted, where, which request), and its count.

        `event` is the state entered (or `resumed`); outcomes in `REQUEST_OUTCOMES` are also counted.
        Never pass a payload, a header or an error carrying credentials here.
        """
        if event in REQUEST_OUTCOMES:
            self.metrics.request(event)
        log.log(
            level,
            "request %s %s",
            request.id,
            event.replace("_", " "),
            extra={
                "event": f"request_{event}",
                "request_id": request.id,
                "user_id": user_id,
                "requester_id": request.requester_id,
                "channel_id": request.channel_id,
                "pool": request.pool,
                "state": request.state.value,
                **fields,
            },
        )

    def _refused(self, *, user_id: str, channel_id: str, pool: str, why: str) -> None:
        """A command turned down before any request existed: logged and counted, never audited."""
        self.metrics.request("refused")
        log.info(
            "request refused",
            extra={"event": "request_refused", "user_id": user_id, "channel_id": channel_id, "pool": pool, "why": why},
        )

    async def _lost_race(self, request_id: str) -> Reply:
        """Someone else changed the request between our read and our compare-and-set."""
        current = await self.store.get_request(request_id)
        if current is not None and current.state is RequestState.PENDING and current.expires_at <= self.clock():
            await self.expire(current)
            return Reply(
                f":hourglass: Request `{request_id}` expired before it was approved; nothing was unlocked.",
                ok=False,
            )
        if current is None:
            return Reply(f":warning: I know no request `{request_id}`.", ok=False)
        return Reply(already_decided_text(current), ok=False)

    # -- expiring --------------------------------------------------------------------------------------

    async def expire(self, request: UnlockRequest) -> bool:
        """Move one stale pending request to `expired` and say so on its message; False if someone beat us."""
        expired = await self.store.transition(
            request.id,
            RequestState.PENDING,
            RequestState.EXPIRED,
            actor=SYSTEM_ACTOR,
            now=self.clock(),
            decided_by=SYSTEM_ACTOR,
            decided_at=self.clock(),
        )
        if expired is None:
            return False
        self._note(expired, "expired", user_id=SYSTEM_ACTOR)
        await self.notifier.refresh(expired)
        return True

    async def expire_due(self) -> int:
        """The periodic sweep: every replica runs it, the compare-and-set makes each expiry happen once."""
        count = 0
        for request in await self.store.due_for_expiry(self.clock()):
            if await self.expire(request):
                count += 1
        return count

    # -- executing -------------------------------------------------------------------------------------

    async def execute(self, approved: UnlockRequest) -> UnlockRequest | None:
        """Take the lease on an approved request, unlock its nodes, record and post every result."""
        now = self.clock()
        executing = await self.store.transition(
            approved.id,
            RequestState.APPROVED,
            RequestState.EXECUTING,
            actor=SYSTEM_ACTOR,
            now=now,
            lease_owner=self.settings.replica_id,
            lease_until=now + timedelta(seconds=self.settings.lease_seconds),
        )
        if executing is None:
            return None
        self._note(executing, "executing", user_id=SYSTEM_ACTOR, nodes=len(executing.nodes))
        with self.metrics.requests_executing.track_inprogress():
            await self.notifier.refresh(executing)
            return await self._run(executing, resumed=False)

    async def resume_stale(self) -> int:
        """Finish requests whose executing replica died: take over its lease once it has run out."""
        count = 0
        grace = timedelta(seconds=self.settings.lease_seconds)
        for stale in await self.store.stale_executions(self.clock(), grace=grace):
            now = self.clock()
            until = now + timedelta(seconds=self.settings.lease_seconds)
            if stale.state is RequestState.APPROVED:
                taken = await self.store.transition(
                    stale.id,
                    RequestState.APPROVED,
                    RequestState.EXECUTING,
                    actor=SYSTEM_ACTOR,
                    now=now,
                    lease_owner=self.settings.replica_id,
                    lease_until=until,
                )
                if taken is None:
                    continue
                current = taken
            else:
                if not await self.store.acquire_lease(stale.id, self.settings.replica_id, until, now):
                    continue
                reread = await self.store.get_request(stale.id)
                if reread is None or reread.state is not RequestState.EXECUTING:
                    continue
                current = reread
            # The takeover belongs in the trail: which replica finished the request, and from which state.
            await self.store.audit(
                "resumed",
                request_id=current.id,
                actor=SYSTEM_ACTOR,
                now=now,
                detail={"from": stale.state.value, "lease_owner": self.settings.replica_id},
            )
            self._note(current, "resumed", user_id=SYSTEM_ACTOR, level=logging.WARNING)
            # Only an `executing` request may have an unlock call of the stopped replica still on its way.
            with self.metrics.requests_executing.track_inprogress():
                await self._run(current, resumed=True, in_flight=stale.state is RequestState.EXECUTING)
            count += 1
        return count

    async def _run(self, request: UnlockRequest, *, resumed: bool, in_flight: bool = False) -> UnlockRequest | None:
        """Finish a request we hold the lease on; None if someone else finished it or took it over."""
        try:
            async with self._heartbeat(request.id):
                return await self._finish(request, resumed=resumed, in_flight=in_flight)
        except LeaseLost:
            return None

    async def _finish(self, request: UnlockRequest, *, resumed: bool, in_flight: bool) -> UnlockRequest | None:
        todo = await self.store.nodes_without_result(request.id)
        problems: list[str] = []
        if todo and in_flight and self.settings.in_flight_seconds > 0:
            log.info(
                "waiting for calls of the stopped replica to land before reading lock state",
                extra={
                    "event": "resume_wait",
                    "request_id": request.id,
                    "seconds": self.settings.in_flight_seconds,
                },
            )
            await asyncio.sleep(self.settings.in_flight_seconds)
        if todo:
            outcome = await self._unlock(request, todo, resumed=resumed)
            problems = [str(error) for error in outcome.errors]
            # Chunks were recorded as they landed; record only what changed since (e.g. unknown, then re-read),
            # so the audit trail has one `node_result` per node and outcome, not one per write.
            recorded = {r.node: r for r in await self.store.results(request.id)}
            fresh = [r for r in outcome.results if recorded.get(r.node) != r]
            await self.store.record_results(request.id, fresh, actor=SYSTEM_ACTOR, now=self.clock())
            # What is stored now is what was read plus what was just written: no need to read it back.
            recorded.update((r.node, r) for r in fresh)
            results = [recorded[node] for node in request.nodes if node in recorded]
        else:
            results = await self.store.results(request.id)
        changed = await self._preview_drift(request, results)
        if changed:
            await self.notifier.thread_note(request, changed)
        final_state = final_state_for(results, expected=len(request.nodes))
        detail = problems[0] if problems and final_state is RequestState.FAILED else None
        # Results go to the thread before the final state is stored: a replica dying in between leaves
        # the request `executing`, and whoever resumes it posts them again (twice beats never).
        try:
            await self.notifier.post_results(
                request.with_state(final_state, detail=detail), results, problems=problems, resumed=resumed
            )
        except Exception:
            log.exception("could not post results", extra={"event": "post_results_failed", "request_id": request.id})
        finished = await self.store.transition(
            request.id,
            RequestState.EXECUTING,
            final_state,
            actor=SYSTEM_ACTOR,
            now=self.clock(),
            detail=detail,
        )
        if finished is None:
            return None
        self.metrics.results(results)
        self._note(
            finished,
            final_state.value,
            user_id=SYSTEM_ACTOR,
            modelarts_request_ids=sorted({r.request_id for r in results if r.request_id}),
            **{status.value: sum(1 for r in results if r.status is status) for status in NodeStatus},
        )
        await self.notifier.refresh(finished, results)
        await self.store.release_lease(request.id, self.settings.replica_id)
        return finished

    async def _unlock(self, request: UnlockRequest, nodes: Sequence[str], *, resumed: bool) -> BatchOutcome:
        """Call batch-unlock, record each chunk as it lands, and settle any unknown outcome by re-reading."""

        async def record_chunk(chunk: Sequence[NodeResult]) -> None:
            settled = [result for result in chunk if result.status is not NodeStatus.UNKNOWN]
            if settled:
                await self.store.record_results(request.id, settled, actor=SYSTEM_ACTOR, now=self.clock())

        if resumed:
            # The dead replica may have unlocked some of these already: read before sending again.
            first = await self.client.resolve_unknown(request.pool, unknown_outcome(nodes))
            remaining = [r.node for r in first.results if r.status is not NodeStatus.SUCCESS]
            settled = [r for r in first.results if r.status is NodeStatus.SUCCESS]
            if settled:
                await self.store.record_results(request.id, settled, actor=SYSTEM_ACTOR, now=self.clock())
            if not remaining:
                return first
            nodes = remaining
        outcome = await self.client.batch_unlock(request.pool, nodes, on_chunk=record_chunk)
        if outcome.unknown:
            outcome = await self.client.resolve_unknown(request.pool, outcome)
        return outcome

    async def _preview_drift(self, request: UnlockRequest, results: Sequence[NodeResult]) -> str | None:
        """Say so when a node's state changed between the preview and the unlock.

        Two changes are worth a person's attention: a node the preview did not find that unlocked anyway
        (it appeared since), and one the preview found that failed because it has left the pool. Only the
        second needs a read, and only when something failed, so the happy path costs no extra call.
        """
        preview = await self.store.preview(request.id)
        if not preview:
            return None
        appeared = [
            r.node for r in results if preview.get(r.node) == NodeState.MISSING and r.status is NodeStatus.SUCCESS
        ]
        suspects = {
            r.node
            for r in results
            if preview.get(r.node) in (NodeState.LOCKED, NodeState.UNLOCKED) and r.status is not NodeStatus.SUCCESS
        }
        gone: list[str] = []
        if suspects:
            try:
                async with asyncio.timeout(self.settings.preview_timeout_seconds):
                    present = {node.name for node in await self.client.list_nodes(request.pool)}
                gone = sorted(suspects - present)
            except (ModelArtsError, TimeoutError):
                gone = []
        lines = []
        if appeared:
            lines.append(
                f"{plural(len(appeared), 'node')} not in the pool at preview time unlocked anyway: {names(appeared)}"
            )
        if gone:
            verb = "has" if len(gone) == 1 else "have"
            lines.append(f"{plural(len(gone), 'node')} in the pool at preview time {verb} left it since: {names(gone)}")
        if not lines:
            return None
        return ":twisted_rightwards_arrows: Changed since the preview — " + "; ".join(lines) + "."

    @contextlib.asynccontextmanager
    async def _heartbeat(self, request_id: str) -> AsyncIterator[None]:
        """Renew our execution lease while we work, so no other replica takes the request over.

        If the lease is lost anyway (a stall longer than the lease, and another replica took over), the work
        is cancelled at its next await and `LeaseLost` raised: the new owner finishes it, we must not go on
        sending unlock calls beside it.
        """
        worker = asyncio.current_task()
        lost = False

        async def beat() -> None:
            nonlocal lost
            interval = self.settings.lease_seconds / 3
            while True:
                await asyncio.sleep(interval)
                until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
                if not await self.store.renew_lease(request_id, self.settings.replica_id, until):
                    lost = True
                    log.error(
                        "lost the execution lease: stopping, another replica finishes the request",
                        extra={"event": "lease_lost", "request_id": request_id},
                    )
                    if worker is not None:
                        worker.cancel()
                    return

        task = asyncio.create_task(beat(), name=f"lease:{request_id}")
        try:
            yield
        except asyncio.CancelledError:
            if lost and worker is not None:
                worker.uncancel()
                raise LeaseLost(request_id) from None
            raise
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- retrying failed nodes -------------------------------------------------------------------------

    async def retry_failed(self, request_id: str, *, team_id: str, user_id: str) -> Reply:
        """Open a new request, approved like any other, for the nodes that did not unlock."""
        request = await self.store.get_request(request_id)
        if request is None:
            return Reply(f":warning: I know no request `{request_id}`.", ok=False)
        if request.state not in (RequestState.PARTIALLY_FAILED, RequestState.FAILED):
            return Reply(f"Request `{request_id}` has no failed nodes to retry.", ok=False)
        results = await self.store.results(request_id)
        failed = tuple(r.node for r in results if r.status is not NodeStatus.SUCCESS)
        done = {r.node for r in results}
        failed += tuple(n for n in request.nodes if n not in done)
        if not failed:
            return Reply(f"Request `{request_id}` has no failed nodes to retry.", ok=False)
        command = ParsedCommand(
            pool=request.pool,
            nodes=failed,
            duplicates_dropped=0,
            reason=f"retry of {request.id}" + (f": {request.reason}" if request.reason else ""),
            dry_run=False,
        )
        return await self.submit(
            command, team_id=team_id, channel_id=request.channel_id, user_id=user_id, retry_of=request.id
        )


def unknown_outcome(nodes: Sequence[str]) -> BatchOutcome:
    """An outcome that says nothing yet, for `resolve_unknown` to settle by reading lock state."""
    return BatchOutcome(
        results=tuple(NodeResult(node=n, status=NodeStatus.UNKNOWN) for n in nodes),
        errors=(),
        request_ids=(),
        attempts=0,
    )


def final_state_for(results: Sequence[NodeResult], *, expected: int) -> RequestState:
    """`succeeded` only when every requested node succeeded; `failed` when none did."""
    succeeded = sum(1 for r in results if r.status is NodeStatus.SUCCESS)
    if succeeded == expected and len(results) == expected:
        return RequestState.SUCCEEDED
    if succeeded == 0:
        return RequestState.FAILED
    return RequestState.PARTIALLY_FAILED


def already_decided_text(request: UnlockRequest) -> str:
    who = f" by <@{request.decided_by}>" if request.decided_by and request.decided_by != SYSTEM_ACTOR else ""
    return f"Request `{request.id}` is already {request.state.value.replace('_', ' ')}{who}; nothing changed."


def dry_run_text(command: ParsedCommand, preview: Preview | None) -> str:
    lines = [f"*Dry run* — nothing was requested. `{command.pool}`, {plural(len(command.nodes), 'node')}:"]
    if preview is None or not preview.available:
        reason = preview.error if preview is not None else "not read"
        lines.append(f"Could not read the nodes' lock state ({reason}).")
        return "\n".join(lines)
    for label, state in (
        ("will be unlocked", NodeState.LOCKED),
        ("already unlocked (no-op)", NodeState.UNLOCKED),
        ("not in the pool (will fail)", NodeState.MISSING),
    ):
        nodes = preview.nodes_in(state)
        if nodes:
            lines.append(f"• {len(nodes)} {label}: {names(nodes, 20)}")
    return "\n".join(lines)


def names(nodes: Sequence[str], shown: int = 10) -> str:
    """`a`, `b` and 3 more."""
    listed = ", ".join(f"`{n}`" for n in nodes[:shown])
    return listed + (f" and {len(nodes) - shown} more" if len(nodes) > shown else "")


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


async def run_periodically(
    name: str, interval: float, job: Callable[[], Awaitable[object]], *, stop: asyncio.Event
) -> None:
    """Run `job` every `interval` seconds until `stop` is set, logging (not dying on) its errors."""
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("periodic job failed", extra={"event": "periodic_job_failed", "job": name})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
