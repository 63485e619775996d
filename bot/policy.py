"""The allow-list policy file, and who may request, approve and cancel what.

The file is read once at start; a bad file stops the bot with `path:line: reason` (design.md). Group
membership is looked up per decision through a `GroupDirectory` (cached, see `CachedGroupDirectory`), so
adding someone to a Slack user group takes effect within the cache TTL, without a restart. A lookup that
fails refuses (fails closed) with a reason saying so, never raises to the caller.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bot.requests import UnlockRequest

log = logging.getLogger(__name__)

MAX_TTL_SECONDS = 7 * 24 * 3600
MAX_NODES_LIMIT = 10_000

_ID_HINTS = {
    "user": ("U or W", "U012AB3CDE", "in Slack: profile → ⋮ → Copy member ID"),
    "user group": ("S", "S012AB3CDE", "in Slack: the group's page → ⋮ → Copy group ID"),
    "channel": ("C, G or D", "C012AB3CDE", "in Slack: channel details → the ID at the bottom"),
}
_ID_RE = {
    "user": re.compile(r"\A[UW][A-Z0-9]{1,31}\Z"),
    "user group": re.compile(r"\AS[A-Z0-9]{1,31}\Z"),
    "channel": re.compile(r"\A[CGD][A-Z0-9]{1,31}\Z"),
}
_T = TypeVar("_T")
_PATTERN_RE = re.compile(r"\A[a-z0-9.\-*?\[\]!]{1,63}\Z")


class PolicyError(Exception):
    """The policy file cannot be used; `str()` is `"<path>:<line>: <reason>"`, one line per problem."""

    def __init__(self, path: str | Path, problems: Sequence[tuple[int | None, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        self.line, self.reason = self.problems[0]
        super().__init__(
            "\n".join(f"{self.path}:{line}: {why}" if line else f"{self.path}: {why}" for line, why in self.problems)
        )


# -- the file's shape ------------------------------------------------------------------------------------


def _slack_id(kind: str) -> Callable[[str], str]:
    """A validator for one kind of Slack ID whose error tells how to find the right value."""

    def check(value: str) -> str:
        if _ID_RE[kind].match(value):
            return value
        prefix, example, where = _ID_HINTS[kind]
        for other, pattern in _ID_RE.items():
            if other != kind and pattern.match(value):
                raise ValueError(f"{value!r} is a {other} ID, not a {kind} ID")
        if value.startswith(("@", "#")) or not value[:1].isupper():
            hint = " (use the ID, not the name)" if value.startswith(("@", "#")) else ""
            raise ValueError(f"{value!r} is not a Slack {kind} ID{hint}: IDs look like {example}, {where}")
        raise ValueError(f"{value!r} is not a Slack {kind} ID: it should start with {prefix}, e.g. {example}")

    return check


UserId = Annotated[str, Field(strict=True), AfterValidator(_slack_id("user"))]
GroupId = Annotated[str, Field(strict=True), AfterValidator(_slack_id("user group"))]
ChannelId = Annotated[str, Field(strict=True), AfterValidator(_slack_id("channel"))]
Seconds = Annotated[int, Field(strict=True, gt=0, le=MAX_TTL_SECONDS)]
NodeLimit = Annotated[int, Field(strict=True, gt=0, le=MAX_NODES_LIMIT)]


def _check_pattern(value: str) -> str:
    if not _PATTERN_RE.match(value):
        raise ValueError(
            f"{value!r} is not a pool pattern: use pool-name characters (a-z, 0-9, '-', '.') "
            'and the wildcards * ? [ ], e.g. "prod-*"'
        )
    if value.count("[") != value.count("]"):
        raise ValueError(f"{value!r} has an unclosed '[' … ']'")
    return value


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Members(_Strict):
    """Users and Slack user groups; someone is a member when listed directly or in one of the groups."""

    users: tuple[UserId, ...] = ()
    usergroups: tuple[GroupId, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.users:
            parts.append("users " + ", ".join(self.users))
        if self.usergroups:
            parts.append("groups " + ", ".join(self.usergroups))
        return "; ".join(parts) or "nobody"


class Approval(_Strict):
    two_person: bool = Field(default=True, strict=True)
    ttl_seconds: Seconds = 900


class Limits(_Strict):
    max_nodes_per_request: NodeLimit = 200


class PoolRule(_Strict):
    """An override for pools whose name matches `match` (fnmatch, case-sensitive); unset fields inherit."""

    match: Annotated[str, Field(strict=True), AfterValidator(_check_pattern)]
    requesters: Members | None = None
    approvers: Members | None = None
    channels: tuple[ChannelId, ...] | None = None
    two_person: bool | None = Field(default=None, strict=True)
    ttl_seconds: Seconds | None = None
    max_nodes_per_request: NodeLimit | None = None


@dataclass(frozen=True)
class PoolPolicy:
    """The effective policy for one pool: the first matching `pools` entry over the top level."""

    requesters: Members
    approvers: Members
    channels: tuple[str, ...]  # empty: any channel
    two_person: bool
    ttl_seconds: int
    max_nodes_per_request: int
    rule_name: str  # `top level` or `pools[0] (match "prod-*")`, for messages
    match: str | None = None  # the pattern of the pools entry; None for the top level


class Policy(_Strict):
    """The whole policy file (design.md, "Policy file")."""

    requesters: Members
    approvers: Members
    channels: tuple[ChannelId, ...] = ()
    approval: Approval = Approval()
    limits: Limits = Limits()
    pools: tuple[PoolRule, ...] = ()

    def for_pool(self, pool: str) -> PoolPolicy:
        """The effective rule for `pool`: first `pools` entry whose pattern matches, else the top level."""
        for i, rule in enumerate(self.pools):
            if fnmatchcase(pool, rule.match):
                return self._effective(i, rule)
        return self._top_level()

    def rules(self) -> list[PoolPolicy]:
        """Every rule in the order they are tried, the top level (all other pools) last."""
        return [self._effective(i, rule) for i, rule in enumerate(self.pools)] + [self._top_level()]

    def _top_level(self) -> PoolPolicy:
        return PoolPolicy(
            requesters=self.requesters,
            approvers=self.approvers,
            channels=self.channels,
            two_person=self.approval.two_person,
            ttl_seconds=self.approval.ttl_seconds,
            max_nodes_per_request=self.limits.max_nodes_per_request,
            rule_name="top level",
        )

    def _effective(self, i: int, rule: PoolRule) -> PoolPolicy:
        return PoolPolicy(
            requesters=_pick(rule.requesters, self.requesters),
            approvers=_pick(rule.approvers, self.approvers),
            channels=_pick(rule.channels, self.channels),
            two_person=_pick(rule.two_person, self.approval.two_person),
            ttl_seconds=_pick(rule.ttl_seconds, self.approval.ttl_seconds),
            max_nodes_per_request=_pick(rule.max_nodes_per_request, self.limits.max_nodes_per_request),
            rule_name=f'pools[{i}] (match "{rule.match}")',
            match=rule.match,
        )


# -- loading, with line numbers ----------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file; any problem raises `PolicyError` naming the line."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise PolicyError(
            path, [(None, "policy file not found (set UNLOCK_BOT_POLICY, or start from policy.example.yml)")]
        ) from None
    except OSError as exc:
        raise PolicyError(path, [(None, f"cannot read the policy file: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(path, [(line, "the file is not UTF-8 text")]) from None
    return parse_policy(text, path)


def parse_policy(text: str, path: str | Path = "<policy>") -> Policy:
    """Validate policy YAML text; `path` only names the source in errors."""
    root, data = _compose(text, path)
    if root is None:
        raise PolicyError(path, [(1, "the policy file is empty")])
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError(path, [(_line(root), "the policy must be a mapping of keys (requesters:, approvers:, …)")])
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise PolicyError(path, duplicates)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = [_explain(error, root) for error in exc.errors()]
        raise PolicyError(path, sorted(problems, key=lambda p: p[0] or 0)) from None
    first: dict[str, int] = {}
    for i, rule in enumerate(policy.pools):
        if rule.match in first:
            _, node, _ = _locate(root, ("pools", i, "match"))
            raise PolicyError(
                path,
                [
                    (
                        _line(node),
                        f'pools[{i}] repeats match "{rule.match}" of pools[{first[rule.match]}]; '
                        "the first match wins, so this entry would never be used",
                    )
                ],
            )
        first[rule.match] = i
    return policy


def _compose(text: str, path: str | Path) -> tuple[yaml.Node | None, Any]:
    """One parse giving both the node tree (for line numbers) and the plain data."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError(path, [(line, f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, [(None, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return node, data


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicate_keys(node: yaml.Node, where: str = "") -> list[tuple[int | None, str]]:
    """PyYAML silently keeps the last of two equal keys; in a policy that hides a mistake."""
    found: list[tuple[int | None, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in first:
                found.append(
                    (
                        _line(key),
                        f"key `{name}` appears twice in {where or 'the top level'} (first on line {first[name]})",
                    )
                )
            else:
                first[name] = _line(key)
            found += _duplicate_keys(value, f"{where}.{name}" if where else name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{where}[{i}]")
    return found


def _locate(root: yaml.Node, loc: Sequence[str | int]) -> tuple[yaml.Node | None, yaml.Node, list[str | int]]:
    """(key node, value node, resolved path) for a pydantic location, as deep as the file goes."""
    node = root
    key_node: yaml.Node | None = None
    path: list[str | int] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            key_node, node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            key_node, node = None, node.value[part]
        else:
            continue  # a part pydantic adds (e.g. a union member's name) that the file does not have
        path.append(part)
    return key_node, node, path


def _explain(error: Any, root: yaml.Node) -> tuple[int | None, str]:
    """A pydantic error as (line, sentence): the line of the offending key or value in the node tree."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind: str = error["type"]
    key_node, node, path = _locate(root, loc)
    where = _dotted(path) or "the top level"

    if kind == "extra_forbidden":
        name = str(loc[-1])
        parent = Policy if len(path) <= 1 else _model_at(path[:-1])
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" — did you mean `{close[0]}`?" if close else ""
        inside = _dotted(path[:-1]) or "the top level"
        return _line(key_node or node), f"unknown key `{name}` in {inside}{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return _line(node), f"missing required key `{loc[-1]}` in {where}"
    value = error.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        got = "nothing" if value is None else type(value).__name__
        return _line(node), f"{where}: expected a mapping of keys, got {got}"
    if kind in ("tuple_type", "list_type"):
        got = "nothing" if value is None else repr(value)
        return _line(node), f"{where}: expected a list, e.g. [A, B], got {got}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error"):
        message += f" (got {'nothing' if value is None else repr(value)})"
    return _line(node), f"{where}: {message}"


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that the mapping at `path` is validated as (for the list of allowed keys)."""
    model: type[BaseModel] = Policy
    for part in path:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        inner = getattr(annotation, "__args__", ())
        candidates += [a for arg in inner for a in getattr(arg, "__args__", ()) if isinstance(a, type)]
        found = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if found is None:
            return None
        model = found
    return model


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- group membership --------------------------------------------------------------------------------------


class GroupLookupFailed(Exception):
    """The members of a user group could not be listed; the cause is chained, not put in the message."""

    def __init__(self, usergroup_id: str) -> None:
        super().__init__(f"could not list the members of user group {usergroup_id}")
        self.usergroup_id = usergroup_id


class GroupDirectory(Protocol):
    """Who is in a Slack user group (e.g. backed by `usergroups.users.list`)."""

    async def members(self, usergroup_id: str) -> frozenset[str]: ...


class CachedGroupDirectory:
    """A TTL cache over `fetch`: concurrent misses for a group share one fetch; failures are not kept."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[Iterable[str]]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._inflight: dict[str, asyncio.Task[frozenset[str]]] = {}

    async def members(self, usergroup_id: str) -> frozenset[str]:
        cached = self._cache.get(usergroup_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        task = self._inflight.get(usergroup_id)
        if task is None:
            task = asyncio.ensure_future(self._load(usergroup_id))
            self._inflight[usergroup_id] = task
            task.add_done_callback(lambda t: self._done(usergroup_id, t))
        # shield: a caller that gives up does not cancel the fetch the others are waiting for
        return await asyncio.shield(task)

    def invalidate(self, usergroup_id: str | None = None) -> None:
        """Forget one group (or all), e.g. on a `subteam_members_changed` event."""
        if usergroup_id is None:
            self._cache.clear()
        else:
            self._cache.pop(usergroup_id, None)

    async def _load(self, usergroup_id: str) -> frozenset[str]:
        started = self._clock()
        try:
            members = frozenset(await self._fetch(usergroup_id))
        except Exception as exc:
            raise GroupLookupFailed(usergroup_id) from exc
        self._cache[usergroup_id] = (started + self._ttl, members)
        return members

    def _done(self, usergroup_id: str, task: asyncio.Task[frozenset[str]]) -> None:
        if self._inflight.get(usergroup_id) is task:
            del self._inflight[usergroup_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: callers that are still waiting get it through shield


# -- decisions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether an action is allowed, and a sentence for the person asking that names the rule."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


class Authorizer:
    """Answers who may request, approve and cancel, from the policy and live group membership."""

    def __init__(self, policy: Policy, groups: GroupDirectory) -> None:
        self.policy = policy
        self.groups = groups

    async def can_request(self, user_id: str, channel_id: str, pool: str) -> Decision:
        rule = self.policy.for_pool(pool)
        if rule.channels and channel_id not in rule.channels:
            return Decision(
                False,
                f"Requests for pool {pool} can't be made in this channel (policy {rule.rule_name}: "
                f"channels {', '.join(rule.channels)}). Make the request in one of those.",
            )
        member, failed = await self._is_member(user_id, rule.requesters)
        if member:
            return Decision(True, f"You are a requester for pool {pool} (policy {rule.rule_name}).")
        if failed:
            return _lookup_failed(failed, f"a requester for pool {pool}")
        return Decision(
            False,
            f"You are not a requester for pool {pool} (policy {rule.rule_name}: "
            f"{rule.requesters.describe()}). Ask one of them to make the request, "
            "or ask the bot's admins to add you.",
        )

    async def can_approve(self, user_id: str, request: UnlockRequest) -> Decision:
        rule = self.policy.for_pool(request.pool)
        if request.two_person and user_id == request.requester_id:
            return Decision(
                False,
                f"You made this request, and pool {request.pool} needs someone else to approve it "
                f"(two-person rule, policy {rule.rule_name}). Ask an approver: {rule.approvers.describe()}.",
            )
        member, failed = await self._is_member(user_id, rule.approvers)
        if member:
            return Decision(True, f"You are an approver for pool {request.pool} (policy {rule.rule_name}).")
        if failed:
            return _lookup_failed(failed, f"an approver for pool {request.pool}")
        return Decision(
            False,
            f"You are not an approver for pool {request.pool} (policy {rule.rule_name}: "
            f"{rule.approvers.describe()}). Ask one of them to approve it.",
        )

    async def can_cancel(self, user_id: str, request: UnlockRequest) -> Decision:
        if user_id == request.requester_id:
            return Decision(True, "You made this request, so you may cancel it.")
        return Decision(
            False,
            f"Only the requester ({request.requester_id}) can cancel request {request.id}; "
            "an approver can deny it instead.",
        )

    async def describe(self, user_id: str, channel_id: str) -> str:
        """What `user_id` may do from `channel_id`, rule by rule, in a few short lines for `help`."""
        rules = self.policy.rules()
        top = "all pools" if len(rules) == 1 else "all other pools"
        may_request: dict[str, bool] = {}
        may_approve: dict[str, bool] = {}
        elsewhere: list[str] = []
        two_person: list[str] = []
        unknown: set[str] = set()
        for rule in rules:
            label = rule.match or top
            requester, failed_r = await self._is_member(user_id, rule.requesters)
            approver, failed_a = await self._is_member(user_id, rule.approvers)
            unknown.update(failed_r + failed_a)
            here = not rule.channels or channel_id in rule.channels
            may_request[label] = requester and here
            if requester and not here:
                elsewhere.append(f"{label} only in {', '.join(rule.channels)}")
            may_approve[label] = approver
            if approver and rule.two_person:
                two_person.append(label)
        lines = [f"You may request unlocks here for: {_summarize(may_request, top)}."]
        if elsewhere:
            lines.append("You may request " + "; ".join(elsewhere) + ".")
        lines.append(f"You may approve: {_summarize(may_approve, top)}.")
        if two_person:
            where = "everywhere" if len(two_person) == sum(may_approve.values()) else "for " + ", ".join(two_person)
            lines.append(f"The two-person rule applies {where}: someone else must approve your own requests.")
        if unknown:
            lines.append(
                f"(Could not check your membership of {', '.join(sorted(unknown))} just now: "
                "those rules count as no. Try again shortly.)"
            )
        return "\n".join(lines)

    async def _is_member(self, user_id: str, members: Members) -> tuple[bool, list[str]]:
        """(member?, groups whose lookup failed); a direct listing needs no lookup."""
        if user_id in members.users:
            return True, []
        results = await asyncio.gather(*(self.groups.members(g) for g in members.usergroups), return_exceptions=True)
        failed = []
        for group, result in zip(members.usergroups, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                cause = result.__cause__ or result
                log.warning(
                    "user group lookup failed",
                    extra={
                        "event": "group_lookup_failed",
                        "usergroup_id": group,
                        "error": type(cause).__name__,
                    },
                )
                failed.append(group)
            elif user_id in result:
                return True, []
        return False, failed


def _lookup_failed(groups: list[str], role: str) -> Decision:
    return Decision(
        False,
        f"Could not check whether you are {role}: looking up the members of {', '.join(groups)} "
        "failed, so the answer is no for now. Try again in a minute.",
    )


def _summarize(allowed: dict[str, bool], top: str) -> str:
    """`all pools`, `all pools except prod-*`, `prod-*, gpu-*` or `no pools` (dicts keep rule order)."""
    yes = [label for label, ok in allowed.items() if ok]
    no = [label for label, ok in allowed.items() if not ok]
    if not yes:
        return "no pools"
    if allowed[top]:
        return "all pools" + (f" except {', '.join(no)}" if no else "")
    return ", ".join(yes)
