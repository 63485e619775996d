"""The async ModelArts client: the calls unlock-bot uses, with chunking, bounded retries and honest outcomes.

The rules that matter (CONTRACTS.md, modelarts-api.md):
- a batch call never raises for a chunk's failure; every requested node gets exactly one `NodeResult`;
- a batch request that may have reached ModelArts is never re-sent blindly: its nodes become `unknown`
  and `resolve_unknown` re-reads their lock state instead of guessing;
- 401/403/404 stop the whole batch (an AK is locked after 5 bad signatures in a row), so the first chunk
  is sent alone and the others only follow once it has had an answer — unless the latest answered call
  proved the credentials and a first wave (at most `concurrency` calls) cannot reach 5 bad signatures;
- retries (429, 5xx, connection failures) use exponential backoff with full jitter, honour `Retry-After`,
  and are bounded by attempts per chunk and one overall deadline per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import ValidationError

import bot
from bot.modelarts.errors import (
    AuthenticationFailed,
    BadResponse,
    ConnectionFailed,
    ModelArtsError,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    ServerError,
    ServiceUnavailable,
    Throttled,
    error_from_response,
)
from bot.modelarts.models import BatchNodeStatus, Node, NodeList, Pool, PoolList, is_locked
from bot.requests import NodeResult, NodeStatus

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.metrics import Metrics

log = logging.getLogger(__name__)

USER_AGENT = f"unlock-bot/{bot.__version__}"
NODE_PAGE_LIMIT = 500  # the API's maximum page size
GATEWAY_LOCKOUT_AFTER = 5  # bad signatures in a row before the gateway locks an AK (modelarts-api.md)
# Above this many unknown nodes, one paginated listing is cheaper than one GET per node.
RESOLVE_BY_LISTING_THRESHOLD = 50

Sleep = Callable[[float], Awaitable[None]]
Action = Literal["unlock", "lock"]
ChunkCallback = Callable[[Sequence[NodeResult]], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per chunk (or read call), one overall deadline, backoff with full jitter."""

    max_attempts: int = 5
    deadline_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: bool = True  # full jitter: uniform in [0, capped exponential delay]

    def backoff(self, attempt: int, rand: Callable[[], float]) -> float:
        """Delay before attempt `attempt + 1`, given that `attempt` (1-based) attempts have failed."""
        capped = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return capped * rand() if self.jitter else capped


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class BatchOutcome:
    """The result of a batch lock/unlock: one `NodeResult` per requested node, in request order."""

    results: tuple[NodeResult, ...]
    errors: tuple[ModelArtsError, ...] = ()
    request_ids: tuple[str, ...] = ()
    attempts: int = 0

    def _names(self, status: NodeStatus) -> list[str]:
        return [r.node for r in self.results if r.status is status]

    @property
    def succeeded(self) -> list[str]:
        return self._names(NodeStatus.SUCCESS)

    @property
    def failed(self) -> list[str]:
        return self._names(NodeStatus.FAILED)

    @property
    def unknown(self) -> list[str]:
        return self._names(NodeStatus.UNKNOWN)

    @property
    def first_error(self) -> ModelArtsError | None:
        return self.errors[0] if self.errors else None


@dataclass
class _CallLog:
    """What one logical call (a chunk, or a read) did across its attempts."""

    attempts: int = 0
    request_ids: list[str] = field(default_factory=list)
    maybe_applied: bool = False  # some attempt may have changed state without telling us


@dataclass
class _ChunkOutcome:
    results: list[NodeResult]
    error: ModelArtsError | None
    log: _CallLog


class _BatchState:
    """Shared by a batch call's chunks: the deadline and the error that stops everything not yet sent."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.abort: ModelArtsError | None = None
        self.first_answered = asyncio.Event()


class _Stopped(Exception):
    """Internal: a chunk did not (re)send because another chunk hit a stop error."""

    def __init__(self, error: ModelArtsError) -> None:
        self.error = error
        super().__init__(str(error))


_STOP_ERRORS = (AuthenticationFailed, PermissionDenied, NotFound)


def _retryable(error: ModelArtsError) -> bool:
    return isinstance(error, Throttled | ServerError | ConnectionFailed | OutcomeUnknown)


def _route(method: str, path: str) -> str:
    """The API call a path names, for metrics: `list_pools`, `list_nodes`, `get_node`, `batch_unlock`…

    Segments are percent-encoded (`_seg`), so a pool or node name can never add one.
    """
    parts = path.strip("/").split("/")  # v2, project, pools[, pool, nodes[, node | batch-…]]
    if len(parts) <= 3:
        return "list_pools"
    if len(parts) == 5:
        return "list_nodes"
    if method == "POST":
        return "batch_" + parts[-1].removeprefix("batch-")
    return "get_node"


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded (names are IDs, but never let one change the path)."""
    return quote(value, safe="")


def _dedupe(nodes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(nodes))


class ModelArtsClient:
    """Async client for ModelArts pool nodes; use as `async with ModelArtsClient(...) as client:`."""

    def __init__(
        self,
        endpoint: str,
        project_id: str,
        auth: httpx.Auth,
        *,
        chunk_size: int = 100,
        concurrency: int = 4,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        if chunk_size < 1 or concurrency < 1 or retry.max_attempts < 1:
            raise ValueError("chunk_size, concurrency and retry.max_attempts must be at least 1")
        self.endpoint = endpoint.rstrip("/")
        self.project_id = project_id
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.retry = retry
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._metrics = metrics
        # Whether the latest answered call proved the credentials (2xx) rather than failed them (401).
        self._credentials_proven = False
        self._http = httpx.AsyncClient(
            base_url=self.endpoint,
            auth=auth,
            timeout=timeout,
            transport=transport,
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ModelArtsClient:
        """A client from the environment's settings: AK/SK signing when an AK is set, else the IAM token."""
        from bot.modelarts.auth import AkSkAuth, TokenAuth

        endpoint = settings.resolved_modelarts_endpoint
        project_id = settings.huaweicloud_sdk_project_id
        if not endpoint:
            raise ValueError("neither MODELARTS_REGION nor MODELARTS_ENDPOINT is set")
        if not project_id:
            raise ValueError("HUAWEICLOUD_SDK_PROJECT_ID is not set")
        auth: httpx.Auth
        if settings.huaweicloud_sdk_ak is not None and settings.huaweicloud_sdk_sk is not None:
            token = settings.huaweicloud_sdk_security_token
            auth = AkSkAuth(
                settings.huaweicloud_sdk_ak.get_secret_value(),
                settings.huaweicloud_sdk_sk.get_secret_value(),
                project_id,
                security_token=token.get_secret_value() if token is not None else None,
            )
        elif settings.modelarts_auth_token is not None:
            auth = TokenAuth(settings.modelarts_auth_token.get_secret_value(), project_id)
        else:
            raise ValueError("ModelArts credentials are not set (HUAWEICLOUD_SDK_AK/SK or MODELARTS_AUTH_TOKEN)")
        retry = RetryPolicy(
            max_attempts=settings.unlock_bot_max_attempts,
            deadline_seconds=settings.unlock_bot_retry_deadline_seconds,
        )
        options: dict[str, Any] = {
            "chunk_size": settings.unlock_bot_chunk_size,
            "concurrency": settings.unlock_bot_concurrency,
            "retry": retry,
            "timeout": settings.unlock_bot_http_timeout_seconds,
        }
        options.update(kwargs)
        return cls(endpoint, project_id, auth, **options)

    def __repr__(self) -> str:
        return f"ModelArtsClient(endpoint={self.endpoint!r}, project_id={self.project_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- paths --------------------------------------------------------------------------------------------

    def _pools_path(self) -> str:
        return f"/v2/{_seg(self.project_id)}/pools"

    def _nodes_path(self, pool: str) -> str:
        return f"{self._pools_path()}/{_seg(pool)}/nodes"

    # -- one HTTP attempt, and the retry loop ------------------------------------------------------------

    async def _attempt(
        self, method: str, path: str, params: dict[str, str] | None, body: bytes | None
    ) -> httpx.Response:
        """Send once; transport failures become `ConnectionFailed` (nothing sent) or `OutcomeUnknown`."""
        started = time.perf_counter()
        try:
            response = await self._http.request(method, path, params=params, content=body)
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            self._observe(method, path, "connect_error", started)
            raise ConnectionFailed(f"could not connect to ModelArts ({type(exc).__name__}: {exc})") from exc
        except httpx.TransportError as exc:  # read/write timeouts and errors, dropped connections
            self._observe(method, path, "no_response", started)
            raise OutcomeUnknown(
                f"no answer from ModelArts, the outcome is unknown ({type(exc).__name__}: {exc})"
            ) from exc
        self._observe(method, path, str(response.status_code), started)
        if response.status_code == 401:
            self._credentials_proven = False
        elif response.is_success:
            self._credentials_proven = True
        return response

    def _observe(self, method: str, path: str, status_code: str, started: float) -> None:
        if self._metrics is not None:
            self._metrics.modelarts_call(_route(method, path), status_code, time.perf_counter() - started)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        calllog: _CallLog,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        mutating: bool = False,
        state: _BatchState | None = None,
        after_first_attempt: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """Send with bounded retries; return the 2xx response or raise the last `ModelArtsError`.

        A mutating request is never re-sent after it may have been received (timeout, dropped connection).
        """
        attempt = 0
        while True:
            if state is not None and state.abort is not None:
                raise _Stopped(state.abort)
            attempt += 1
            calllog.attempts += 1
            try:
                response = await self._attempt(method, path, params, body)
            except ConnectionFailed as exc:
                error: ModelArtsError = exc
            except OutcomeUnknown as exc:
                if mutating:
                    calllog.maybe_applied = True
                    raise
                error = exc
            else:
                request_id = response.headers.get("x-request-id")
                if request_id:
                    calllog.request_ids.append(request_id)
                if response.is_success:
                    return response
                error = error_from_response(response.status_code, response.content, response.headers)
                if mutating and isinstance(error, ServerError) and not isinstance(error, ServiceUnavailable):
                    calllog.maybe_applied = True  # 500/502/504 may come after the change was applied
            finally:
                if attempt == 1 and after_first_attempt is not None:
                    after_first_attempt()
            log.info(
                "modelarts %s %s attempt %d failed: %s",
                method,
                path,
                attempt,
                error,
                extra={"attempt": attempt},
            )
            if not _retryable(error) or attempt >= self.retry.max_attempts:
                raise error
            hinted = getattr(error, "retry_after", None)
            delay = float(hinted) if hinted is not None else self.retry.backoff(attempt, self._rand)
            if self._clock() + delay > deadline:
                raise error  # waiting would overrun the deadline: give up now with the real error
            if self._metrics is not None:
                self._metrics.modelarts_retry(_route(method, path))
            await self._sleep(delay)

    async def _read(self, path: str, params: dict[str, str] | None = None, calllog: _CallLog | None = None) -> Any:
        """A GET with retries (timeouts included: reads are safe to repeat); the decoded JSON body."""
        deadline = self._clock() + self.retry.deadline_seconds
        calllog = calllog if calllog is not None else _CallLog()
        response = await self._request("GET", path, deadline=deadline, calllog=calllog, params=params)
        try:
            return response.json()
        except ValueError:
            raise BadResponse(
                "ModelArts sent a response that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from None

    @staticmethod
    def _bad_shape(what: str, exc: ValidationError) -> BadResponse:
        problems = exc.errors()
        if not problems:
            return BadResponse(f"ModelArts sent an unexpected {what}")
        where = ".".join(str(p) for p in problems[0]["loc"]) or "body"
        return BadResponse(f"ModelArts sent an unexpected {what} ({where}: {problems[0]['msg']})")

    # -- reads --------------------------------------------------------------------------------------------

    async def list_pools(self) -> list[Pool]:
        """All pools in the project (the API does not paginate this)."""
        data = await self._read(self._pools_path())
        try:
            return PoolList.model_validate(data).items
        except ValidationError as exc:
            raise self._bad_shape("pool list", exc) from None

    async def list_nodes(self, pool: str) -> list[Node]:
        """All nodes of `pool`, following `continue` tokens page by page."""
        return await self._list_nodes(pool, _CallLog())

    async def _list_nodes(self, pool: str, calllog: _CallLog) -> list[Node]:
        nodes: list[Node] = []
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"limit": str(NODE_PAGE_LIMIT)}
            if token:
                params["continue"] = token
            data = await self._read(self._nodes_path(pool), params, calllog)
            try:
                page = NodeList.model_validate(data)
            except ValidationError as exc:
                raise self._bad_shape("node list", exc) from None
            nodes.extend(page.items)
            token = page.continue_token
            if not token:
                return nodes
            if token in seen_tokens:
                raise BadResponse("ModelArts repeated a pagination token while listing nodes")
            seen_tokens.add(token)

    async def get_node(self, pool: str, node: str) -> Node:
        """One node of `pool`; raises `NotFound` when it does not exist, `PoolNotFound` for the pool."""
        return await self._get_node(pool, node, _CallLog())

    async def _get_node(self, pool: str, node: str, calllog: _CallLog) -> Node:
        data = await self._read(f"{self._nodes_path(pool)}/{_seg(node)}", None, calllog)
        try:
            return Node.model_validate(data)
        except ValidationError as exc:
            raise self._bad_shape("node", exc) from None

    # -- batch lock / unlock ------------------------------------------------------------------------------

    async def batch_unlock(
        self, pool: str, nodes: Sequence[str], *, on_chunk: ChunkCallback | None = None
    ) -> BatchOutcome:
        """Unlock `nodes` of `pool`; never raises for ModelArts failures (see `BatchOutcome`).

        `on_chunk` is awaited with each chunk's results as soon as that chunk is settled, so a caller can
        record progress durably before the whole batch is done.
        """
        return await self._batch("unlock", pool, nodes, on_chunk)

    async def batch_lock(
        self, pool: str, nodes: Sequence[str], *, on_chunk: ChunkCallback | None = None
    ) -> BatchOutcome:
        """Lock `nodes` of `pool` (the demo and tests re-lock what they unlocked); same rules as unlock."""
        return await self._batch("lock", pool, nodes, on_chunk)

    async def _batch(
        self, action: Action, pool: str, nodes: Sequence[str], on_chunk: ChunkCallback | None = None
    ) -> BatchOutcome:
        names = _dedupe(nodes)
        if not names:
            return BatchOutcome(results=())
        chunks = [names[i : i + self.chunk_size] for i in range(0, len(names), self.chunk_size)]
        state = _BatchState(self._clock() + self.retry.deadline_seconds)
        semaphore = asyncio.Semaphore(self.concurrency)
        # Learn whether the credentials work before fanning out, unless the latest call just proved them: the
        # gateway counts bad signatures in a row, so a first wave below its lockout cannot lock the AK. Skipping
        # the lone first chunk saves a round trip per batch (1/5 of a 2,000-node unlock; BENCHMARKS.md).
        probe_first = not (self._credentials_proven and self.concurrency < GATEWAY_LOCKOUT_AFTER)

        async def run(index: int, chunk: list[str]) -> _ChunkOutcome:
            if index > 0 and probe_first:
                await state.first_answered.wait()
            async with semaphore:
                outcome = await self._run_chunk(action, pool, chunk, state, first=index == 0)
            if on_chunk is not None:
                await on_chunk(outcome.results)
            return outcome

        outcomes = await asyncio.gather(*(run(i, chunk) for i, chunk in enumerate(chunks)))
        by_node = {r.node: r for outcome in outcomes for r in outcome.results}
        request_ids = _dedupe(rid for outcome in outcomes for rid in outcome.log.request_ids)
        errors = [o.error for o in outcomes if o.error is not None]
        result = BatchOutcome(
            results=tuple(by_node[name] for name in names),
            errors=tuple(errors),
            request_ids=tuple(request_ids),
            attempts=sum(o.log.attempts for o in outcomes),
        )
        log.info(
            "modelarts batch-%s pool=%s nodes=%d succeeded=%d failed=%d unknown=%d attempts=%d",
            action,
            pool,
            len(names),
            len(result.succeeded),
            len(result.failed),
            len(result.unknown),
            result.attempts,
            extra={"event": f"modelarts_batch_{action}", "modelarts_request_ids": list(result.request_ids)},
        )
        return result

    async def _run_chunk(
        self, action: Action, pool: str, chunk: list[str], state: _BatchState, *, first: bool
    ) -> _ChunkOutcome:
        calllog = _CallLog()
        # The bytes sent are the bytes signed: serialise once, deterministically.
        body = json.dumps({"nodeNames": chunk, "actions": ["delete"]}, separators=(",", ":")).encode()
        try:
            response = await self._request(
                "POST",
                f"{self._nodes_path(pool)}/batch-{action}",
                deadline=state.deadline,
                calllog=calllog,
                body=body,
                mutating=True,
                state=state,
                after_first_attempt=state.first_answered.set if first else None,
            )
        except _Stopped as stopped:
            # Not (re)sent because another chunk hit 401/403/404: same error, never recorded twice.
            return _ChunkOutcome(self._chunk_failed(chunk, stopped.error, calllog), None, calllog)
        except ModelArtsError as error:
            if isinstance(error, _STOP_ERRORS) and state.abort is None:
                state.abort = error
            return _ChunkOutcome(self._chunk_failed(chunk, error, calllog), error, calllog)
        finally:
            if first:
                state.first_answered.set()
        return self._chunk_succeeded(chunk, response, calllog)

    @staticmethod
    def _chunk_failed(chunk: list[str], error: ModelArtsError, calllog: _CallLog) -> list[NodeResult]:
        """Every node of a chunk that failed as a whole: `unknown` when a change may have happened."""
        uncertain = calllog.maybe_applied or isinstance(error, OutcomeUnknown)
        status = NodeStatus.UNKNOWN if uncertain else NodeStatus.FAILED
        reason = str(error)
        if uncertain and not isinstance(error, OutcomeUnknown):
            reason += "; an earlier attempt may have been applied, so the outcome is unknown"
        request_id = error.request_id or (calllog.request_ids[-1] if calllog.request_ids else None)
        return [NodeResult(node=n, status=status, reason=reason, request_id=request_id) for n in chunk]

    def _chunk_succeeded(self, chunk: list[str], response: httpx.Response, calllog: _CallLog) -> _ChunkOutcome:
        """Per-node results from a 2xx; anything off about the body is a `BadResponse`, never a success."""
        request_id = response.headers.get("x-request-id")
        entries, problem = _parse_batch_body(response.content)
        if entries is None:
            bad = BadResponse(problem, status=response.status_code, request_id=request_id)
            results = [
                NodeResult(node=n, status=NodeStatus.UNKNOWN, reason=str(bad), request_id=request_id) for n in chunk
            ]
            return _ChunkOutcome(results, bad, calllog)

        wanted = set(chunk)
        reported: dict[str, list[BatchNodeStatus]] = {}
        for entry in entries:
            reported.setdefault(entry.name, []).append(entry)
        extra = sorted(set(reported) - wanted)
        omitted = [n for n in chunk if n not in reported]
        results = [self._node_result(name, reported.get(name, []), request_id) for name in chunk]

        problems = []
        if extra:
            problems.append(f"named {len(extra)} node(s) not in the request ({_sample(extra)})")
        if omitted:
            problems.append(f"omitted {len(omitted)} requested node(s) ({_sample(omitted)})")
        error: BadResponse | None = None
        if problems:
            error = BadResponse(
                "ModelArts' batch response " + " and ".join(problems),
                status=response.status_code,
                request_id=request_id,
            )
            log.warning("%s", error)
        return _ChunkOutcome(results, error, calllog)

    @staticmethod
    def _node_result(name: str, entries: list[BatchNodeStatus], request_id: str | None) -> NodeResult:
        if not entries:
            return NodeResult(name, NodeStatus.UNKNOWN, "ModelArts' answer did not mention this node", request_id)
        statuses = {e.status for e in entries}
        if len(statuses) > 1:
            shown = ", ".join(sorted(map(str, statuses)))
            reason = f"ModelArts reported conflicting statuses for this node ({shown})"
            return NodeResult(name, NodeStatus.UNKNOWN, reason, request_id)
        entry = entries[0]
        if entry.status == "success":
            return NodeResult(name, NodeStatus.SUCCESS, None, request_id)
        if entry.status == "failed":
            detail = _entry_detail(entry)
            reason = "ModelArts reported this node failed" + (f": {detail}" if detail else "")
            return NodeResult(name, NodeStatus.FAILED, reason, request_id)
        shown = "no status" if entry.status is None else f"status {entry.status!r}"
        return NodeResult(name, NodeStatus.UNKNOWN, f"ModelArts reported {shown} for this node", request_id)

    # -- unknown outcomes ---------------------------------------------------------------------------------

    async def resolve_unknown(self, pool: str, outcome: BatchOutcome, *, expect_locked: bool = False) -> BatchOutcome:
        """Settle `unknown` nodes by re-reading their lock state.

        Matches the expectation → success; does not, or the node does not exist → failed; the read itself
        fails → stays unknown. Other results are kept as they are.
        """
        pending = outcome.unknown
        if not pending:
            return outcome
        settled: dict[str, NodeResult] = {}
        errors: list[ModelArtsError] = []
        reads = _CallLog()
        wanted = "locked" if expect_locked else "unlocked"
        previous = {r.node: r for r in outcome.results}

        def judge(name: str, node: Node | None) -> NodeResult:
            request_id = previous[name].request_id
            if node is None:
                return NodeResult(name, NodeStatus.FAILED, "node not found when re-reading its lock state", request_id)
            if is_locked(node) == expect_locked:
                return NodeResult(name, NodeStatus.SUCCESS, f"confirmed {wanted} by re-reading it", request_id)
            state = "locked" if is_locked(node) else "unlocked"
            return NodeResult(
                name, NodeStatus.FAILED, f"still {state} when re-read after an unknown outcome", request_id
            )

        def unresolved(name: str, error: ModelArtsError) -> NodeResult:
            reason = f"{previous[name].reason or 'outcome unknown'}; re-reading the lock state failed: {error}"
            return NodeResult(name, NodeStatus.UNKNOWN, reason, previous[name].request_id)

        if len(pending) > RESOLVE_BY_LISTING_THRESHOLD:
            try:
                listed = {n.name: n for n in await self._list_nodes(pool, reads)}
            except NotFound:
                listed = {}
            except ModelArtsError as error:
                errors.append(error)
                settled = {name: unresolved(name, error) for name in pending}
            else:
                settled = {name: judge(name, listed.get(name)) for name in pending}
        else:
            semaphore = asyncio.Semaphore(self.concurrency)

            async def settle(name: str) -> NodeResult:
                async with semaphore:
                    try:
                        return judge(name, await self._get_node(pool, name, reads))
                    except NotFound:  # the node, or its whole pool, is gone
                        return judge(name, None)
                    except ModelArtsError as error:
                        errors.append(error)
                        return unresolved(name, error)

            settled = {r.node: r for r in await asyncio.gather(*(settle(n) for n in pending))}

        return replace(
            outcome,
            results=tuple(settled.get(r.node, r) for r in outcome.results),
            errors=outcome.errors + tuple(errors),
            request_ids=tuple(_dedupe([*outcome.request_ids, *reads.request_ids])),
            attempts=outcome.attempts + reads.attempts,
        )


def _parse_batch_body(content: bytes) -> tuple[list[BatchNodeStatus] | None, str]:
    """The entries of a batch response, or (None, what is wrong with it)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, "ModelArts sent a batch response that is not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return None, 'ModelArts sent a batch response without a "nodes" list'
    entries: list[BatchNodeStatus] = []
    for item in data["nodes"]:
        # The published reference also shows bare names ("names of nodes successfully updated"): no status.
        raw = {"name": item, "status": None} if isinstance(item, str) else item
        try:
            entries.append(BatchNodeStatus.model_validate(raw))
        except ValidationError:
            return None, f"ModelArts sent a batch response with a malformed node entry: {str(item)[:100]}"
    return entries, ""


def _entry_detail(entry: BatchNodeStatus) -> str | None:
    extra = entry.model_extra or {}
    for key in ("message", "error_msg", "errorMsg", "reason", "error_code", "errorCode"):
        value = extra.get(key)
        if value:
            return str(value)[:200]
    return None


def _sample(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … {len(names) - limit} more" if len(names) > limit else "")
