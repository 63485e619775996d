"""The policy file (every error names its line) and the decisions made from it."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.policy import (
    Authorizer,
    CachedGroupDirectory,
    Decision,
    GroupDirectory,
    GroupLookupFailed,
    Policy,
    PolicyError,
    load_policy,
    parse_policy,
)
from bot.requests import UnlockRequest

EXAMPLE = Path(__file__).resolve().parents[1] / "policy.example.yml"

BASE = """\
requesters: {users: [U0REQ], usergroups: [S0ONCALL]}
approvers: {users: [U0APP], usergroups: [S0LEADS]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(textwrap.dedent(text))
    return path


def failure(tmp_path: Path, text: str) -> PolicyError:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:")
    return info.value


# -- loading -----------------------------------------------------------------------------------------------


def test_example_file_loads_with_its_overrides() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.requesters.usergroups == ("S012ONCALL",)
    assert policy.approval.two_person is True
    assert policy.approval.ttl_seconds == 900
    prod = policy.for_pool("prod-a")
    assert prod.rule_name == 'pools[0] (match "prod-*")'
    assert prod.approvers.users == ()
    assert prod.approvers.usergroups == ("S056SRELEAD",)
    assert (prod.ttl_seconds, prod.max_nodes_per_request) == (600, 50)
    assert prod.channels == ("C078INCIDENT",)  # inherited
    dev = policy.for_pool("dev-1")
    assert dev.channels == ()  # explicitly any channel
    assert dev.two_person is False
    assert policy.for_pool("staging").rule_name == "top level"


def test_the_design_doc_example_loads(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            """\
            requesters: {users: [U0REQUESTER], usergroups: [S0ONCALL]}   # who may ask
            approvers:  {users: [U0APPROVER],  usergroups: [S0SRELEAD]}  # who may approve
            channels: [C0INCIDENTS]        # where requests may be made; omitted or empty: any channel
            approval:
              two_person: true             # the approver must be someone other than the requester
              ttl_seconds: 900             # a pending request expires after this
            limits:
              max_nodes_per_request: 200
            pools:                         # optional overrides, first matching pattern wins
              - match: "prod-*"
                approvers: {usergroups: [S0SRELEAD]}
                two_person: true
            """,
        )
    )
    assert policy.for_pool("prod-x").approvers.usergroups == ("S0SRELEAD",)


def test_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE))
    rule = policy.for_pool("anything")
    assert (rule.channels, rule.two_person, rule.ttl_seconds, rule.max_nodes_per_request) == (
        (),
        True,
        900,
        200,
    )


def test_first_match_wins_and_unset_fields_inherit(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            BASE
            + textwrap.dedent(
                """\
            channels: [C0TOP]
            approval: {two_person: false, ttl_seconds: 300}
            limits: {max_nodes_per_request: 40}
            pools:
              - match: "prod-gpu-*"
                max_nodes_per_request: 5
              - match: "prod-*"
                two_person: true
                channels: [C0PROD]
                requesters: {users: [U0PROD]}
              - match: "*-[ab]"
                ttl_seconds: 60
            """
            ),
        )
    )
    gpu = policy.for_pool("prod-gpu-a")  # also matches the two later patterns: the first wins
    assert gpu.rule_name == 'pools[0] (match "prod-gpu-*")'
    assert (gpu.max_nodes_per_request, gpu.two_person, gpu.ttl_seconds, gpu.channels) == (
        5,
        False,
        300,
        ("C0TOP",),
    )
    assert gpu.requesters == policy.requesters
    prod = policy.for_pool("prod-a")
    assert prod.rule_name == 'pools[1] (match "prod-*")'
    assert (prod.two_person, prod.channels, prod.requesters.users, prod.requesters.usergroups) == (
        True,
        ("C0PROD",),
        ("U0PROD",),
        (),
    )
    assert policy.for_pool("dev-b").ttl_seconds == 60
    assert policy.for_pool("dev-c").rule_name == "top level"
    assert policy.for_pool("PROD-x").rule_name == "top level"  # case-sensitive, like pool names
    assert [r.rule_name for r in policy.rules()][-1] == "top level"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope.yml")
    assert str(info.value) == (
        f"{tmp_path / 'nope.yml'}: policy file not found (set UNLOCK_BOT_POLICY, or start from policy.example.yml)"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_bytes(b"requesters: {}\n# caf\xe9\n")
    with pytest.raises(PolicyError, match=r"p\.yml:2: the file is not UTF-8 text"):
        load_policy(path)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "the policy file is empty"),
        ("- a\n- b\n", 1, "the policy must be a mapping"),
        (
            BASE + "aproval:\n  two_person: true\n",
            3,
            "unknown key `aproval` in the top level — did you mean `approval`?",
        ),
        (
            "requesters: {users: [U1]}\napprovers:\n  users: [U2]\n  groups: [S1]\n",
            4,
            "unknown key `groups` in approvers — did you mean `usergroups`? (allowed: users, usergroups)",
        ),
        (
            BASE + "pools:\n  - match: a-*\n  - match: b-*\n    aprovers: {users: [U3]}\n",
            6,
            "unknown key `aprovers` in pools[1] — did you mean `approvers`?",
        ),
        (BASE + "approval:\n  two_person: true\n  ttl: 5\n", 5, "unknown key `ttl` in approval"),
        (
            "requesters:\n  users:\n    - U1\n    - alice\napprovers: {users: [U2]}\n",
            4,
            "requesters.users[1]: 'alice'",
        ),
        ("requesters: {users: [u012ab]}\napprovers: {users: [U2]}\n", 1, "'u012ab' is not a Slack user ID"),
        ("requesters: {users: ['@alice']}\napprovers: {users: [U2]}\n", 1, "(use the ID, not the name)"),
        (
            "requesters: {users: [S1]}\napprovers: {users: [U2]}\n",
            1,
            "'S1' is a user group ID, not a user ID",
        ),
        (
            "requesters: {usergroups: [U1]}\napprovers: {users: [U2]}\n",
            1,
            "'U1' is a user ID, not a user group ID",
        ),
        ("requesters: {users: [X1]}\napprovers: {users: [U2]}\n", 1, "should start with U or W"),
        ("requesters: {users: [123]}\napprovers: {users: [U2]}\n", 1, "requesters.users[0]: Input should be"),
        (
            BASE + "channels:\n  - C1\n  - '#incidents'\n",
            5,
            "channels[1]: '#incidents' is not a Slack channel ID",
        ),
        (BASE + "channels: C1\n", 3, "channels: expected a list, e.g. [A, B], got 'C1'"),
        (
            BASE + "approval:\n  ttl_seconds: -5\n",
            4,
            "approval.ttl_seconds: Input should be greater than 0 (got -5)",
        ),
        (BASE + "approval:\n  ttl_seconds: 0\n", 4, "greater than 0"),
        (BASE + "approval:\n  ttl_seconds: '900'\n", 4, "Input should be a valid integer (got '900')"),
        (BASE + "approval:\n  ttl_seconds: 1.5\n", 4, "approval.ttl_seconds"),
        (BASE + "approval:\n  ttl_seconds: 99999999\n", 4, "less than or equal to 604800"),
        (
            BASE + "approval:\n  two_person: maybe\n",
            4,
            "approval.two_person: Input should be a valid boolean (got 'maybe')",
        ),
        (
            BASE + "limits:\n  max_nodes_per_request: 0\n",
            4,
            "limits.max_nodes_per_request: Input should be greater than 0",
        ),
        (BASE + "pools:\n  - match: x\n    max_nodes_per_request: -1\n", 5, "pools[0].max_nodes_per_request"),
        (BASE + "pools:\n  - match: x\n    two_person: 'no'\n", 5, "pools[0].two_person"),
        (BASE + "pools:\n  - match: x\n    channels: [nope]\n", 5, "pools[0].channels[0]: 'nope'"),
        (BASE + "pools:\n  - match: 'Prod/*'\n", 4, "pools[0].match: 'Prod/*' is not a pool pattern"),
        (BASE + "pools:\n  - match: 'prod-[ab'\n", 4, "has an unclosed '['"),
        (BASE + "pools:\n  - match: ''\n", 4, "pools[0].match"),
        (BASE + "pools:\n  - two_person: false\n", 4, "missing required key `match` in pools[0]"),
        (
            BASE + "pools:\n  - match: a*\n  - match: b*\n  - match: a*\n",
            6,
            'pools[2] repeats match "a*" of pools[0]',
        ),
        (BASE + "pools: {match: a*}\n", 3, "pools: expected a list"),
        (
            "requesters: {users: [U1]}\nchannels: [C1]\n",
            1,
            "missing required key `approvers` in the top level",
        ),
        ("requesters:\napprovers: {users: [U2]}\n", 1, "requesters: expected a mapping of keys, got nothing"),
        (
            BASE + "requesters: {users: [U3]}\n",
            3,
            "key `requesters` appears twice in the top level (first on line 1)",
        ),
        (
            BASE + "pools:\n  - match: a\n    two_person: true\n    two_person: false\n",
            6,
            "key `two_person` appears twice in pools[0] (first on line 5)",
        ),
        (
            "requesters: {users: [U1]\napprovers: {users: [U2]}\n",
            2,
            "YAML syntax error: while parsing a flow mapping",
        ),
        ("requesters:\n  users: [U1]\n approvers: x\n", 3, "YAML syntax error"),
        (BASE + "approval:\n\ttwo_person: true\n", 4, "YAML syntax error"),
        (BASE + "channels: [C1, *nope]\n", 3, "YAML syntax error"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    err = failure(tmp_path, text)
    assert err.line == line, str(err)
    assert reason in err.reason, str(err)
    assert str(err).splitlines()[0] == f"{err.path}:{line}: {err.reason}"


def test_several_problems_are_all_reported_in_line_order(tmp_path: Path) -> None:
    err = failure(
        tmp_path,
        "requesters: {users: [bob]}\napprovers: {users: [U2]}\nlimits: {max_nodes_per_request: 0}\nextra: 1\n",
    )
    lines = str(err).splitlines()
    assert [line.split(":")[1] for line in lines] == ["1", "3", "4"]
    assert all(line.startswith(f"{err.path}:") for line in lines)


def test_parse_policy_without_a_file() -> None:
    assert isinstance(parse_policy(BASE), Policy)
    with pytest.raises(PolicyError, match=r"^<policy>:3: unknown key"):
        parse_policy(BASE + "nope: 1\n")


# -- decisions ---------------------------------------------------------------------------------------------


class FakeGroups:
    """A GroupDirectory with fixed members; groups in `broken` fail to look up."""

    def __init__(self, members: dict[str, set[str]], broken: Iterable[str] = ()) -> None:
        self.data = members
        self.broken = set(broken)
        self.calls: list[str] = []

    async def members(self, usergroup_id: str) -> frozenset[str]:
        self.calls.append(usergroup_id)
        if usergroup_id in self.broken:
            raise GroupLookupFailed(usergroup_id)
        return frozenset(self.data.get(usergroup_id, set()))


POLICY_TEXT = (
    BASE
    + """\
channels: [C0OPS]
pools:
  - match: "prod-*"
    approvers: {usergroups: [S0SRE]}
    requesters: {usergroups: [S0ONCALL]}
  - match: "dev-*"
    channels: []
    two_person: false
"""
)
GROUPS = {"S0ONCALL": {"U0ALICE", "U0BOTH"}, "S0LEADS": {"U0LEAD"}, "S0SRE": {"U0SRE", "U0BOTH"}}


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY_TEXT)


def authorizer(policy: Policy, broken: Iterable[str] = ()) -> Authorizer:
    groups: GroupDirectory = FakeGroups(GROUPS, broken)
    return Authorizer(policy, groups)


def request(pool: str, requester: str = "U0ALICE", *, two_person: bool = True) -> UnlockRequest:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return UnlockRequest(
        id="ulk-000000000001",
        team_id="T1",
        channel_id="C0OPS",
        requester_id=requester,
        pool=pool,
        nodes=("n1",),
        created_at=now,
        expires_at=now + timedelta(minutes=15),
        two_person=two_person,
    )


@pytest.mark.parametrize(
    ("user", "channel", "pool", "allowed"),
    [
        ("U0REQ", "C0OPS", "pool-a", True),  # listed directly
        ("U0ALICE", "C0OPS", "pool-a", True),  # via S0ONCALL
        ("U0LEAD", "C0OPS", "pool-a", False),  # an approver is not a requester
        ("U0REQ", "C0OTHER", "pool-a", False),  # wrong channel
        ("U0REQ", "C0OPS", "prod-a", False),  # the prod-* rule replaced the requesters
        ("U0ALICE", "C0OPS", "prod-a", True),
        ("U0ALICE", "C0ELSEWHERE", "dev-1", True),  # dev-*: any channel
        ("U0NOBODY", "C0OPS", "dev-1", False),
    ],
)
async def test_can_request(policy: Policy, user: str, channel: str, pool: str, allowed: bool) -> None:
    decision = await authorizer(policy).can_request(user, channel, pool)
    assert isinstance(decision, Decision)
    assert decision.allowed is allowed, decision.reason
    assert bool(decision) is allowed


async def test_refusals_name_the_rule_and_who_would_be_allowed(policy: Policy) -> None:
    auth = authorizer(policy)
    wrong_channel = await auth.can_request("U0REQ", "C0OTHER", "pool-a")
    assert wrong_channel.reason == (
        "Requests for pool pool-a can't be made in this channel (policy top level: channels C0OPS). "
        "Make the request in one of those."
    )
    not_requester = await auth.can_request("U0REQ", "C0OPS", "prod-a")
    assert not_requester.reason.startswith(
        'You are not a requester for pool prod-a (policy pools[0] (match "prod-*"): groups S0ONCALL).'
    )
    not_approver = await auth.can_approve("U0LEAD", request("prod-a"))
    assert not_approver.reason.startswith(
        'You are not an approver for pool prod-a (policy pools[0] (match "prod-*"): groups S0SRE).'
    )
    ok = await auth.can_request("U0ALICE", "C0OPS", "pool-a")
    assert ok.reason == "You are a requester for pool pool-a (policy top level)."


async def test_channel_rule_is_checked_before_membership(policy: Policy) -> None:
    groups = FakeGroups(GROUPS)
    decision = await Authorizer(policy, groups).can_request("U0ALICE", "C0OTHER", "pool-a")
    assert not decision.allowed
    assert groups.calls == []


async def test_direct_listing_needs_no_group_lookup(policy: Policy) -> None:
    groups = FakeGroups(GROUPS, broken=GROUPS)
    assert (await Authorizer(policy, groups).can_request("U0REQ", "C0OPS", "pool-a")).allowed
    assert groups.calls == []


@pytest.mark.parametrize(
    ("user", "pool", "requester", "two_person", "allowed"),
    [
        ("U0APP", "pool-a", "U0ALICE", True, True),  # listed directly
        ("U0LEAD", "pool-a", "U0ALICE", True, True),  # via S0LEADS
        ("U0ALICE", "pool-a", "U0REQ", True, False),  # a requester is not an approver
        ("U0APP", "prod-a", "U0ALICE", True, False),  # prod-* approvers replaced the top level
        ("U0SRE", "prod-a", "U0ALICE", True, True),
        ("U0BOTH", "prod-a", "U0BOTH", True, False),  # two-person: not one's own request
        ("U0BOTH", "prod-a", "U0BOTH", False, True),  # the request's stored flag decides
        ("U0LEAD", "dev-1", "U0LEAD", False, True),
    ],
)
async def test_can_approve(
    policy: Policy, user: str, pool: str, requester: str, two_person: bool, allowed: bool
) -> None:
    decision = await authorizer(policy).can_approve(user, request(pool, requester, two_person=two_person))
    assert decision.allowed is allowed, decision.reason


async def test_two_person_refusal_says_why(policy: Policy) -> None:
    decision = await authorizer(policy).can_approve("U0BOTH", request("prod-a", "U0BOTH"))
    assert decision.reason == (
        "You made this request, and pool prod-a needs someone else to approve it "
        '(two-person rule, policy pools[0] (match "prod-*")). Ask an approver: groups S0SRE.'
    )


async def test_can_cancel_is_for_the_requester_only(policy: Policy) -> None:
    auth = authorizer(policy)
    req = request("pool-a", "U0ALICE")
    assert (await auth.can_cancel("U0ALICE", req)).allowed
    for other in ("U0APP", "U0LEAD", "U0REQ"):
        decision = await auth.can_cancel(other, req)
        assert not decision.allowed
        assert "Only the requester (U0ALICE) can cancel request ulk-000000000001" in decision.reason


async def test_a_failed_group_lookup_refuses_and_says_so(policy: Policy) -> None:
    auth = authorizer(policy, broken={"S0ONCALL"})
    decision = await auth.can_request("U0ALICE", "C0OPS", "pool-a")
    assert not decision.allowed
    assert decision.reason == (
        "Could not check whether you are a requester for pool pool-a: looking up the members of S0ONCALL "
        "failed, so the answer is no for now. Try again in a minute."
    )
    approve = await authorizer(policy, broken={"S0SRE"}).can_approve("U0SRE", request("prod-a"))
    assert not approve.allowed
    assert "Could not check whether you are an approver for pool prod-a" in approve.reason


async def test_membership_via_a_working_group_survives_another_failing(policy: Policy) -> None:
    data = dict(GROUPS) | {"S0EXTRA": {"U0X"}}
    two_groups = parse_policy("requesters: {usergroups: [S0BROKEN, S0EXTRA]}\napprovers: {users: [U2]}\n")
    auth = Authorizer(two_groups, FakeGroups(data, broken={"S0BROKEN"}))
    assert (await auth.can_request("U0X", "C1", "p")).allowed
    refused = await auth.can_request("U0Y", "C1", "p")
    assert "Could not check" in refused.reason


async def test_real_cache_failure_fails_closed_without_raising(policy: Policy) -> None:
    async def fetch(group: str) -> list[str]:
        raise RuntimeError("xoxb-secret-token invalid_auth")

    auth = Authorizer(policy, CachedGroupDirectory(fetch, ttl_seconds=60))
    decision = await auth.can_request("U0ALICE", "C0OPS", "pool-a")
    assert not decision.allowed
    assert "xoxb" not in decision.reason
    assert "S0ONCALL" in decision.reason


async def test_describe(policy: Policy) -> None:
    auth = authorizer(policy)
    assert await auth.describe("U0REQ", "C0OPS") == (
        "You may request unlocks here for: all pools except prod-*.\nYou may approve: no pools."
    )
    assert await auth.describe("U0ALICE", "C0OPS") == (
        "You may request unlocks here for: all pools.\nYou may approve: no pools."
    )
    assert await auth.describe("U0ALICE", "C0ELSEWHERE") == (
        "You may request unlocks here for: dev-*.\n"
        "You may request prod-* only in C0OPS; all other pools only in C0OPS.\n"
        "You may approve: no pools."
    )
    assert await auth.describe("U0SRE", "C0OPS") == (
        "You may request unlocks here for: no pools.\n"
        "You may approve: prod-*.\n"
        "The two-person rule applies everywhere: someone else must approve your own requests."
    )
    assert await auth.describe("U0LEAD", "C0OPS") == (
        "You may request unlocks here for: no pools.\n"
        "You may approve: all pools except prod-*.\n"
        "The two-person rule applies for all other pools: someone else must approve your own requests."
    )


async def test_describe_mentions_failed_lookups(policy: Policy) -> None:
    text = await authorizer(policy, broken={"S0ONCALL"}).describe("U0ALICE", "C0OPS")
    assert text.startswith("You may request unlocks here for: no pools.")
    assert "Could not check your membership of S0ONCALL just now" in text


# -- the group cache ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_serves_within_ttl_and_refetches_after() -> None:
    calls: list[str] = []
    members = {"S1": ["U1"]}

    async def fetch(group: str) -> list[str]:
        calls.append(group)
        return list(members[group])

    clock = Clock()
    cache = CachedGroupDirectory(fetch, ttl_seconds=60, clock=clock)
    assert await cache.members("S1") == frozenset({"U1"})
    members["S1"] = ["U1", "U2"]
    clock.now += 59.9
    assert await cache.members("S1") == frozenset({"U1"})
    assert calls == ["S1"]
    clock.now += 0.1
    assert await cache.members("S1") == frozenset({"U1", "U2"})
    assert calls == ["S1", "S1"]
    cache.invalidate("S1")
    await cache.members("S1")
    assert len(calls) == 3


async def test_concurrent_misses_share_one_fetch() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def fetch(group: str) -> list[str]:
        calls.append(group)
        await release.wait()
        return ["U1"]

    cache = CachedGroupDirectory(fetch, ttl_seconds=60, clock=Clock())
    waiting = [asyncio.create_task(cache.members("S1")) for _ in range(10)]
    other = asyncio.create_task(cache.members("S2"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sorted(calls) == ["S1", "S2"]
    release.set()
    results = await asyncio.gather(*waiting, other)
    assert all(r == frozenset({"U1"}) for r in results)
    assert sorted(calls) == ["S1", "S2"]


async def test_a_waiter_giving_up_does_not_cancel_the_shared_fetch() -> None:
    release = asyncio.Event()

    async def fetch(group: str) -> list[str]:
        await release.wait()
        return ["U1"]

    cache = CachedGroupDirectory(fetch, ttl_seconds=60, clock=Clock())
    first = asyncio.create_task(cache.members("S1"))
    second = asyncio.create_task(cache.members("S1"))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == frozenset({"U1"})
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_fetch_is_shared_but_not_cached() -> None:
    release = asyncio.Event()
    outcomes: list[Exception | list[str]] = [RuntimeError("boom"), ["U1"]]
    calls = 0

    async def fetch(group: str) -> list[str]:
        nonlocal calls
        calls += 1
        await release.wait()
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cache = CachedGroupDirectory(fetch, ttl_seconds=60, clock=Clock())
    both = [asyncio.create_task(cache.members("S1")) for _ in range(2)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*both, return_exceptions=True)
    assert calls == 1
    for result in results:
        assert isinstance(result, GroupLookupFailed)
        assert result.usergroup_id == "S1"
        assert str(result) == "could not list the members of user group S1"
        assert isinstance(result.__cause__, RuntimeError)
    assert await cache.members("S1") == frozenset({"U1"})
    assert calls == 2
