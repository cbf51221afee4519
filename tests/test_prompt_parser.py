"""Prompt syntax (modules/prompts/parser.py) against A1111 v1.10.1 `prompt_parser.py` / `extra_networks.py` behaviour.

Expected values come from A1111's doctests and from running A1111's own functions on the same inputs.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modules.prompts import parser
from modules.prompts.parser import (
    ExtraNetworkParams,
    canonical_network_name,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt,
    parse_prompt_attention,
    parse_prompts,
    prompt_has_emphasis,
    split_and,
)


def schedule(prompt: str, steps: int = 10, hires_steps: int | None = None, old: bool = False) -> list[tuple[int, str]]:
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]


def alternating(steps: int, *texts: str) -> list[tuple[int, str]]:
    return [(step, texts[(step - 1) % len(texts)]) for step in range(1, steps + 1)]


# --- schedules: A1111's doctests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", alternating(10, "a", "(b:1.1)")),
        ("[fe|]male", alternating(10, "female", "male")),
        ("[fe|||]male", alternating(10, "female", "male", "male", "male")),
    ],
)
def test_schedule_a1111_doctests(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert schedule(prompt) == expected


def test_schedule_stale_a1111_doctest_follows_a1111_code() -> None:
    # A1111's doctest ("not handling this right now") claims [[5, 'a  c'], [10, 'a {b|d{ c']], but its code does not
    # parse "|" outside an alternation, so A1111 really uses the prompt literally; so do we.
    assert schedule("a [{b|d{:.5] c") == [(10, "a [{b|d{:.5] c")]


def test_schedule_hires_doctests() -> None:
    assert schedule("a [b:.5] c", 10, 10) == [(10, "a b c")]
    assert schedule("a [b:1.5] c", 10, 10) == [(5, "a  c"), (10, "a b c")]


def test_schedule_a1111_header_example() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
        "[ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


# --- schedules: constructs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[a:b:3]", [(3, "a"), (10, "b")]),
        ("[a::3]", [(3, "a"), (10, "")]),  # [from::when]
        ("[:b:3]", [(3, ""), (10, "b")]),  # empty "from" = [to:when]
        ("[a:b:+2]", [(2, "a"), (10, "b")]),
        ("[a:b:1]", [(1, "a"), (10, "b")]),
        ("[a:b:0]", [(10, "b")]),  # never "a"
        ("[a:b:-1]", [(10, "b")]),
        ("[a:b:1.0]", [(10, "a")]),  # a "." makes it a fraction: all 10 steps
        ("[a:b:2.0]", [(10, "a")]),  # fraction 2.0 = step 20, clamped to 10
        ("[a:b:5.]", [(10, "a")]),
        ("[a:b:1e1]", [(10, "a")]),  # no ".": absolute step 10
        ("[a:b:0.25][c:d:0.75]", [(2, "ac"), (7, "bc"), (10, "bd")]),  # int() truncates 2.5 and 7.5
        ("[a:b:3 ]", [(3, "a"), (10, "b")]),
        ("[a:b: 3 ]", [(3, "a"), (10, "b")]),
        ("[a:b:3\n]", [(3, "a"), (10, "b")]),
        ("[a: b :3]", [(3, "a"), (10, " b ")]),
        ("a\nb [c:\nd:3]", [(3, "a\nb c"), (10, "a\nb \nd")]),
        ("[a:b:2](c:1.5)", [(2, "a(c:1.5)"), (10, "b(c:1.5)")]),  # emphasis is left for parse_prompt_attention
        ("(a:[b:c:3])", [(3, "(a:b)"), (10, "(a:c)")]),
        ("[a\\:b:3]", [(3, ""), (10, "a\\:b")]),  # escapes are kept as typed
        ("\\[a:b:3\\]", [(10, "\\[a:b:3\\]")]),
        ("[a:b:3]]", [(3, "a]"), (10, "b]")]),
        ("[[a:b:3]", [(3, "[a"), (10, "[b")]),
        ("a]b[c:2]", [(2, "a]b"), (10, "a]bc")]),
        ("[a|b|c]", alternating(10, "a", "b", "c")),
        ("[a||b]", alternating(10, "a", "", "b")),
        ("[|]", alternating(10, "")),
        ("[[a|b]:c:3]", [(1, "a"), (2, "b"), (3, "a")] + [(step, "c") for step in range(4, 11)]),
        ("[a|[b:c:2]]", [(1, "a"), (2, "b")] + [(step, "a" if step % 2 else "c") for step in range(3, 11)]),
    ],
)
def test_schedule_constructs(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert schedule(prompt) == expected


def test_schedule_hires_pass() -> None:
    # Integers count from the start of the first pass (10 steps), fractions have 1.0 at the hires start.
    assert schedule("[a:b:12]", 10, 5) == [(2, "a"), (5, "b")]
    assert schedule("[a:b:2]", 10, 5) == [(5, "b")]  # switched during the first pass already
    assert schedule("[a:b:1.5]", 10, 5) == [(2, "a"), (5, "b")]
    assert schedule("[a|b]", 10, 4) == alternating(4, "a", "b")


def test_schedule_old_scheduling() -> None:
    # Old rule: any value below 1 is a fraction, anything else absolute, "." or not; hires_steps is then ignored.
    assert schedule("[a:b:0.5]", 10, None, True) == [(5, "a"), (10, "b")]
    assert schedule("[a:b:2.0]", 10, None, True) == [(2, "a"), (10, "b")]
    assert schedule("[a:b:0.5]", 10, 5, True) == [(5, "a"), (10, "b")]
    assert schedule("[a:b:12]", 10, 5, True) == [(10, "a")]


@pytest.mark.parametrize(
    "prompt",
    [
        "[a:b:c:d]",
        "[:]",
        "[::]",
        "[a:b:]",
        "[a:b:c]",
        "a|b",
        "[a|b",
        "(a|b)",
        "[a|b:3]",
        "x\\",
        "((a:b:3))",
        "x [a:b:3] |",
    ],
)
def test_schedule_malformed_is_literal(prompt: str) -> None:
    assert schedule(prompt) == [(10, prompt)]


def test_schedule_numbers_a1111_cannot_handle() -> None:
    # A1111 raises OverflowError on int(inf); an infinite step never switches, a negative infinite one at once.
    assert schedule("[a:b:1e999]") == [(10, "a")]
    assert schedule("[a:b:-1e999]") == [(10, "b")]
    assert schedule("[a:b:1.0e999]", 0) == [(0, "a")]  # inf * 0 steps = nan: read as step 0


def test_schedule_deep_nesting() -> None:
    depth = 40
    assert schedule("[" * depth + "a:b:3" + "]" * depth) == [
        (3, "[" * (depth - 1) + "a" + "]" * (depth - 1)),
        (10, "[" * (depth - 1) + "b" + "]" * (depth - 1)),
    ]
    nested_edits = "x"
    for step in range(1, depth + 1):
        nested_edits = f"[{nested_edits}:{step}:{step}]"
    result = schedule(nested_edits, 50)
    assert result[0] == (1, "x") and result[-1] == (50, str(depth))
    assert schedule("(" * depth + "[a:b:3]") == [(3, "(" * depth + "a"), (10, "(" * depth + "b")]


def test_schedule_recursion_error_falls_back_to_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_deep(_prompt: str) -> None:
        raise RecursionError

    monkeypatch.setattr(parser._schedule_parser, "parse", too_deep)
    parser._parse_schedule_tree.cache_clear()
    parser._prompt_schedule.cache_clear()
    try:
        assert schedule("[a:b:3] recursion test") == [(10, "[a:b:3] recursion test")]
    finally:
        parser._parse_schedule_tree.cache_clear()
        parser._prompt_schedule.cache_clear()


def test_schedule_batch_and_independent_results() -> None:
    result = get_learned_conditioning_prompt_schedules(["a", "[b:c:2]", "a", ""], 4)
    assert result == [[(4, "a")], [(2, "b"), (4, "c")], [(4, "a")], [(4, "")]]
    result[0].append((9, "mutated"))
    assert result[2] == [(4, "a")]
    assert get_learned_conditioning_prompt_schedules(["a"], 4) == [[(4, "a")]]  # the cache was not touched
    assert get_learned_conditioning_prompt_schedules([], 4) == []


def test_schedule_zero_steps() -> None:
    assert schedule("[a:b:3]", 0) == [(0, "a")]  # the switch step is clamped to 0, and step 0 <= 0
    assert schedule("[a|b]", 0) == [(0, "b")]


def test_schedule_long_plain_prompt_is_fast() -> None:
    prompt = "masterpiece, best quality, (detailed face:1.2), a photo of a cat, " * 20
    started = time.perf_counter()
    assert schedule(prompt, 30) == [(30, prompt)]
    assert time.perf_counter() - started < 0.5


# --- attention --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A1111's doctests
        ("normal text", [["normal text", 1.0]]),
        ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
        ("(unbalanced", [["unbalanced", 1.1]]),
        ("\\(literal\\]", [["(literal]", 1.0]]),
        ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ["a ", 1.0],
                ["house", 1.5730000000000004],
                [" ", 1.1],
                ["on", 1.0],
                [" a ", 1.1],
                ["hill", 0.55],
                [", sun, ", 1.1],
                ["sky", 1.4641000000000006],
                [".", 1.1],
            ],
        ),
        # more
        ("", [["", 1.0]]),
        ("()", [["", 1.0]]),
        ("[]", [["", 1.0]]),
        ("[x]", [["x", 0.9090909090909091]]),
        ("[[x]]", [["x", 0.8264462809917354]]),
        ("((x))", [["x", 1.2100000000000002]]),
        ("[(x)]", [["x", 1.0]]),
        ("((a)", [["a", 1.2100000000000002]]),
        ("(a))", [["a", 1.1], [")", 1.0]]),
        ("a)b]c", [["a)b]c", 1.0]]),
        ("(x : 1.5 )", [["x ", 1.5]]),
        ("(a:-1)", [["a", -1.0]]),
        ("(a:0)", [["a", 0.0]]),
        ("(a:2)(b:2)", [["ab", 2.0]]),
        ("a:b", [["a:b", 1.0]]),
        ("(a:b)", [["a:b", 1.1]]),
        ("(a [b] c)", [["a ", 1.1], ["b", 1.0], [" c", 1.1]]),
        ("[a:b:3]", [["a:b:3", 0.9090909090909091]]),
        ("a\\\\b", [["a\\b", 1.0]]),
        ("a\\b", [["ab", 1.0]]),  # a lone backslash vanishes
        ("a\\", [["a", 1.0]]),
        ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("a BREAK\nb", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("BREAK", [["", 1.0], ["BREAK", -1], ["", 1.0]]),
        ("aBREAK b", [["aBREAK b", 1.0]]),
        ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),  # a bracketed BREAK is multiplied too
        ("(x:1.5 BREAK y)", [["x:1.5", 1.1], ["BREAK", -1.1], ["y", 1.1]]),
        ("(BREAK:0)", [["BREAK", 0.0]]),  # 0 == -0.0: the marker merges with its neighbours
        # A1111 raises ValueError on these weights; the bracket closes with no weight instead.
        ("(a:1.2.3)", [["a", 1.0]]),
        ("x (a:.) (b)", [["x a ", 1.0], ["b", 1.1]]),
    ],
)
def test_parse_prompt_attention(text: str, expected: list[list[str | float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_parse_prompt_attention_break_is_int_minus_one() -> None:
    marker = parse_prompt_attention("a BREAK b")[1]
    assert marker == ["BREAK", -1] and type(marker[1]) is int


# --- AND --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a AND b", [("a", 1.0), (" b", 1.0)]),  # trailing whitespace goes, leading stays
        ("a:0.5 AND b : -2 ", [("a", 0.5), (" b", -2.0)]),
        ("a:1. AND b:.25", [("a", 1.0), (" b", 0.25)]),
        ("a:+3", [("a", 3.0)]),
        ("ANDROID AND android", [("ANDROID", 1.0), (" android", 1.0)]),
        ("a AND", [("a", 1.0), ("", 1.0)]),
        ("(x:1.2)", [("(x:1.2)", 1.0)]),
        ("a:1e5", [("a:1e5", 1.0)]),
        ("line one\nline two:2\n", [("line one\nline two", 2.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_split_and(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


def test_get_multicond_prompt_list() -> None:
    res_indexes, flat, indexes = get_multicond_prompt_list(["a AND b:0.5", "a AND c:2", "b"])
    assert res_indexes == [[(0, 1.0), (1, 0.5)], [(0, 1.0), (2, 2.0)], [(3, 1.0)]]
    assert flat == ["a", " b", " c", "b"]
    assert indexes == {"a": 0, " b": 1, " c": 2, "b": 3}
    assert get_multicond_prompt_list([]) == ([], [], {})


# --- emphasis detection -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", False),
        ("", False),
        ("a BREAK b", False),
        ("\\(literal\\)", False),
        ("(a)", True),
        ("[a]", True),
        ("(a:1.0)", False),
        ("(a:0.9)", True),
        ("[(a)]", False),
        ("(unclosed", True),
        ("()", False),
    ],
)
def test_prompt_has_emphasis(text: str, expected: bool) -> None:
    assert prompt_has_emphasis(text) is expected


# --- extra networks ---------------------------------------------------------------------------------------------------


def test_parse_prompt_extra_networks() -> None:
    text, networks = parse_prompt("a cat <lora:cute:0.5:0.3>, <hypernet:anime>  <lora:other> <lyco:x:te=0.5:unet=1>")
    assert text == "a cat ,    "
    assert list(networks) == ["lora", "hypernet", "lyco"]
    assert networks["lora"] == [ExtraNetworkParams(["cute", "0.5", "0.3"]), ExtraNetworkParams(["other"])]
    assert networks["lora"][0].positional == ["cute", "0.5", "0.3"] and networks["lora"][0].named == {}
    assert networks["hypernet"][0].items == ["anime"]
    lyco = networks["lyco"][0]
    assert lyco.items == ["x", "te=0.5", "unet=1"]
    assert lyco.positional == ["x"]
    assert lyco.named == {"te": "0.5", "unet": "1"}


def test_extra_network_params_quirks() -> None:
    params = ExtraNetworkParams(["name", "a=b=c", "=v", "k="])
    assert params.positional == ["name", "a=b=c"]  # two "=" (A1111's split("=", 2) gives 3 parts): positional
    assert params.named == {"": "v", "k": ""}
    assert ExtraNetworkParams() == ExtraNetworkParams([]) and ExtraNetworkParams().items == []
    assert ExtraNetworkParams(["a", "b=1"]) != ExtraNetworkParams(["a", "b=2"])


@pytest.mark.parametrize(
    "prompt",
    ["<lora>", "<lora:>", "<:x>", "<lo-ra:x>", "<lora:x", "lora:x>", "a < b > c"],
)
def test_parse_prompt_not_a_tag(prompt: str) -> None:
    assert parse_prompt(prompt) == (prompt, {})


def test_parse_prompt_tag_edge_cases() -> None:
    assert parse_prompt("<lora:a>b>") == ("b>", {"lora": [ExtraNetworkParams(["a"])]})
    assert parse_prompt("<lora:a::>") == ("", {"lora": [ExtraNetworkParams(["a", "", ""])]})
    assert parse_prompt("<<lora:a>>") == ("<>", {"lora": [ExtraNetworkParams(["a"])]})
    assert parse_prompt("<lora:my lora (v2):0.7>") == ("", {"lora": [ExtraNetworkParams(["my lora (v2)", "0.7"])]})
    assert parse_prompt("<LoRA_2:x>")[1] == {"LoRA_2": [ExtraNetworkParams(["x"])]}


def test_parse_prompts_first_prompt_only() -> None:
    prompts, networks = parse_prompts(["one <lora:first:1>", "two <lora:second:0.5> <hypernet:h>", "three"])
    assert prompts == ["one ", "two  ", "three"]
    assert networks == {"lora": [ExtraNetworkParams(["first", "1"])]}
    assert parse_prompts(["no tags", "<lora:ignored>"]) == (["no tags", ""], {})
    assert parse_prompts([]) == ([], {})


def test_negative_prompt_tags_stay() -> None:
    # Only positive prompts go through parse_prompts: a negative keeps its tags (and they get encoded as text).
    positive, negative = "cat <lora:a:1>", "blurry <lora:bad:1>"
    prompts, networks = parse_prompts([positive])
    assert prompts == ["cat "] and list(networks) == ["lora"]
    assert negative == "blurry <lora:bad:1>"


def test_canonical_network_name() -> None:
    assert canonical_network_name("lyco") == "lora"
    assert canonical_network_name("lora") == "lora"
    assert canonical_network_name("hypernet") == "hypernet"
    assert canonical_network_name("LYCO") == "LYCO"  # tag names are case-sensitive in A1111


# --- properties -------------------------------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    list("ab []():|\\<>=,.0123456789-+e\n")
    + ["BREAK", " AND ", ":0.5", "1.5", ".5", "[a:b:0.5]", "[x|y]", "(c:1.2)", "<lora:n:0.5>", "1e999"]
)
_SOUP = st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=30).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_SOUP,
    base_steps=st.integers(0, 40),
    hires_steps=st.one_of(st.none(), st.integers(0, 40)),
    old=st.booleans(),
)
def test_property_no_input_raises(text: str, base_steps: int, hires_steps: int | None, old: bool) -> None:
    schedules = get_learned_conditioning_prompt_schedules([text, text], base_steps, hires_steps, old)
    steps = base_steps if hires_steps is None or old else hires_steps
    for prompt_schedule in schedules:
        ends = [end for end, _text in prompt_schedule]
        assert ends[-1] == steps
        assert ends == sorted(set(ends))
        assert all(isinstance(part, str) for _end, part in prompt_schedule)
    assert schedules[0] == schedules[1]

    runs = parse_prompt_attention(text)
    assert runs and all(isinstance(run[0], str) and isinstance(run[1], float | int) for run in runs)
    # Emphasis detection agrees with the runs (a real BREAK marker does not count).
    assert prompt_has_emphasis(text) == any(w != 1.0 for t, w in runs if [t, w] != ["BREAK", -1])

    assert all(isinstance(part, str) and isinstance(weight, float) for part, weight in split_and(text))
    res_indexes, flat, indexes = get_multicond_prompt_list([text, text + " AND x"])
    assert res_indexes[1][:-1] == res_indexes[0] and [flat[i] for i in indexes.values()] == flat

    stripped, networks = parse_prompt(text)
    assert isinstance(stripped, str) and len(stripped) <= len(text)
    assert parse_prompts([text, "<lora:z>"]) == ([stripped, ""], networks)
