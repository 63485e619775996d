"""Parsing the slash command's text: what Slack really sends, and the messages a tired person reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.requests import (
    NAME_RE,
    CommandError,
    HelpCommand,
    OpenModal,
    ParsedCommand,
    check_node_limit,
    parse_command,
    usage,
    validate_name,
)


def parsed(text: str) -> ParsedCommand:
    result = parse_command(text)
    assert isinstance(result, ParsedCommand), result
    return result


def error(text: str) -> str:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert str(info.value) == info.value.message
    return str(info.value)


# -- the simple shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\u200b"])
def test_empty_text_opens_the_modal(text: str) -> None:
    assert parse_command(text) == OpenModal()


@pytest.mark.parametrize("text", ["help", "  help  ", "-h", "--help", "pool-a n1 --help", "pool-a -h n1"])
def test_help(text: str) -> None:
    assert parse_command(text) == HelpCommand()


def test_quoted_help_is_a_pool_name() -> None:
    assert "No nodes given for pool `help`" in error('"help"')


def test_pool_and_nodes() -> None:
    assert parse_command("pool-prod-a node-1 node-2") == ParsedCommand(
        pool="pool-prod-a", nodes=("node-1", "node-2"), duplicates_dropped=0, reason=None, dry_run=False
    )


@pytest.mark.parametrize(
    "text",
    [
        "pool-a n1,n2,n3",
        "pool-a n1, n2, n3",
        "pool-a\tn1\tn2\tn3",
        "pool-a\nn1\nn2\nn3\n",
        "pool-a n1,\nn2,\n n3,",
        "pool-a, n1 , n2,,n3,,,",
        "pool-a,n1,n2,n3",
        "pool-a \u00a0n1\u00a0n2 n3",  # no-break spaces from copy and paste
        'pool-a "n1, n2" n3',
    ],
)
def test_separators(text: str) -> None:
    assert parsed(text).nodes == ("n1", "n2", "n3")
    assert parsed(text).pool == "pool-a"


def test_slack_auto_links_are_unwrapped() -> None:
    # the label is what the user typed; a link typed with its scheme has no label
    cmd = parsed("pool-a <http://node-1.az1|node-1.az1>,n2 --reason see <https://x.io/t/1> or <http://y.io|y.io>")
    assert cmd.nodes == ("node-1.az1", "n2")
    assert cmd.reason == "see https://x.io/t/1 or y.io"


def test_duplicates_dropped_first_order_kept_and_counted() -> None:
    cmd = parsed("pool-a n2 n1 n2 n3 n1 n2")
    assert cmd.nodes == ("n2", "n1", "n3")
    assert cmd.duplicates_dropped == 3


# -- reason and flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "nodes"),
    [
        ('pool-a n1 --reason "disk check" n2', "disk check", ("n1", "n2")),
        ("pool-a n1 --reason 'disk check' n2", "disk check", ("n1", "n2")),
        ('pool-a n1 --reason="disk check" n2', "disk check", ("n1", "n2")),
        ("pool-a n1 --reason=disk", "disk", ("n1",)),
        ('--reason "disk check" pool-a n1', "disk check", ("n1",)),
        ("pool-a n1 n2 --reason disk check after INC-12", "disk check after INC-12", ("n1", "n2")),
        ("pool-a n1 --reason=disk check --dry-run", "disk check", ("n1",)),
        ("pool-a n1 --reason “disk check” n2", "disk check", ("n1", "n2")),  # Slack's smart quotes
        ("pool-a n1 --reason ‘disk check’ n2", "disk check", ("n1", "n2")),
        ("pool-a n1 —reason “disk check”", "disk check", ("n1",)),  # "--" autocorrected to an em dash
        ("pool-a n1 –reason “disk check”", "disk check", ("n1",)),  # … or an en dash
        ("pool-a n1 --reason node’s disk", "node's disk", ("n1",)),  # an apostrophe is not a quote
        ("pool-a n1 --reason node's disk", "node's disk", ("n1",)),
        ("pool-a n1 --reason ticket #123", "ticket #123", ("n1",)),  # no shell comments
        ('pool-a n1 --reason "a  b\nc"', "a  b\nc", ("n1",)),
        ('pool-a n1 --reason "--dry-run is not a flag here"', "--dry-run is not a flag here", ("n1",)),
    ],
)
def test_reason(text: str, reason: str, nodes: tuple[str, ...]) -> None:
    cmd = parsed(text)
    assert (cmd.reason, cmd.nodes) == (reason, nodes)


def test_slack_escaping_is_undone_in_the_reason() -> None:
    # Slack sends `&`, `<`, `>` as entities; a literal "&lt;" typed by the user arrives as "&amp;lt;".
    cmd = parsed("pool-a n1 --reason &lt;disk&gt; &amp; fans, typed &amp;lt; &copy;")
    assert cmd.reason == "<disk> & fans, typed &lt; &copy;"


def test_dry_run_anywhere() -> None:
    assert parsed("--dry-run pool-a n1").dry_run
    assert parsed("pool-a --dry-run n1").dry_run
    assert parsed("pool-a n1 --dry-run --dry-run").dry_run
    assert not parsed("pool-a n1").dry_run


def test_same_reason_twice_is_accepted() -> None:
    assert parsed("pool-a n1 --reason x --reason=x").reason == "x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool-a n1 --reason", "`--reason` needs some text after it"),
        ("pool-a n1 --reason --dry-run", "`--reason` needs some text after it"),
        ('pool-a n1 --reason ""', "The reason is empty"),
        ("pool-a n1 --reason=", "The reason is empty"),
        ("pool-a n1 --reason '   '", "The reason is empty"),
        ("pool-a n1 --reason a --reason b", "`--reason` is given 2 times (`a` and `b`); give it once."),
        ("pool-a n1 --dryrun", "Unknown option `--dryrun`. Did you mean `--dry-run`?"),
        ("pool-a n1 --force", "Unknown option `--force`. The options are"),
        ("pool-a n1 -f", "Unknown option `-f`."),
        ("pool-a n1 --dry-run=yes", "`--dry-run` takes no value"),
        ('pool-a n1 --reason "disk check', 'The " quote before `"disk check` is never closed'),
        ("pool-a n1 --reason 'disk check", "The ' quote before `'disk check` is never closed"),
        ("pool-a n1 --reason “disk check", "is never closed"),
        ("pool-a", "No nodes given for pool `pool-a`: list them after the pool, e.g. `/unlock-nodes pool-a"),
        ("pool-a ,, ,", "No nodes given for pool `pool-a`"),
        ("--dry-run", "Name a pool and the nodes to unlock"),
        ('--reason "x"', "Name a pool and the nodes to unlock"),
        ("pool-a n1 --reason " + "x" * 501, "The reason is 501 characters long; keep it under 500"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    assert expected in error(text)


def test_an_unquoted_reason_before_the_pool_explains_itself() -> None:
    # the reason runs to the end, so there is nothing left: the error must not be about node names
    assert "Name a pool and the nodes to unlock" in error("--reason disk pool-a n1")


# -- names -------------------------------------------------------------------------------------------------


def test_bad_node_name_says_which_and_why() -> None:
    assert error("pool-a n1 Os-Node-1") == (
        "`Os-Node-1` is not a valid node name: it has upper-case letters (did you mean `os-node-1`?). "
        "Names use lower-case letters, digits, '-' and '.', 1–63 characters, "
        "starting and ending with a letter or digit."
    )


def test_bad_pool_name() -> None:
    message = error("Pool_A n1")
    assert message.startswith("`Pool_A` is not a valid pool name: it has upper-case letters and contains '_'.")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a_b", "contains '_'"),
        ("nöde", "contains 'ö'"),
        ("node.", "ends with '.'"),
        (".node", "starts with '.'"),
        ("x" * 64, "is 64 characters long"),
        ("a/b", "contains '/'"),
    ],
)
def test_validate_name(name: str, why: str) -> None:
    with pytest.raises(CommandError, match="not a valid node name") as info:
        validate_name("node", name)
    assert why in str(info.value)


def test_many_bad_names_show_a_few_and_count_the_rest() -> None:
    message = error("pool-a ok-1 A_1 B c. d. e. f. ok-2 B")
    assert message.startswith("6 node names are not valid: `A_1`: it has upper-case letters and contains '_'; ")
    assert "`B`: it has upper-case letters (did you mean `b`?); `c.`: it ends with '.'; and 3 more." in message
    assert "d." not in message.split("and 3 more")[0]


def test_echoed_names_cannot_mention_anyone() -> None:
    # "<!channel>" would notify a whole channel if echoed raw into mrkdwn
    message = error("pool-a &lt;!channel&gt;")
    assert "<!channel>" not in message
    assert "`&lt;!channel&gt;`" in message


def test_long_names_are_shortened_in_messages() -> None:
    message = error("pool-a " + "y" * 300)
    assert "y" * 80 not in message
    assert "is 300 characters long" in message


@pytest.mark.parametrize("name", ["a", "0", "a-b", "a.b", "node-0001.az1", "x" * 63, "9x9"])
def test_valid_names(name: str) -> None:
    validate_name("node", name)
    assert NAME_RE.match(name)


def test_name_re_rejects_a_trailing_newline() -> None:
    assert NAME_RE.match("node\n") is None


# -- limits and usage --------------------------------------------------------------------------------------


def test_check_node_limit() -> None:
    check_node_limit(200, 200)
    with pytest.raises(CommandError, match=r"That is 201 nodes; this pool allows at most 200 per request"):
        check_node_limit(201, 200)
    with pytest.raises(CommandError, match=r"pool `prod-a` allows at most 5"):
        check_node_limit(6, 5, pool="prod-a")


def test_usage_names_the_command() -> None:
    text = usage("/unlock-test")
    assert '`/unlock-test <pool> <node> [<node> …] [--reason "…"] [--dry-run]`' in text
    assert "`/unlock-test help`" in text
    assert usage().count("/unlock-nodes") >= 3


# -- property: any valid list survives any separators ---------------------------------------------------

names = st.from_regex(NAME_RE, fullmatch=True)
separators = st.lists(st.sampled_from([" ", ",", "\t", "\n", ", ", ",\n", " ,", "\u00a0", "\r\n"]), min_size=1).map(
    "".join
)


@given(
    pool=names.filter(lambda n: n != "help"),
    nodes=st.lists(names, min_size=1, max_size=30),
    seps=st.lists(separators, min_size=31, max_size=31),
    lead=st.sampled_from(["", " ", "\n"]),
    trail=st.sampled_from(["", ",", " ,\n", "\t"]),
    reason=st.none()
    | st.text(
        st.characters(categories=("L", "N", "P", "Zs"), exclude_characters='"“”„‟″〝〞＂‘’‚‛′＇&'),
        max_size=200,
    ),
)
def test_valid_names_with_any_separators_parse_back_deduplicated(
    pool: str, nodes: list[str], seps: list[str], lead: str, trail: str, reason: str | None
) -> None:
    body = pool + seps[0] + "".join(n + s for n, s in zip(nodes, seps[1:], strict=False))
    text = lead + body + trail
    if reason is not None:
        reason = reason.strip() or "x"
        text += f' --reason "{reason}"'
    cmd = parsed(text)
    assert cmd.pool == pool
    assert cmd.nodes == tuple(dict.fromkeys(nodes))
    assert cmd.duplicates_dropped == len(nodes) - len(cmd.nodes)
    assert cmd.reason == reason
