"""A local ModelArts: the five pool-node calls the bot makes, behind a faithful imitation of the API gateway.

The demo, staging and the benchmarks point the bot here, so it reproduces what the real service does as far as
modelarts-api.md knows it: paths, payloads, error bodies and codes, `X-Request-Id`, AK/SK signature checks
(with the very verifier the signer is tested against), pagination, partial failures. On top, it misbehaves on
purpose (latency, 5xx, 429, dropped connections, nodes that never unlock) to exercise the bot's recovery.

Choices where the real behaviour is not documented (kept here so they can be corrected in one place):
- a project ID in the path that is not the simulator's, or an `X-Project-Id` header that differs from the
  path, is refused after authentication: 403 `APIGW.0302` (the credentials are not authorised for it);
- a node that does not exist → 404 `ModelArts.50015002` "node not found";
- 5xx bodies use `ModelArts.5000500x` codes;
- a dropped connection closes the socket without sending a byte (uvicorn closes the transport when the ASGI
  callable returns a value instead of None), so clients see "server disconnected without a response".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from bot.modelarts.auth import HEADER_AUTH_TOKEN, HEADER_PROJECT_ID, SignatureInvalid, verify_aksk
from bot.modelarts.models import LOCK_ANNOTATION
from bot.modelarts.sim_state import (
    LOCK_ACTION_VALUE,
    ROUTES,
    Faults,
    SeedError,
    SimCall,
    SimPool,
    SimulatorState,
)

__all__ = [
    "DEFAULT_PORT",
    "LOCK_ACTION_VALUE",
    "LOCK_ANNOTATION",
    "ROUTES",
    "Faults",
    "SimCall",
    "SimulatorApp",
    "SimulatorState",
    "create_app",
    "main",
    "run",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8700
MAX_LIMIT = 500
BAD_REQUEST = "ModelArts.50004000"
POOL_NOT_FOUND = "ModelArts.50015001"
NODE_NOT_FOUND = "ModelArts.50015002"
APIGW_NO_API = "APIGW.0101"
APIGW_BAD_CREDENTIALS = "APIGW.0301"
APIGW_FORBIDDEN = "APIGW.0302"
APIGW_THROTTLED = "APIGW.0308"
_ERROR_FOR_STATUS = {
    400: (BAD_REQUEST, "bad request"),
    401: (APIGW_BAD_CREDENTIALS, "Incorrect IAM authentication information"),
    403: (APIGW_FORBIDDEN, "The IAM user is not authorized to access the API"),
    404: (POOL_NOT_FOUND, "pool not found"),
    429: (APIGW_THROTTLED, "The throttling threshold has been reached"),
    500: ("ModelArts.50005000", "internal server error"),
    502: ("ModelArts.50005002", "bad gateway"),
    503: ("ModelArts.50005003", "service unavailable, please try again later"),
    504: ("ModelArts.50005004", "gateway timeout"),
}
_DROP_SCOPE_KEY = "unlock_bot.simulator.drop"
_DROP_MESSAGE = "unlock-bot simulator: simulated dropped connection (intentional)"
_ACCESS_RE = re.compile(r"Access=([^,\s]+)")
_SELECTOR_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][A-Za-z0-9_.\-/]*)\s*(?:(?P<op>!=|==|=)\s*(?P<value>[A-Za-z0-9_.\-]*))?\s*$"
)
_SEGMENT = r"(?P<{}>[^/]+)"
_API_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (method, name, re.compile(pattern.format(p=_SEGMENT.format("project"), pool=_SEGMENT.format("pool"))))
    for method, name, pattern in (
        ("GET", "list_pools", r"^/v2/{p}/pools/?$"),
        ("GET", "list_nodes", r"^/v2/{p}/pools/{pool}/nodes/?$"),
        ("POST", "batch_unlock", r"^/v2/{p}/pools/{pool}/nodes/batch-unlock/?$"),
        ("POST", "batch_lock", r"^/v2/{p}/pools/{pool}/nodes/batch-lock/?$"),
        ("GET", "get_node", r"^/v2/{p}/pools/{pool}/nodes/(?P<node>[^/]+)/?$"),
    )
)
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class SimulatorApp(Starlette):
    """The Starlette app plus the one thing Starlette cannot do: close a connection without answering."""

    sim_state: SimulatorState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_request_id(message: Message) -> None:
            # Every response carries X-Request-Id, even Starlette's own (405 on an admin path, a crash's 500).
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", _new_request_id().encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_request_id if scope["type"] == "http" else send)
        if scope.get(_DROP_SCOPE_KEY):
            # uvicorn closes the transport, writing nothing, when an app returns a value.
            return _DROP_MESSAGE  # type: ignore[return-value]
        return None


class _Dropped(Response):
    """Sends nothing; marks the scope so SimulatorApp drops the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_DROP_SCOPE_KEY] = True


@dataclass
class _Call:
    """What is known about the call being served, filled in as it goes, recorded once at the end."""

    request: Request
    request_id: str
    route: str | None
    body: bytes
    json_body: Any = None
    kind: str | None = None
    ak: str | None = None


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _error(status: int, code: str, msg: str, request_id: str, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"X-Request-Id": request_id, **(headers or {})}
    return JSONResponse({"error_code": code, "error_msg": msg}, status_code=status, headers=all_headers)


def _ok(payload: Any, request_id: str) -> Response:
    return JSONResponse(payload, headers={"X-Request-Id": request_id})


def _status_error(status: int, request_id: str, retry_after: int) -> Response:
    code, msg = _ERROR_FOR_STATUS.get(status, (f"ModelArts.5000{status}", f"simulated HTTP {status}"))
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
    return _error(status, code, msg, request_id, headers)


def _match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route_method, name, pattern in _API_ROUTES:
        found = pattern.match(path)
        if found and method == route_method:
            return name, found.groupdict()
    return None


def _encode_continue(pool: str, offset: int) -> str:
    raw = json.dumps({"pool": pool, "offset": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str, pool: str) -> int | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or data.get("pool") != pool:
        return None
    offset = data.get("offset")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 else None


def _label_matcher(selector: str) -> Callable[[dict[str, str]], bool] | None:
    """Kubernetes equality-based selectors `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated; None if bad."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in selector.split(","):
        found = _SELECTOR_TERM.match(term)
        if found is None or (found["neg"] and found["op"]):
            return None
        key, op, value = found["key"], found["op"], found["value"] or ""
        checks.append(partial(_label_check, key, op, value, bool(found["neg"])))
    return lambda labels: all(check(labels) for check in checks)


def _label_check(key: str, op: str | None, value: str, negated: bool, labels: dict[str, str]) -> bool:
    if op == "!=":
        return labels.get(key) != value
    if op:
        return labels.get(key) == value
    return (key in labels) != negated


class _Api:
    """The request handlers; one instance per app, sharing its SimulatorState."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        call = _Call(
            request=request,
            request_id=_new_request_id(),
            route=None,
            body=await request.body(),
        )
        try:
            call.json_body = json.loads(call.body) if call.body else None
        except ValueError:
            call.json_body = None
        response = await self._serve(call)
        dropped = isinstance(response, _Dropped)
        self.state.record(
            SimCall(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                json_body=call.json_body,
                status=response.status_code,
                ak_or_token_kind=call.kind,
                at=self.state.clock(),
                request_id=call.request_id,
                route=call.route,
                ak=call.ak,
                dropped=dropped,
            )
        )
        if dropped:
            log.warning("simulator: dropping the connection of %s %s", request.method, request.url.path)
        return response

    async def _serve(self, call: _Call) -> Response:
        request = call.request
        matched = _match(request.method, request.url.path)
        if matched is None:
            return _error(404, APIGW_NO_API, "The API does not exist or has not been published", call.request_id)
        call.route, params = matched
        with self.state.lock:
            latency = self.state.faults.latency_for(call.route)
        if latency:
            await asyncio.sleep(latency)

        refused = self._authenticate(call)
        if refused is not None:
            return refused
        header_project = request.headers.get(HEADER_PROJECT_ID)
        if params["project"] != self.state.project_id or (header_project and header_project != params["project"]):
            return _error(
                403,
                APIGW_FORBIDDEN,
                "The IAM user is not authorized to access the API: project ID mismatch",
                call.request_id,
            )

        fault = self._fault(call.route)
        if isinstance(fault, int):
            with self.state.lock:
                retry_after = self.state.faults.retry_after
            return _status_error(fault, call.request_id, retry_after)
        if fault == "drop":
            with self.state.lock:
                apply_first = self.state.faults.drop_after_apply
            if apply_first and call.route in ("batch_lock", "batch_unlock"):
                self._dispatch(call, params)
            return _Dropped()
        return self._dispatch(call, params)

    def _authenticate(self, call: _Call) -> Response | None:
        headers = call.request.headers
        authorization = headers.get("authorization")
        token = headers.get(HEADER_AUTH_TOKEN)
        if authorization:
            found = _ACCESS_RE.search(authorization)
            claimed_ak = found.group(1) if found else None
            if claimed_ak and self.state.ak_locked(claimed_ak):
                return _error(
                    401,
                    APIGW_BAD_CREDENTIALS,
                    "Incorrect IAM authentication information: access key locked after repeated failures",
                    call.request_id,
                )
            scope = call.request.scope
            raw_path = scope.get("raw_path") or call.request.url.path.encode()
            try:
                with self.state.lock:
                    credentials = dict(self.state.credentials)
                ak = verify_aksk(
                    call.request.method,
                    raw_path.decode("latin-1"),
                    scope.get("query_string", b"").decode("latin-1"),
                    headers,
                    call.body,
                    credentials.get,
                    self.state.clock(),
                )
            except SignatureInvalid as exc:
                if claimed_ak:
                    self.state.note_signature(claimed_ak, ok=False)
                return _error(
                    401,
                    APIGW_BAD_CREDENTIALS,
                    f"Incorrect IAM authentication information: {exc.reason}",
                    call.request_id,
                )
            self.state.note_signature(ak, ok=True)
            call.kind, call.ak = "aksk", ak
            return None
        if token:
            with self.state.lock:
                known = token in self.state.tokens
            if not known:
                return _error(
                    401,
                    APIGW_BAD_CREDENTIALS,
                    "Incorrect IAM authentication information: the token is invalid or expired",
                    call.request_id,
                )
            call.kind = "token"
            return None
        return _error(
            401,
            APIGW_BAD_CREDENTIALS,
            "Incorrect IAM authentication information: no Authorization or X-Auth-Token header",
            call.request_id,
        )

    def _fault(self, route: str) -> int | str | None:
        """The injected fault for this call: an HTTP status, "drop", or None. Consumes queued faults."""
        with self.state.lock:
            faults = self.state.faults
            if not faults.applies_to(route):
                return None
            if faults.fail_next:
                queue = list(faults.fail_next)
                status = queue.pop(0)
                faults.fail_next = queue
                return status
            if faults.drop_next > 0:
                faults.drop_next -= 1
                return "drop"
            rng = self.state.rng
            if faults.throttle_rate and rng.random() < faults.throttle_rate:
                return 429
            if faults.error_rate and faults.error_statuses and rng.random() < faults.error_rate:
                return rng.choice(faults.error_statuses)
            if faults.drop_rate and rng.random() < faults.drop_rate:
                return "drop"
            return None

    def _dispatch(self, call: _Call, params: dict[str, str]) -> Response:
        handler = {
            "list_pools": self._list_pools,
            "list_nodes": self._list_nodes,
            "get_node": self._get_node,
            "batch_lock": self._batch,
            "batch_unlock": self._batch,
        }[call.route or ""]
        with self.state.lock:
            return handler(call, params)

    # --- the five calls (run under the state lock) -----------------------------------------------------
    def _pool(self, call: _Call, params: dict[str, str]) -> SimPool | Response:
        pool = self.state.pools.get(params["pool"])
        if pool is None:
            return _error(404, POOL_NOT_FOUND, "pool not found", call.request_id)
        return pool

    def _list_pools(self, call: _Call, params: dict[str, str]) -> Response:
        query = call.request.query_params
        pools = list(self.state.pools.values())
        if workspace := query.get("workspaceId"):
            pools = [p for p in pools if p.workspace_id == workspace]
        if status := query.get("status"):
            wanted = {s.strip().lower() for s in status.split(",") if s.strip()}
            pools = [p for p in pools if p.phase.lower() in wanted]
        if (selector := query.get("labelSelector")) is not None:
            matcher = _label_matcher(selector)
            if matcher is None:
                return _error(400, BAD_REQUEST, f"invalid labelSelector {selector!r}", call.request_id)
            pools = [p for p in pools if matcher(p.to_api()["metadata"]["labels"])]
        return _ok(
            {"kind": "PoolList", "apiVersion": "v2", "metadata": {}, "items": [p.to_api() for p in pools]},
            call.request_id,
        )

    def _list_nodes(self, call: _Call, params: dict[str, str]) -> Response:
        pool = self._pool(call, params)
        if isinstance(pool, Response):
            return pool
        query = call.request.query_params
        raw_limit = query.get("limit")
        try:
            limit = MAX_LIMIT if raw_limit is None else int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            msg = f"invalid limit {raw_limit!r}: must be an integer from 1 to {MAX_LIMIT}"
            return _error(400, BAD_REQUEST, msg, call.request_id)
        offset = 0
        if token := query.get("continue"):
            decoded = _decode_continue(token, pool.name)
            if decoded is None:
                return _error(400, BAD_REQUEST, "invalid continue token", call.request_id)
            offset = decoded
        nodes = list(pool.nodes.values())
        page = nodes[offset : offset + limit]
        remaining = max(0, len(nodes) - offset - len(page))
        return _ok(
            {
                "kind": "NodeList",
                "apiVersion": "v2",
                "metadata": {
                    "continue": _encode_continue(pool.name, offset + len(page)) if remaining else "",
                    "remainingItemCount": remaining,
                },
                "items": [node.to_api(pool) for node in page],
            },
            call.request_id,
        )

    def _get_node(self, call: _Call, params: dict[str, str]) -> Response:
        pool = self._pool(call, params)
        if isinstance(pool, Response):
            return pool
        node = pool.nodes.get(params["node"])
        if node is None:
            return _error(404, NODE_NOT_FOUND, "node not found", call.request_id)
        return _ok(node.to_api(pool), call.request_id)

    def _batch(self, call: _Call, params: dict[str, str]) -> Response:
        pool = self._pool(call, params)
        if isinstance(pool, Response):
            return pool
        body = call.json_body
        if not isinstance(body, dict):
            return _error(400, BAD_REQUEST, "the request body must be a JSON object", call.request_id)
        names = body.get("nodeNames")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            msg = "nodeNames must be a non-empty list of node names"
            return _error(400, BAD_REQUEST, msg, call.request_id)
        if body.get("actions") != ["delete"]:
            return _error(400, BAD_REQUEST, 'actions must be ["delete"]', call.request_id)
        limit = self.state.faults.max_batch_nodes
        if limit is not None and len(names) > limit:
            msg = f"too many nodes in one call: {len(names)} > {limit}"
            return _error(400, BAD_REQUEST, msg, call.request_id)
        lock = call.route == "batch_lock"
        fail_nodes = self.state.faults.fail_nodes
        results = []
        for name in names:
            node = pool.nodes.get(name)
            if node is None or name in fail_nodes:
                results.append({"name": name, "status": "failed"})
                continue
            node.locked = lock
            results.append({"name": name, "status": "success"})
        return _ok({"nodes": results}, call.request_id)


class _Admin:
    """`/_sim/*`: unsigned control endpoints for tests, the demo and benchmarks (bind to loopback)."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    @staticmethod
    def _json(payload: Any, status: int = 200) -> Response:
        return JSONResponse(payload, status_code=status, headers={"X-Request-Id": _new_request_id()})

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._json({"error": "the body must be JSON"}, 400)
        if not isinstance(body, dict):
            return self._json({"error": "the body must be a JSON object"}, 400)
        return body

    async def calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            return self._json({"cleared": self.state.clear_calls()})
        calls = self.state.calls_snapshot(request.query_params.get("route"))
        return self._json({"count": len(calls), "calls": [c.to_json() for c in calls]})

    async def faults(self, request: Request) -> Response:
        if request.method == "GET":
            return self._json(faults_json(self.state.get_faults()))
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            faults = self.state.set_faults(body) if request.method == "PUT" else self.state.update_faults(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
            )
            return self._json({"error": problems}, 400)
        return self._json(faults_json(faults))

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return self._json({"reset": True})

    async def pools(self, request: Request) -> Response:
        with_nodes = request.query_params.get("nodes", "true").lower() not in ("0", "false", "no")
        return self._json(self.state.summary(with_nodes=with_nodes))

    async def node(self, request: Request) -> Response:
        pool, name = request.path_params["pool"], request.path_params["node"]
        if pool not in self.state.pool_names():
            return self._json({"error": f"no pool {pool!r}"}, 404)
        if request.method == "DELETE":
            return self._json({"removed": self.state.remove_node(pool, name)})
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        locked, phase = body.get("locked"), body.get("phase")
        if (locked is not None and not isinstance(locked, bool)) or (phase is not None and not isinstance(phase, str)):
            return self._json({"error": "locked must be a boolean and phase a string"}, 400)
        try:
            node = self.state.set_node(pool, name, locked=locked, phase=phase)
        except ValueError as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json({"name": node.name, "phase": node.phase, "locked": node.locked})


def faults_json(faults: Faults) -> dict[str, Any]:
    """Faults as JSON with `fail_nodes` sorted, so the admin API answers the same way every time."""
    data = faults.model_dump(mode="json")
    data["fail_nodes"] = sorted(faults.fail_nodes)
    return data


def create_app(state: SimulatorState) -> SimulatorApp:
    """The simulator as an ASGI app serving `state` (shared with the caller, who may inspect or change it)."""
    api = _Api(state)
    admin = _Admin(state)
    app = SimulatorApp(
        routes=[
            Route("/_sim/calls", admin.calls, methods=["GET", "DELETE"]),
            Route("/_sim/faults", admin.faults, methods=["GET", "PUT", "PATCH"]),
            Route("/_sim/reset", admin.reset, methods=["POST"]),
            Route("/_sim/pools", admin.pools, methods=["GET"]),
            Route("/_sim/pools/{pool}/nodes/{node}", admin.node, methods=["PUT", "DELETE"]),
            Route("/{path:path}", api.handle, methods=_ALL_METHODS),
        ]
    )
    app.sim_state = state
    return app


# --- running it alone --------------------------------------------------------------------------------------


def banner(state: SimulatorState, url: str) -> str:
    """The start-up line: where it listens and the simulator-only demo credentials to point the bot at it."""
    aks = ", ".join(f"AK {ak} / SK {sk}" for ak, sk in state.credentials.items()) or "none"
    tokens = ", ".join(sorted(state.tokens)) or "none"
    return (
        f"ModelArts simulator listening on {url} (project ID {state.project_id}); "
        f"simulator-only demo credentials, not valid on Huawei Cloud: {aks}; token {tokens}"
    )


def run(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    seed: str | None = None,
    faults: Faults | Mapping[str, Any] | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Serve the simulator in the foreground until interrupted (`unlock-bot simulator`).

    `faults`: a `Faults` replaces the seed's faults; a mapping changes only the fields it names.
    """
    import uvicorn

    state = SimulatorState.default() if seed is None else SimulatorState.from_file(seed)
    if isinstance(faults, Faults):
        state.set_faults(faults)
    elif faults:
        state.update_faults(**faults)
    sys.stdout.write(banner(state, f"http://{host}:{port}") + "\n")
    sys.stdout.flush()
    uvicorn.run(create_app(state), host=host, port=port, log_level=log_level, access_log=False)


_FLAG_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "latency_seconds": 0.0,
    "error_rate": 0.0,
    "error_statuses": [500, 503],
    "throttle_rate": 0.0,
    "retry_after": 1,
    "drop_rate": 0.0,
    "drop_after_apply": False,
    "fail_nodes": set(),
    "routes": None,
}


def _statuses(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of statuses: {text!r}") from None


def build_parser(prog: str = "unlock-bot simulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the local ModelArts simulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--seed", metavar="FILE", help="YAML/JSON seed file (default: the built-in seed)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay every call")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of calls answered with a 5xx")
    parser.add_argument(
        "--error-statuses",
        type=_statuses,
        default=[500, 503],
        help="comma-separated statuses for --error-rate (default 500,503)",
    )
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="fraction of calls answered with 429")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429/503 (default 1)")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="fraction of calls whose connection drops")
    parser.add_argument(
        "--drop-after-apply",
        action="store_true",
        help="a dropped lock/unlock call is applied before the drop",
    )
    parser.add_argument(
        "--fail-node",
        action="append",
        default=[],
        metavar="NODE",
        help="a node whose lock/unlock always fails",
    )
    parser.add_argument("--route", action="append", metavar="ROUTE", choices=ROUTES, help="limit faults to")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault RNG (default 0)")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "unlock-bot simulator") -> int:
    """Parse simulator options and run it; returns an exit status (for cli.py to delegate to)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    given = {
        "seed": args.fault_seed,
        "latency_seconds": args.latency,
        "error_rate": args.error_rate,
        "error_statuses": args.error_statuses,
        "throttle_rate": args.throttle_rate,
        "retry_after": args.retry_after,
        "drop_rate": args.drop_rate,
        "drop_after_apply": args.drop_after_apply,
        "fail_nodes": set(args.fail_node),
        "routes": args.route,
    }
    # Only flags given on the command line override the seed file's faults.
    overrides = {key: value for key, value in given.items() if value != _FLAG_DEFAULTS[key]}
    try:
        Faults.model_validate(overrides)
    except ValidationError as exc:
        parser.error(str(exc))
    try:
        run(args.host, args.port, args.seed, overrides, log_level=args.log_level)
    except SeedError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
