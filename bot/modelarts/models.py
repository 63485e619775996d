"""What ModelArts returns, as flat pydantic models, plus the one place that decides whether a node is locked.

The API's objects are Kubernetes-style (`metadata`/`spec`/`status`); the bot only needs a few fields, so each
model flattens them on the way in and keeps the original JSON in `raw` for anything else. Models also accept
the flat field names directly (tests, the simulator).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

LOCK_ANNOTATION = "os.modelarts.node/lock.action"
"""Non-empty on a locked node. An inference (modelarts-api.md), so it lives here and only here."""

DISPLAY_NAME_LABEL = "os.modelarts/name"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_map(value: Any) -> dict[str, str]:
    """Labels/annotations as str→str; JSON nulls dropped, other scalars stringified."""
    return {str(k): str(v) for k, v in _dict(value).items() if v is not None}


def _is_api_shape(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("metadata"), dict)


class Pool(_Model):
    """A resource pool: `name` is its ID (`metadata.name`, what the API paths take), not its display name."""

    name: str
    display_name: str | None = None
    phase: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not _is_api_shape(data):
            return data
        meta, status = data["metadata"], _dict(data.get("status"))
        return {
            "name": meta.get("name"),
            "display_name": _str_map(meta.get("labels")).get(DISPLAY_NAME_LABEL),
            "phase": status.get("phase"),
            "raw": data,
        }


class Node(_Model):
    """A pool node, flattened from `metadata`, `spec` and `status`."""

    name: str
    phase: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    flavor: str | None = None
    az: str | None = None
    private_ip: str | None = Field(default=None, alias="privateIp")
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not _is_api_shape(data):
            return data
        meta, spec, status = data["metadata"], _dict(data.get("spec")), _dict(data.get("status"))
        return {
            "name": meta.get("name"),
            "phase": status.get("phase"),
            "labels": _str_map(meta.get("labels")),
            "annotations": _str_map(meta.get("annotations")),
            "flavor": spec.get("flavor"),
            "az": status.get("az"),
            "privateIp": status.get("privateIp"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "raw": data,
        }

    @property
    def locked(self) -> bool:
        return is_locked(self)


def is_locked(node: Node) -> bool:
    """Whether ModelArts considers `node` locked: the lock annotation is present and non-empty."""
    return bool(node.annotations.get(LOCK_ANNOTATION, "").strip())


class PoolList(_Model):
    """`GET …/pools`: not paginated."""

    items: list[Pool] = Field(default_factory=list)


class NodeList(_Model):
    """One page of `GET …/pools/{pool}/nodes`; `continue_token` is empty or None on the last page."""

    items: list[Node] = Field(default_factory=list)
    continue_token: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict) and "continue_token" not in data:
            meta = _dict(data.get("metadata"))
            return {**data, "continue_token": meta.get("continue") or None}
        return data


class BatchNodeStatus(_Model):
    """One node's entry in a batch-lock/unlock response; `status` is `success` or `failed` (documented).

    The published reference's example omits `status`; a missing status is kept as None (treated as unknown).
    """

    name: str
    status: str | None = None


class BatchNodesResponse(_Model):
    """The 200 body of batch-lock/unlock: `{"nodes": [{"name": …, "status": …}]}`."""

    nodes: list[BatchNodeStatus]
