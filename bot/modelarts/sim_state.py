"""The ModelArts simulator's state: pools, nodes, credentials, injected faults and the call log.

Kept apart from the HTTP layer (simulator.py) so tests, the demo and benchmarks can seed, inspect and
change it in-process while uvicorn serves it from another thread; every access goes through one lock.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# The lock state lives in this annotation (an inference, modelarts-api.md); models.py is its one home.
from bot.modelarts.models import LOCK_ANNOTATION

# What a lock call writes into it: the lock's actions, joined. "delete" is the only documented action.
LOCK_ACTION_VALUE = "delete"
NODEPOOL_LABEL = "os.modelarts.node/nodepool"
POOL_DISPLAY_NAME_LABEL = "os.modelarts/name"
WORKSPACE_LABEL = "os.modelarts/workspace.id"

ROUTES = ("list_pools", "list_nodes", "get_node", "batch_lock", "batch_unlock")
NODE_PHASES = ("Available", "Creating", "Deleting", "Abnormal", "Checking")
_NAME_ALPHABET = string.ascii_lowercase + string.digits
_EPOCH = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)


class Faults(BaseModel):
    """What goes wrong, and how often. Probabilities are drawn from a RNG seeded by `seed`.

    `routes` limits every fault except `latency_by_route` to the named routes (see ROUTES); None = all.
    `fail_next` and `drop_next` are consumed by matching calls, one per call, before the random faults.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    latency_seconds: float = Field(default=0.0, ge=0)
    latency_by_route: dict[str, float] = Field(default_factory=dict)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 503])
    throttle_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: int = Field(default=1, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    drop_next: int = Field(default=0, ge=0)
    # When a drop hits a batch call, apply the lock/unlock first: the change happens, the caller never learns.
    drop_after_apply: bool = False
    fail_next: list[int] = Field(default_factory=list)
    fail_nodes: set[str] = Field(default_factory=set)
    routes: list[str] | None = None
    # Not a documented limit: lets tests exercise a gateway that refuses large batches (None = no limit).
    max_batch_nodes: int | None = Field(default=None, ge=1)

    @field_validator("error_statuses", "fail_next")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"status {status} is not an HTTP error status (400-599)")
        return value

    @field_validator("latency_by_route")
    @classmethod
    def _latency_routes(cls, value: dict[str, float]) -> dict[str, float]:
        for route, seconds in value.items():
            _check_route(route)
            if seconds < 0:
                raise ValueError(f"latency for {route} must be >= 0")
        return value

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: list[str] | None) -> list[str] | None:
        for route in value or ():
            _check_route(route)
        return value

    def applies_to(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def latency_for(self, route: str) -> float:
        if route in self.latency_by_route:
            return self.latency_by_route[route]
        return self.latency_seconds if self.applies_to(route) else 0.0


def _check_route(route: str) -> None:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; routes are {', '.join(ROUTES)}")


@dataclass
class SimNode:
    name: str
    created_at: datetime
    phase: str = "Available"
    locked: bool = False
    flavor: str = "modelarts.vm.gpu.8v100"
    az: str = "cn-north-4a"
    private_ip: str = "192.168.0.2"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def to_api(self, pool: SimPool) -> dict[str, Any]:
        """The node as ModelArts renders it (a Kubernetes-style object)."""
        annotations = dict(self.annotations)
        if self.locked:
            annotations[LOCK_ANNOTATION] = LOCK_ACTION_VALUE
        else:
            annotations.pop(LOCK_ANNOTATION, None)
        labels = {NODEPOOL_LABEL: f"{pool.name}-default", "os.modelarts/resource.id": pool.name}
        labels.update(self.labels)
        return {
            "kind": "Node",
            "apiVersion": "v2",
            "metadata": {
                "name": self.name,
                "creationTimestamp": _iso(self.created_at),
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {"flavor": self.flavor, "hostNetwork": {"vpc": "vpc-sim", "subnet": "subnet-sim"}},
            "status": {"phase": self.phase, "az": self.az, "privateIp": self.private_ip},
        }


@dataclass
class SimPool:
    name: str
    display_name: str
    phase: str = "Running"
    workspace_id: str = "0"
    flavor: str = "modelarts.vm.gpu.8v100"
    created_at: datetime = _EPOCH
    labels: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, SimNode] = field(default_factory=dict)  # insertion order is the listing order

    def to_api(self) -> dict[str, Any]:
        labels = {POOL_DISPLAY_NAME_LABEL: self.display_name, WORKSPACE_LABEL: self.workspace_id}
        labels.update(self.labels)
        return {
            "kind": "Pool",
            "apiVersion": "v2",
            "metadata": {
                "name": self.name,
                "creationTimestamp": _iso(self.created_at),
                "labels": labels,
                "annotations": {},
            },
            "spec": {
                "type": "Dedicate",
                "scope": ["Train", "Infer"],
                "resources": [{"flavor": self.flavor, "count": len(self.nodes)}],
            },
            "status": {
                "phase": self.phase,
                "resources": {"available": [{"flavor": self.flavor, "count": self._available()}]},
            },
        }

    def _available(self) -> int:
        return sum(1 for node in self.nodes.values() if node.phase == "Available")

    def summary(self, *, with_nodes: bool = True) -> dict[str, Any]:
        """The admin view: what tests want to assert on, without the API's nesting."""
        out: dict[str, Any] = {
            "name": self.name,
            "display_name": self.display_name,
            "phase": self.phase,
            "node_count": len(self.nodes),
            "locked_count": sum(1 for node in self.nodes.values() if node.locked),
        }
        if with_nodes:
            out["nodes"] = [
                {"name": node.name, "phase": node.phase, "locked": node.locked} for node in self.nodes.values()
            ]
        return out


@dataclass(frozen=True)
class SimCall:
    """One API call as the simulator saw it. `ak_or_token_kind` is "aksk", "token" or None (rejected)."""

    method: str
    path: str
    query: dict[str, str]
    json_body: Any
    status: int
    ak_or_token_kind: str | None
    at: datetime
    request_id: str = ""
    route: str | None = None
    ak: str | None = None
    dropped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "json_body": self.json_body,
            "status": self.status,
            "ak_or_token_kind": self.ak_or_token_kind,
            "at": _iso(self.at),
            "request_id": self.request_id,
            "route": self.route,
            "ak": self.ak,
            "dropped": self.dropped,
        }


class SeedError(ValueError):
    """A seed file is unreadable or malformed; the message names the file and the problem."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_node_name(pool: str, index: int, taken: Iterable[str] = ()) -> str:
    """A deterministic, real-looking node name (`os-node-created-xzz78`) for node `index` of `pool`."""
    taken_set = set(taken)
    salt = 0
    while True:
        digest = hashlib.sha256(f"{pool}/{index}/{salt}".encode()).digest()
        suffix = "".join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:5])
        name = f"os-node-created-{suffix}"
        if name not in taken_set:
            return name
        salt += 1


def _build_pool(spec: Mapping[str, Any], index: int) -> SimPool:
    name = str(spec["name"])
    pool = SimPool(
        name=name,
        display_name=str(spec.get("display_name", name)),
        phase=str(spec.get("phase", "Running")),
        workspace_id=str(spec.get("workspace_id", "0")),
        flavor=str(spec.get("flavor", "modelarts.vm.gpu.8v100")),
        created_at=_EPOCH + timedelta(days=index),
        labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
    )
    az = str(spec.get("az", "cn-north-4a"))
    count = int(spec.get("node_count", 0))
    locked_count = int(spec.get("locked_count", 0))
    if not 0 <= locked_count <= count:
        raise ValueError(f"pool {name}: locked_count must be between 0 and node_count ({count})")
    locked = set(random.Random(name).sample(range(count), locked_count))  # noqa: S311 - deterministic layout
    for i in range(count):
        node_name = generated_node_name(name, i, pool.nodes)
        pool.nodes[node_name] = SimNode(
            name=node_name,
            created_at=pool.created_at + timedelta(minutes=i),
            locked=i in locked,
            flavor=pool.flavor,
            az=az,
            private_ip=f"192.168.{index}.{10 + i}" if i < 240 else f"10.{index}.{i // 250}.{i % 250 + 2}",
        )
    for j, entry in enumerate(spec.get("nodes") or ()):
        node_spec: Mapping[str, Any] = {"name": entry} if isinstance(entry, str) else entry
        node_name = str(node_spec["name"])
        if node_name in pool.nodes:
            raise ValueError(f"pool {name}: node {node_name} is listed twice")
        phase = str(node_spec.get("phase", "Available"))
        if phase not in NODE_PHASES:
            raise ValueError(f"pool {name}: node {node_name}: phase must be one of {', '.join(NODE_PHASES)}")
        pool.nodes[node_name] = SimNode(
            name=node_name,
            created_at=pool.created_at + timedelta(minutes=count + j),
            phase=phase,
            locked=bool(node_spec.get("locked", False)),
            flavor=str(node_spec.get("flavor", pool.flavor)),
            az=str(node_spec.get("az", az)),
            private_ip=str(node_spec.get("private_ip", f"172.16.{index}.{j + 2}")),
            labels={str(k): str(v) for k, v in (node_spec.get("labels") or {}).items()},
            annotations={str(k): str(v) for k, v in (node_spec.get("annotations") or {}).items()},
        )
    return pool


class SimulatorState:
    """Everything the simulator knows. Thread-safe: all public methods take `self.lock`.

    `reset()` returns to the state it was built with (pools, faults, RNG), which is why the seed is kept.
    """

    def __init__(
        self,
        seed: Mapping[str, Any],
        *,
        clock: Callable[[], datetime] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._seed = json.loads(json.dumps(seed))  # a private deep copy
        try:
            self.project_id = str(seed.get("project_id", "sim-project"))
            self.region = str(seed.get("region", "cn-north-4"))
            self.credentials: dict[str, str] = {str(k): str(v) for k, v in (seed.get("credentials") or {}).items()}
            self.tokens: set[str] = {str(t) for t in seed.get("tokens") or ()}
            # The gateway locks an AK for 5 minutes after 5 bad signatures in a row (0 disables).
            self.lockout_after = int(seed.get("lockout_after", 5))
            self.lockout_seconds = float(seed.get("lockout_seconds", 300))
            self._initial_faults = faults or Faults.model_validate(seed.get("faults") or {})
            self._build_pools()
        except (KeyError, TypeError, ValueError) as exc:
            raise SeedError(f"invalid simulator seed: {exc}") from exc
        self.faults = self._initial_faults.model_copy(deep=True)
        self.rng = random.Random(self.faults.seed)  # noqa: S311 - reproducible fault injection
        self.calls: list[SimCall] = []
        self._bad_signatures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}

    def _build_pools(self) -> None:
        self.pools: dict[str, SimPool] = {}
        for i, spec in enumerate(self._seed.get("pools") or ()):
            pool = _build_pool(spec, i)
            if pool.name in self.pools:
                raise ValueError(f"pool {pool.name} is listed twice")
            self.pools[pool.name] = pool

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def default(cls, *, clock: Callable[[], datetime] | None = None) -> SimulatorState:
        """The built-in seed shipped as bot/modelarts/simulator_seed.yml."""
        text = resources.files("bot.modelarts").joinpath("simulator_seed.yml").read_text(encoding="utf-8")
        return cls(_parse_seed(text, "simulator_seed.yml"), clock=clock)

    @classmethod
    def from_file(cls, path: str | Path, *, clock: Callable[[], datetime] | None = None) -> SimulatorState:
        """A seed from YAML or JSON (JSON is YAML, so one parser reads both)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SeedError(f"{path}: cannot read simulator seed: {exc.strerror}") from exc
        try:
            return cls(_parse_seed(text, str(path)), clock=clock)
        except SeedError as exc:
            raise SeedError(f"{path}: {exc}") from exc

    # --- faults ----------------------------------------------------------------------------------------
    def set_faults(self, faults: Faults | Mapping[str, Any]) -> Faults:
        """Replace every fault setting (unset fields take defaults) and reseed the RNG."""
        new = faults if isinstance(faults, Faults) else Faults.model_validate(dict(faults))
        with self.lock:
            self.faults = new.model_copy(deep=True)
            self.rng = random.Random(self.faults.seed)  # noqa: S311
            return self.faults.model_copy(deep=True)

    def update_faults(self, changes: Mapping[str, Any] | None = None, /, **more: Any) -> Faults:
        """Change some fault settings, keep the rest; the RNG is reseeded only when `seed` is given."""
        changes = {**(changes or {}), **more}
        with self.lock:
            merged = self.faults.model_dump()
            merged.update(changes)
            new = Faults.model_validate(merged)
            self.faults = new
            if "seed" in changes:
                self.rng = random.Random(new.seed)  # noqa: S311
            return new.model_copy(deep=True)

    def get_faults(self) -> Faults:
        with self.lock:
            return self.faults.model_copy(deep=True)

    # --- calls -----------------------------------------------------------------------------------------
    def record(self, call: SimCall) -> None:
        with self.lock:
            self.calls.append(call)

    def calls_snapshot(self, route: str | None = None) -> list[SimCall]:
        with self.lock:
            return [c for c in self.calls if route is None or c.route == route]

    def clear_calls(self) -> int:
        with self.lock:
            count = len(self.calls)
            self.calls.clear()
            return count

    # --- pools and nodes -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the seed: pools, lock states, faults, RNG, lockouts and the call log."""
        with self.lock:
            self._build_pools()
            self.faults = self._initial_faults.model_copy(deep=True)
            self.rng = random.Random(self.faults.seed)  # noqa: S311
            self.calls.clear()
            self._bad_signatures.clear()
            self._locked_until.clear()

    def pool_names(self) -> list[str]:
        with self.lock:
            return list(self.pools)

    def node_names(self, pool: str) -> list[str]:
        with self.lock:
            return list(self._pool(pool).nodes)

    def is_locked(self, pool: str, node: str) -> bool:
        with self.lock:
            return self._pool(pool).nodes[node].locked

    def locked_nodes(self, pool: str) -> list[str]:
        with self.lock:
            return [n.name for n in self._pool(pool).nodes.values() if n.locked]

    def set_node(self, pool: str, node: str, *, locked: bool | None = None, phase: str | None = None) -> SimNode:
        """Change a node, creating it (Available, unlocked) when the pool has no such node."""
        if phase is not None and phase not in NODE_PHASES:
            raise ValueError(f"phase must be one of {', '.join(NODE_PHASES)}")
        with self.lock:
            target = self._pool(pool)
            if node not in target.nodes:
                index = list(self.pools).index(pool)
                target.nodes[node] = SimNode(
                    name=node,
                    created_at=self.clock(),
                    flavor=target.flavor,
                    private_ip=f"172.31.{index}.{len(target.nodes) % 250 + 2}",
                )
            sim_node = target.nodes[node]
            if locked is not None:
                sim_node.locked = locked
            if phase is not None:
                sim_node.phase = phase
            return sim_node

    def remove_node(self, pool: str, node: str) -> bool:
        with self.lock:
            return self._pool(pool).nodes.pop(node, None) is not None

    def summary(self, *, with_nodes: bool = True) -> dict[str, Any]:
        with self.lock:
            return {
                "project_id": self.project_id,
                "pools": [p.summary(with_nodes=with_nodes) for p in self.pools.values()],
            }

    def _pool(self, pool: str) -> SimPool:
        try:
            return self.pools[pool]
        except KeyError:
            raise KeyError(f"no pool {pool!r} in the simulator") from None

    # --- AK lockout (used by the app) ------------------------------------------------------------------
    def ak_locked(self, ak: str) -> bool:
        with self.lock:
            until = self._locked_until.get(ak)
            if until is None:
                return False
            if time.monotonic() >= until:
                del self._locked_until[ak]
                self._bad_signatures.pop(ak, None)
                return False
            return True

    def note_signature(self, ak: str, *, ok: bool) -> None:
        """Count bad signatures in a row per known AK; lock the AK like the gateway does."""
        with self.lock:
            if ak not in self.credentials:
                return
            if ok:
                self._bad_signatures.pop(ak, None)
                return
            count = self._bad_signatures.get(ak, 0) + 1
            self._bad_signatures[ak] = count
            if self.lockout_after and count >= self.lockout_after:
                self._locked_until[ak] = time.monotonic() + self.lockout_seconds


def _parse_seed(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SeedError(f"{source}: a simulator seed must be a mapping")
    return data
