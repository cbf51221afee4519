"""A1111's prompt syntax: prompt editing / alternation schedules, attention weights, AND, and extra-network tags.

Matches `modules/prompt_parser.py` and `modules/extra_networks.py` of A1111 stable-diffusion-webui v1.10.1. Only
texts and step boundaries are produced here; encoding them is the conditioning code's job.

Schedule example (steps=100)::

    "a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
    -> [(25, "a mountain and an oak in foreground"), (60, "a lake and an oak in foreground"),
        (75, "a lake and an oak"), (100, "a lake and a christmas tree")]

Every public function accepts any text without raising: where A1111 would raise (weights such as "(a:1.2.3)", steps
such as "[a:b:1e999]", nesting too deep for the recursion limit) a documented fallback is used instead.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import lark

# A1111's grammar, unchanged in meaning: the ambiguity resolution of lark's Earley parser decides which brackets are
# edits, alternations or plain emphasis, so the rules (and their order) must stay as they are for identical results.
# `start` keeps every token (`!`) so that brackets that belong to no construct stay in the text.
_SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""

# Earley with lark's defaults (dynamic lexer, ambiguity="resolve", maybe_placeholders=True), as A1111 builds it.
_schedule_parser = lark.Lark(_SCHEDULE_GRAMMAR)

# Parsing is the slow part (Earley, ~0.3 s for a prompt with 80 bracket groups); prompts repeat across batches and
# generations, so parse trees and finished schedules are cached.
_CACHE_SIZE = 256


# --- prompt editing and alternation ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_schedule_tree(prompt: str) -> lark.Tree | None:
    """The parse tree of a prompt, or None when it does not parse (the prompt is then used literally)."""
    try:
        return _schedule_parser.parse(prompt)
    except (lark.exceptions.LarkError, RecursionError):
        # A1111 catches only LarkError; a RecursionError (absurd nesting) would crash it. Literal use is the same
        # outcome A1111 gives any other unparsable prompt.
        return None


def _switch_step(number: str, steps: int, int_offset: int, float_offset: float, use_old_scheduling: bool) -> int:
    """The last step at which the "before" text of `[before:after:number]` is used (A1111's `collect_steps`).

    A number with a "." is a fraction of `steps` (in a hires pass, 1.0 is where the hires pass starts: 1.5 is its
    middle), any other number an absolute step (in a hires pass counted from the start of the first pass). The old
    scheduling treats every value below 1 as a fraction instead.
    """
    value = float(number)
    if use_old_scheduling:
        value = value * steps if value < 1 else value
    elif "." in number:
        value = (value - float_offset) * steps
    else:
        value = value - int_offset
    # A1111 does `min(steps, int(value))`, which raises for "1e999" (inf) or 1e999*0 (nan); for finite values the
    # order of min and int makes no difference. Infinite values mean "never switch" / "switch at once".
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return steps if value > 0 else min(steps, 0)
    return min(steps, int(value))


def _text_at_step(tree: lark.Tree, step: int, switch_steps: dict[int, int]) -> str:
    """The prompt text at one step: A1111's `AtStep` transformer, as an explicit-stack walk (no recursion limit).

    Scheduled and alternate nodes contribute only the chosen sub-prompt (their brackets, separators and numbers
    vanish); every other node contributes all its tokens, so unmatched brackets and emphasis syntax stay in the text.
    """
    pieces: list[str] = []
    stack: list[lark.Tree | lark.Token | None] = [tree]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if isinstance(node, lark.Token):
            pieces.append(node.value)
            continue
        if node.data == "scheduled":
            before, after = node.children[0], node.children[1]
            chosen = before if step <= switch_steps[id(node)] else after
            stack.append(chosen)
        elif node.data == "alternate":
            options = node.children  # a None option is an empty alternative, as in "[fe|]male"
            stack.append(options[(step - 1) % len(options)])
        else:
            stack.extend(reversed(node.children))
    return "".join(pieces)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _prompt_schedule(
    prompt: str, steps: int, int_offset: int, float_offset: float, use_old_scheduling: bool
) -> tuple[tuple[int, str], ...]:
    # Without "[" there can be no edit or alternation, and without ":" or "|" neither can match: the text is the
    # prompt itself whether it parses or not, so the Earley parse is skipped.
    if "[" not in prompt or (":" not in prompt and "|" not in prompt):
        return ((steps, prompt),)
    tree = _parse_schedule_tree(prompt)
    if tree is None:
        return ((steps, prompt),)

    boundaries = {steps}
    switch_steps: dict[int, int] = {}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            number = node.children[-2]  # children: before, after, whitespace, NUMBER, whitespace
            when = _switch_step(str(number), steps, int_offset, float_offset, use_old_scheduling)
            switch_steps[id(node)] = when
            if when >= 1:
                boundaries.add(when)
        elif node.data == "alternate":
            boundaries.update(range(1, steps + 1))
    return tuple((step, _text_at_step(tree, step, switch_steps)) for step in sorted(boundaries))


def get_learned_conditioning_prompt_schedules(
    prompts: list[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[tuple[int, str]]]:
    """For each prompt, its schedule: (end_at_step, text) pairs in step order, the last ending at the step count.

    `text` is used for steps up to and including `end_at_step`. With `hires_steps` (and the new scheduling) the
    schedule is for the hires pass: its step count is `hires_steps`, an integer `when` counts from the start of the
    first pass (so steps of the first pass are already over) and a fractional `when` has 1.0 at the hires start.

    >>> get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)
    [[(3, 'a '), (10, 'a b')]]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, float_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, float_offset, steps = base_steps, 1.0, hires_steps
    return [list(_prompt_schedule(prompt, steps, int_offset, float_offset, use_old_scheduling)) for prompt in prompts]


# --- AND (composable diffusion) ---------------------------------------------------------------------------------------

_RE_AND = re.compile(r"\bAND\b")
# Text, then an optional ":weight" at the very end; the text loses trailing whitespace but keeps leading whitespace.
_RE_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """The AND-separated sub-prompts of a prompt with their weights (default 1.0), e.g. "a AND b:0.5"."""
    parts: list[tuple[str, float]] = []
    for subprompt in _RE_AND.split(prompt):
        match = _RE_WEIGHT.search(subprompt)
        if match is None:  # cannot happen (the pattern matches any text); kept as A1111 has it
            parts.append((subprompt, 1.0))
            continue
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def get_multicond_prompt_list(prompts: list[str]) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's AND splitting of a batch: (per prompt [(index into the flat list, weight)], flat list of unique
    sub-prompt texts, text -> index)."""
    res_indexes: list[list[tuple[int, float]]] = []
    prompt_flat_list: list[str] = []
    prompt_indexes: dict[str, int] = {}
    for prompt in prompts:
        indexes: list[tuple[int, float]] = []
        for text, weight in split_and(prompt):
            index = prompt_indexes.get(text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


# --- attention (emphasis) --------------------------------------------------------------------------------------------

_RE_ATTENTION = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\] | \\\\ | \\
    | \( | \[
    | :\s*([+-]?[.\d]+)\s*\)
    | \) | ]
    | [^\\()\[\]:]+
    | :
    """,
    re.VERBOSE,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
_ROUND_BRACKET_MULTIPLIER = 1.1
_SQUARE_BRACKET_MULTIPLIER = 1 / 1.1


def parse_prompt_attention(text: str) -> list[list[str | float]]:
    """Split text into [text, weight] runs (A1111's `parse_prompt_attention`).

    `(x)` multiplies by 1.1, `[x]` by 1/1.1, `(x:w)` by w; nesting multiplies; brackets left open apply up to the end;
    `\\( \\) \\[ \\] \\\\` are literal characters (a lone backslash vanishes); `BREAK` becomes ["BREAK", -1] (multiplied
    like any run when inside brackets, so a bracketed BREAK is no longer -1); runs of equal weight are merged.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for run in res[start:]:
            run[1] *= multiplier

    for match in _RE_ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            start = round_brackets.pop()
            try:
                multiply_range(start, float(weight))
            except ValueError:
                # "(a:1.2.3)" or "(a:.)": A1111 raises; the bracket closes without a weight instead (as
                # prompt_has_emphasis reads it).
                pass
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), _ROUND_BRACKET_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), _SQUARE_BRACKET_MULTIPLIER)
        else:
            for index, part in enumerate(_RE_BREAK.split(token)):
                if index > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for start in round_brackets:
        multiply_range(start, _ROUND_BRACKET_MULTIPLIER)
    for start in square_brackets:
        multiply_range(start, _SQUARE_BRACKET_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    # Merge neighbouring runs of identical weight.
    index = 0
    while index + 1 < len(res):
        if res[index][1] == res[index + 1][1]:
            res[index][0] += res[index + 1][0]
            res.pop(index + 1)
        else:
            index += 1
    return res


def prompt_has_emphasis(text: str) -> bool:
    """True if some text of the prompt gets a weight other than 1 (what makes A1111 write "Emphasis" to infotext)."""
    return any(weight != 1.0 and run != "BREAK" for run, weight in parse_prompt_attention(text))


# --- extra networks --------------------------------------------------------------------------------------------------

_RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")

# Tag names that A1111 (or its built-in Lora extension) routes to another network.
_NETWORK_ALIASES = {"lyco": "lora"}


def canonical_network_name(name: str) -> str:
    """The network a tag name addresses: "lyco" is an alias of "lora" (A1111's Lora extension); others unchanged."""
    return _NETWORK_ALIASES.get(name, name)


@dataclass
class ExtraNetworkParams:
    """The ":"-separated arguments of one `<name:arg1:arg2...>` tag.

    `k=v` arguments are also in `named`, the others in `positional`. As in A1111 an argument with two "=" ("a=b=c")
    is positional, and equality compares `items` only.
    """

    items: list[str] = field(default_factory=list)
    positional: list[str] = field(init=False, default_factory=list, compare=False)
    named: dict[str, str] = field(init=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for item in self.items:
            parts = item.split("=", 2)
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove `<name:args>` tags from a prompt; return the remaining text and name -> params (in prompt order).

    Names are kept as typed ("lyco" stays "lyco"; see `canonical_network_name`).
    """
    found: dict[str, list[ExtraNetworkParams]] = {}

    def take(match: re.Match[str]) -> str:
        found.setdefault(match.group(1), []).append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return _RE_EXTRA_NET.sub(take, prompt), found


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """Strip tags from every prompt of a batch; the networks come from the FIRST prompt only (A1111 applies one
    set of networks per batch). Only positive prompts are meant to go through here: A1111 leaves tags in negatives.
    An empty batch gives ([], {}) (A1111: None for the dict)."""
    stripped: list[str] = []
    networks: dict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, parsed = parse_prompt(prompt)
        if networks is None:
            networks = parsed
        stripped.append(text)
    return stripped, networks if networks is not None else {}
