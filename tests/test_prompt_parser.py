"""A1111's prompt language: emphasis weights, editing/alternation schedules, AND, extra networks.

Expected values are A1111 v1.10's results for the same input (its documented examples and the
behaviour of its parser), compared with == including float weights.
"""

from __future__ import annotations

import pytest
import torch

from modules import extra_networks, prompt_parser
from modules.engine.conditioning import TextConditioning
from modules.extra_networks import ExtraNetworkParams, LoraParams
from modules.prompt_parser import (
    ComposableScheduledPromptConditioning,
    DictWithShape,
    MulticondLearnedConditioning,
    ScheduledPromptConditioning,
    SdConditioning,
    get_learned_conditioning,
    get_learned_conditioning_prompt_schedules,
    get_multicond_learned_conditioning,
    get_multicond_prompt_list,
    parse_prompt_attention,
    reconstruct_cond_batch,
    reconstruct_multicond_batch,
)

# --------------------------------------------------------------------------------------------------
# parse_prompt_attention
# --------------------------------------------------------------------------------------------------

ATTENTION_DOC_EXAMPLES = [
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
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_DOC_EXAMPLES)
def test_attention_documented_examples(text: str, expected: list) -> None:
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [["", 1.0]]),
        ("()", [["", 1.0]]),
        ("unbalanced]", [["unbalanced]", 1.0]]),
        ("unbalanced)", [["unbalanced)", 1.0]]),
        ("[unbalanced", [["unbalanced", 1 / 1.1]]),
        ("a [b] c", [["a ", 1.0], ["b", 1 / 1.1], [" c", 1.0]]),
        ("[[b]]", [["b", (1 / 1.1) * (1 / 1.1)]]),
        ("((b))", [["b", 1.2100000000000002]]),
        # the explicit weight applies first, then the outer bracket
        ("((a:1.5))", [["a", 1.6500000000000001]]),
        ("[(a:1.5)]", [["a", 1.5 * (1 / 1.1)]]),
        ("(a: 1.5 )", [["a", 1.5]]),
        ("(a:-1)", [["a", -1.0]]),
        ("(a:.5)", [["a", 0.5]]),
        # round and square brackets are matched separately
        ("([a)]", [["a", 1.1 * (1 / 1.1)]]),
        # a weight closer with no open round bracket, and colons elsewhere, are text
        ("a:1.5) b", [["a:1.5) b", 1.0]]),
        ("a:b (c:d)", [["a:b ", 1.0], ["c:d", 1.1]]),
        # still-open brackets at the end: round ones first, then square
        ("([a", [["a", 1.1 * (1 / 1.1)]]),
        ("x ((a", [["x ", 1.0], ["a", 1.2100000000000002]]),
        # escapes
        ("\\(a\\)", [["(a)", 1.0]]),
        ("\\[a\\]", [["[a]", 1.0]]),
        ("a \\\\ b", [["a \\ b", 1.0]]),
        ("(a\\)b)", [["a)b", 1.1]]),
        ("a\\b", [["ab", 1.0]]),  # a backslash before anything else is dropped
        ("end\\", [["end", 1.0]]),
        # unicode text
        ("(猫:1.2) über", [["猫", 1.2], [" über", 1.0]]),
        ("(\U0001F431)", [["\U0001F431", 1.1]]),
        # newlines are ordinary text
        ("a\n(b)", [["a\n", 1.0], ["b", 1.1]]),
    ],
)
def test_attention_edge_cases(text: str, expected: list) -> None:
    assert parse_prompt_attention(text) == expected


def test_attention_unparsable_weight_is_text() -> None:
    # A1111 raises ValueError here; the closer is kept as text and the bracket stays open.
    assert parse_prompt_attention("(a:1.2.3) b") == [["a:1.2.3) b", 1.1]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("a  BREAK\nb", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("BREAK", [["", 1.0], ["BREAK", -1], ["", 1.0]]),
        ("a BREAK BREAK b", [["a", 1.0], ["BREAK", -1], ["", 1.0], ["BREAK", -1], ["b", 1.0]]),
        ("(a) BREAK [b]", [["a", 1.1], ["", 1.0], ["BREAK", -1], ["", 1.0], ["b", 1 / 1.1]]),
        # not a whole uppercase word: plain text
        ("aBREAK b", [["aBREAK b", 1.0]]),
        ("a break b", [["a break b", 1.0]]),
        ("a BREAKS b", [["a BREAKS b", 1.0]]),
        ("a,BREAK,b", [["a,", 1.0], ["BREAK", -1], [",b", 1.0]]),
        # inside brackets the marker is scaled too (A1111 does the same)
        ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),
    ],
)
def test_attention_break(text: str, expected: list) -> None:
    assert parse_prompt_attention(text) == expected


def test_attention_returns_fresh_lists() -> None:
    first = parse_prompt_attention("a BREAK b")
    first[1][1] = 5
    assert parse_prompt_attention("a BREAK b")[1] == ["BREAK", -1]


# --------------------------------------------------------------------------------------------------
# get_learned_conditioning_prompt_schedules
# --------------------------------------------------------------------------------------------------


def schedule(prompt: str, steps: int = 10, hires_steps: int | None = None, old: bool = False) -> list:
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]


ALTERNATING = [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]

SCHEDULE_DOC_EXAMPLES = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", ALTERNATING),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_DOC_EXAMPLES)
def test_schedule_documented_examples(prompt: str, expected: list) -> None:
    assert schedule(prompt) == expected


def test_schedule_documented_example_that_does_not_parse() -> None:
    # A1111's docstring lists [[5, 'a  c'], [10, 'a {b|d{ c']] with "not handling this right now";
    # its parser rejects the stray "|" and uses the prompt verbatim, and so do we.
    assert schedule("a [{b|d{:.5] c") == [[10, "a [{b|d{:.5] c"]]


def test_schedule_documented_hires_examples() -> None:
    assert schedule("a [b:.5] c", 10, 10) == [[10, "a b c"]]
    assert schedule("a [b:1.5] c", 10, 10) == [[5, "a  c"], [10, "a b c"]]


def test_schedule_header_example_at_100_steps() -> None:
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]")
    assert schedule(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # a step number of 0 or less: "to" from the first step
        ("[a:b:0]", [[10, "b"]]),
        ("[a:b:-1]", [[10, "b"]]),
        ("[a:b:1]", [[1, "a"], [10, "b"]]),
        # with a decimal point it is a fraction: 1.0 = all steps, larger is clamped
        ("[a:b:1.0]", [[10, "a"]]),
        ("[a:b:2.5]", [[10, "a"]]),
        ("[a:b:3.]", [[10, "a"]]),
        ("[a:b:0.0]", [[10, "b"]]),
        ("[a:b:12]", [[10, "a"]]),
        ("[a:b:+3]", [[3, "a"], [10, "b"]]),
        ("[a:b:1e1]", [[10, "a"]]),
        ("[a:b: 3 ]", [[3, "a"], [10, "b"]]),
        ("[a:b:3 ]", [[3, "a"], [10, "b"]]),
        ("[a::3]", [[3, "a"], [10, ""]]),
        ("[:3]", [[3, ""], [10, ""]]),
        ("[ :3]", [[3, ""], [10, " "]]),
        ("[a:3][b:4]", [[3, ""], [4, "a"], [10, "ab"]]),
        # not editing: the text stays as written
        ("[a:b:c]", [[10, "[a:b:c]"]]),
        ("[a:b:3:4]", [[10, "[a:b:3:4]"]]),
        ("[a:b::3]", [[10, "[a:b::3]"]]),
        ("[a:b:.]", [[10, "[a:b:.]"]]),
        ("(a:3)", [[10, "(a:3)"]]),
        ("[a]", [[10, "[a]"]]),
        # loose brackets around and after editing are kept
        ("[a:2]]", [[2, "]"], [10, "a]"]]),
        ("]]]a[b:4]", [[4, "]]]a"], [10, "]]]ab"]]),
        ("([a:3]", [[3, "("], [10, "(a"]]),
        ("(a [b:3]) c)", [[3, "(a ) c)"], [10, "(a b) c)"]]),
        ("[a:b:3]x[c:d:7", [[3, "ax[c:d:7"], [10, "bx[c:d:7"]]),
        # escapes are kept for the emphasis parser
        ("\\[a:3\\]", [[10, "\\[a:3\\]"]]),
        ("[\\(a\\):3]", [[3, ""], [10, "\\(a\\)"]]),
        ("[a\\]:3]", [[3, ""], [10, "a\\]"]]),
        # a "|" outside alternation or a trailing lone backslash: the whole prompt is verbatim
        ("a | b [c:3]", [[10, "a | b [c:3]"]]),
        ("[a:3] x\\", [[10, "[a:3] x\\"]]),
        ("(a|b)", [[10, "(a|b)"]]),
        # unicode and newlines
        ("[猫:犬:0.5] über", [[5, "猫 über"], [10, "犬 über"]]),
        ("a\n[b:3]", [[3, "a\n"], [10, "a\nb"]]),
        # emphasis inside editing is untouched
        ("[(a:1.2):[b]:5]", [[5, "(a:1.2)"], [10, "[b]"]]),
        # editing nested in editing
        ("[[a:2]:3]", [[2, ""], [3, ""], [10, "a"]]),
        ("[a:[b:3]:4]", [[3, "a"], [4, "a"], [10, "b"]]),
    ],
)
def test_schedule_editing_edge_cases(prompt: str, expected: list) -> None:
    assert schedule(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[a|b|c]", [[i, "abc"[(i - 1) % 3]] for i in range(1, 11)]),
        ("[a|]", [[i, "a" if i % 2 else ""] for i in range(1, 11)]),
        ("[|a]", [[i, "" if i % 2 else "a"] for i in range(1, 11)]),
        ("[a||b]", [[i, ["a", "", "b"][(i - 1) % 3]] for i in range(1, 11)]),
        # editing inside alternation
        ("[a|[b:c:3]]", [[i, "a" if i % 2 else ("b" if i <= 3 else "c")] for i in range(1, 11)]),
        # alternation inside editing
        ("[x [b|c]:5]", [[i, "" if i <= 5 else ("x b" if i % 2 else "x c")] for i in range(1, 11)]),
        ("[a|b] [c", [[i, ("a" if i % 2 else "b") + " [c"] for i in range(1, 11)]),
        ("[(a|b):3]", [[10, "[(a|b):3]"]]),
    ],
)
def test_schedule_alternation(prompt: str, expected: list) -> None:
    assert schedule(prompt) == expected


def test_schedule_alternation_with_few_steps() -> None:
    assert schedule("[a|b|c]", 2) == [[1, "a"], [2, "b"]]
    # zero steps: A1111 picks the last option ((0 - 1) % n)
    assert schedule("[a|b|c]", 0) == [[0, "c"]]


@pytest.mark.parametrize(
    ("prompt", "base", "hires", "old", "expected"),
    [
        # new timelines: numbers count on from the first pass, fractions run 1.0 -> 2.0 in hires
        ("a [b:15] c", 10, 10, False, [[5, "a  c"], [10, "a b c"]]),
        ("a [b:5] c", 10, 10, False, [[10, "a b c"]]),
        ("a [b:1.5] c", 10, 20, False, [[10, "a  c"], [20, "a b c"]]),
        ("[a:b:25]", 20, 10, False, [[5, "a"], [10, "b"]]),
        ("[a|b]", 10, 3, False, [[1, "a"], [2, "b"], [3, "a"]]),
        # old timelines: below 1 a fraction, else a step, of base_steps; hires_steps is not used
        ("a [b:1.5] c", 10, 10, True, [[1, "a  c"], [10, "a b c"]]),
        ("a [b:.5] c", 10, 20, True, [[5, "a  c"], [10, "a b c"]]),
        ("a [b:3] c", 10, 20, True, [[3, "a  c"], [10, "a b c"]]),
        # old timelines without hires are the first pass
        ("a [b:.5] c", 10, None, True, [[5, "a  c"], [10, "a b c"]]),
        ("[a:b:1e-1]", 10, None, True, [[1, "a"], [10, "b"]]),
        ("[a:b:1e-1]", 10, None, False, [[10, "b"]]),
    ],
)
def test_schedule_hires_and_old_timelines(prompt: str, base: int, hires: int | None, old: bool, expected: list) -> None:
    assert schedule(prompt, base, hires, old) == expected


def test_schedule_many_prompts_keep_order_and_share_duplicates() -> None:
    prompts = ["[a:b:5]", "plain", "[a:b:5]"]
    result = get_learned_conditioning_prompt_schedules(prompts, 10)
    assert result == [[[5, "a"], [10, "b"]], [[10, "plain"]], [[5, "a"], [10, "b"]]]
    assert get_learned_conditioning_prompt_schedules([], 10) == []


def test_schedule_many_edits() -> None:
    prompt = ", ".join(f"(word{i}:1.{i % 10}) [x{i}:y{i}:{i % 9 + 1}]" for i in range(12))
    result = schedule(prompt, 20)
    assert [end for end, _ in result] == [*range(1, 10), 20]
    assert result[0][1].startswith("(word0:1.0) x0, (word1:1.1) x1, (word2:1.2) x2")
    assert result[1][1].startswith("(word0:1.0) y0, (word1:1.1) x1, (word2:1.2) x2")
    assert result[-1][1].startswith("(word0:1.0) y0, (word1:1.1) y1")


def test_schedule_long_prompt_without_editing() -> None:
    # nothing to schedule: the prompt as it is, also when it would not parse (trailing backslash)
    prompt = "masterpiece, " + ", ".join(f"(tag{i}:1.1) [soft{i}] [x:y]" for i in range(200)) + " \\"
    assert schedule(prompt, 20) == [[20, prompt]]
    assert schedule("", 20) == [[20, ""]]
    assert schedule("[a:b]", 20) == [[20, "[a:b]"]]


# --------------------------------------------------------------------------------------------------
# get_multicond_prompt_list (AND)
# --------------------------------------------------------------------------------------------------


def test_multicond_reference_example() -> None:
    indexes, flat, by_text = get_multicond_prompt_list(["a cat :1.2 AND a dog AND a penguin :2.2"])
    assert indexes == [[(0, 1.2), (1, 1.0), (2, 2.2)]]
    assert flat == ["a cat", " a dog", " a penguin"]
    assert by_text == {"a cat": 0, " a dog": 1, " a penguin": 2}


@pytest.mark.parametrize(
    ("prompt", "indexes", "flat"),
    [
        ("a AND b:-0.5", [(0, 1.0), (1, -0.5)], ["a", " b"]),
        ("a:+2 AND b: 1.", [(0, 2.0), (1, 1.0)], ["a", " b"]),
        ("a :.5", [(0, 0.5)], ["a"]),
        ("a:1:2", [(0, 2.0)], ["a:1"]),
        ("a:b", [(0, 1.0)], ["a:b"]),
        ("(cat:1.2)", [(0, 1.0)], ["(cat:1.2)"]),
        ("a and b", [(0, 1.0)], ["a and b"]),
        ("ANDROID AND", [(0, 1.0), (1, 1.0)], ["ANDROID", ""]),
        ("x AND x:2", [(0, 1.0), (1, 2.0)], ["x", " x"]),
        ("x AND x :2 AND  x", [(0, 1.0), (1, 2.0), (2, 1.0)], ["x", " x", "  x"]),
        ("x  AND x :2 AND x", [(0, 1.0), (1, 2.0), (1, 1.0)], ["x", " x"]),
        ("line one\nline two :3 ", [(0, 3.0)], ["line one\nline two"]),
        ("", [(0, 1.0)], [""]),
        ("[a:b:3] AND (c)", [(0, 1.0), (1, 1.0)], ["[a:b:3]", " (c)"]),
    ],
)
def test_multicond_splitting(prompt: str, indexes: list, flat: list) -> None:
    got_indexes, got_flat, _ = get_multicond_prompt_list([prompt])
    assert got_indexes == [indexes]
    assert list(got_flat) == flat


def test_multicond_dedupes_across_prompts_and_keeps_attributes() -> None:
    prompts = SdConditioning(["x AND y", "x AND z :0.3"], is_negative_prompt=True, width=832, height=1216)
    indexes, flat, by_text = get_multicond_prompt_list(prompts)
    assert indexes == [[(0, 1.0), (1, 1.0)], [(0, 1.0), (2, 0.3)]]
    assert flat == ["x", " y", " z"]
    assert by_text == {"x": 0, " y": 1, " z": 2}
    assert isinstance(flat, SdConditioning)
    assert (flat.is_negative_prompt, flat.width, flat.height) == (True, 832, 1216)


def test_sdconditioning_copy_from() -> None:
    source = SdConditioning(["a"], width=512, height=768)
    copy = SdConditioning(["b", "c"], copy_from=source)
    assert copy == ["b", "c"]
    assert (copy.is_negative_prompt, copy.width, copy.height) == (False, 512, 768)
    plain = SdConditioning(["a"])
    assert (plain.is_negative_prompt, plain.width, plain.height) == (False, None, None)


# --------------------------------------------------------------------------------------------------
# Encoding schedules, reconstructing a step's batch
# --------------------------------------------------------------------------------------------------

DIM = 4


def embed(text: str, tokens: int = 3) -> torch.Tensor:
    """A deterministic stand-in for a text encoding: the text's length and first char code."""
    code = float(ord(text[0])) if text else 0.0
    base = torch.tensor([float(len(text)), code, 1.0, 2.0])
    return base.expand(tokens, DIM) + torch.arange(tokens, dtype=torch.float32)[:, None]


class FakeModel:
    """An A1111-style model: get_learned_conditioning(texts) -> (B, T, D); records its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.sizes: list[tuple] = []

    def get_learned_conditioning(self, texts: SdConditioning) -> torch.Tensor:
        self.calls.append(list(texts))
        self.sizes.append((texts.width, texts.height, texts.is_negative_prompt))
        return torch.stack([embed(t) for t in texts])


def test_get_learned_conditioning_schedules_and_caching() -> None:
    model = FakeModel()
    prompts = SdConditioning(["a red crown", "a [blue:green:5] crown", "a red crown", "[x|y]"], width=640, height=512)
    result = get_learned_conditioning(model, prompts, 10)

    # each prompt's distinct texts once, in one call; a repeated prompt is not encoded again
    assert model.calls == [["a red crown"], ["a blue crown", "a green crown"], ["x", "y"]]
    assert model.sizes == [(640, 512, False)] * 3

    assert [[e.end_at_step for e in s] for s in result] == [[10], [5, 10], [10], list(range(1, 11))]
    assert isinstance(result[1][0], ScheduledPromptConditioning)
    assert torch.equal(result[1][0].cond, embed("a blue crown"))
    assert torch.equal(result[1][1].cond, embed("a green crown"))
    assert torch.equal(result[3][2].cond, embed("x"))
    assert torch.equal(result[3][3].cond, embed("y"))
    assert result[2] == result[0]


def test_get_learned_conditioning_accepts_dicts_callables_and_text_conditioning() -> None:
    def dict_encoder(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"crossattn": torch.stack([embed(t) for t in texts]),
                "vector": torch.stack([torch.full((2,), float(len(t))) for t in texts])}

    result = get_learned_conditioning(dict_encoder, ["[ab:abc:3]"], 10)
    first = result[0][0].cond
    assert set(first) == {"crossattn", "vector"}
    assert torch.equal(first["crossattn"], embed("ab"))
    assert torch.equal(result[0][1].cond["vector"], torch.full((2,), 3.0))

    class SdxlEncoder:  # Easel's PromptEncoder shape: encode(texts) -> TextConditioning
        def encode(self, texts: list[str]) -> TextConditioning:
            return TextConditioning(torch.stack([embed(t) for t in texts]),
                                    torch.stack([torch.full((2,), float(len(t))) for t in texts]))

    sdxl = get_learned_conditioning(SdxlEncoder(), ["[ab:abc:3]"], 10)[0]
    assert torch.equal(sdxl[0].cond["crossattn"], embed("ab"))
    assert torch.equal(sdxl[1].cond["vector"], torch.full((2,), 3.0))

    class Sd15Encoder:
        def encode(self, texts: list[str]) -> TextConditioning:
            return TextConditioning(torch.stack([embed(t) for t in texts]))

    plain = get_learned_conditioning(Sd15Encoder(), ["hello"], 10)[0]
    assert torch.equal(plain[0].cond, embed("hello"))

    with pytest.raises(TypeError):
        get_learned_conditioning(object(), ["x"], 10)


def test_reconstruct_cond_batch_picks_entry_by_step() -> None:
    model = FakeModel()
    conds = get_learned_conditioning(model, ["[ab:abcd:3]", "z"], 10)
    for step, first in [(0, "ab"), (3, "ab"), (4, "abcd"), (10, "abcd")]:
        batch = reconstruct_cond_batch(conds, step)
        assert batch.shape == (2, 3, DIM)
        assert torch.equal(batch[0], embed(first))
        assert torch.equal(batch[1], embed("z"))
    # past the last end_at_step A1111 falls back to the first entry
    assert torch.equal(reconstruct_cond_batch(conds, 11)[0], embed("ab"))


def test_reconstruct_cond_batch_dicts() -> None:
    cond = {"crossattn": embed("ab"), "vector": torch.ones(2)}
    later = {"crossattn": embed("abc"), "vector": torch.zeros(2)}
    batch = reconstruct_cond_batch([[ScheduledPromptConditioning(2, cond), ScheduledPromptConditioning(5, later)]], 3)
    assert isinstance(batch, DictWithShape)
    assert batch.shape == (1, 3, DIM)
    assert torch.equal(batch["crossattn"][0], embed("abc"))
    assert torch.equal(batch["vector"], torch.zeros(1, 2))


def test_reconstruct_multicond_batch_and_padding() -> None:
    model = FakeModel()
    c = get_multicond_learned_conditioning(model, ["cat :1.5 AND [dog:fox:4]", "cat AND bird:-0.5"], 10)
    assert isinstance(c, MulticondLearnedConditioning)
    assert c.shape == (2,)
    assert isinstance(c.batch[0][0], ComposableScheduledPromptConditioning)
    assert [[sub.weight for sub in p] for p in c.batch] == [[1.5, 1.0], [1.0, -0.5]]
    # "cat" is encoded once for both prompts
    assert model.calls == [["cat"], [" dog", " fox"], [" bird"]]

    conds_list, tensor = reconstruct_multicond_batch(c, 2)
    assert conds_list == [[(0, 1.5), (1, 1.0)], [(2, 1.0), (3, -0.5)]]
    assert tensor.shape == (4, 3, DIM)
    assert torch.equal(tensor[1], embed(" dog"))
    assert torch.equal(tensor[3], embed(" bird"))
    assert torch.equal(reconstruct_multicond_batch(c, 5)[1][1], embed(" fox"))

    # conditionings of different token lengths: shorter ones repeat their last vector
    short, long = embed("a", tokens=2), embed("b", tokens=5)
    mixed = MulticondLearnedConditioning((2,), [
        [ComposableScheduledPromptConditioning([ScheduledPromptConditioning(10, short)])],
        [ComposableScheduledPromptConditioning([ScheduledPromptConditioning(10, long)], 0.7)],
    ])
    conds_list, tensor = reconstruct_multicond_batch(mixed, 1)
    assert conds_list == [[(0, 1.0)], [(1, 0.7)]]
    assert tensor.shape == (2, 5, DIM)
    assert torch.equal(tensor[0, :2], short)
    assert torch.equal(tensor[0, 2:], short[-1:].expand(3, DIM))
    assert torch.equal(tensor[1], long)


def test_reconstruct_multicond_batch_dicts() -> None:
    def sdxl_like(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"crossattn": torch.stack([embed(t) for t in texts]),
                "vector": torch.stack([torch.full((3,), float(len(t))) for t in texts])}

    c = get_multicond_learned_conditioning(sdxl_like, ["a AND bb"], 10)
    conds_list, stacked = reconstruct_multicond_batch(c, 1)
    assert conds_list == [[(0, 1.0), (1, 1.0)]]
    assert isinstance(stacked, DictWithShape)
    assert stacked.shape == (2, 3, DIM)
    assert torch.equal(stacked["vector"][:, 0], torch.tensor([1.0, 3.0]))


# --------------------------------------------------------------------------------------------------
# Extra networks
# --------------------------------------------------------------------------------------------------


def test_parse_extra_networks() -> None:
    text, found = extra_networks.parse_prompt("a <lora:foo:0.8> b<hypernet:bar:1>, <lora:baz_v2:te=0.5:unet=0.2>")
    assert text == "a  b, "
    assert set(found) == {"lora", "hypernet"}
    assert [p.items for p in found["lora"]] == [["foo", "0.8"], ["baz_v2", "te=0.5", "unet=0.2"]]
    assert found["lora"][1].positional == ["baz_v2"]
    assert found["lora"][1].named == {"te": "0.5", "unet": "0.2"}
    assert found["hypernet"] == [ExtraNetworkParams(items=["bar", "1"])]
    # the same parse through the prompt parser module
    assert prompt_parser.parse_extra_networks("a <lora:foo:0.8> b<hypernet:bar:1>, <lora:baz_v2:te=0.5:unet=0.2>") == (
        text, found)
    assert prompt_parser.re_extra_net is extra_networks.re_extra_net


@pytest.mark.parametrize(
    "prompt",
    ["<lora>", "<lo-ra:x>", "<:x>", "<lora:>", "a < lora:x >", "(lora:x:1)"],
)
def test_extra_network_non_references_stay(prompt: str) -> None:
    text, found = extra_networks.parse_prompt(prompt)
    assert text == prompt
    assert not found


def test_extra_network_argument_forms() -> None:
    _, found = extra_networks.parse_prompt("<lora:a>b:1>")  # arguments end at the first ">"
    assert found["lora"][0].items == ["a"]
    params = ExtraNetworkParams(items=["name", "k=v=w", "x=", "=y", "3"])
    assert params.positional == ["name", "k=v=w", "3"]
    assert params.named == {"x": "", "": "y"}
    assert ExtraNetworkParams(items=["n", 1.5]).positional == ["n", 1.5]
    assert ExtraNetworkParams().items == []
    assert ExtraNetworkParams(["a"]) != ExtraNetworkParams(["b"])


def test_parse_prompts_uses_first_prompt_networks() -> None:
    prompts, found = extra_networks.parse_prompts(["x <lora:a:1>", "y <lora:b:1>"])
    assert prompts == ["x ", "y "]
    assert found is not None
    assert [p.items for p in found["lora"]] == [["a", "1"]]
    assert extra_networks.parse_prompts([]) == ([], None)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("<lora:x>", LoraParams("x", 1.0, 1.0, None)),
        ("<lora:x:0.5>", LoraParams("x", 0.5, 0.5, None)),
        ("<lora:x:0.5:0.2>", LoraParams("x", 0.5, 0.2, None)),
        ("<lora:x:0.5:0.2:16>", LoraParams("x", 0.5, 0.2, 16)),
        ("<lora:x:te=0.4>", LoraParams("x", 0.4, 0.4, None)),
        ("<lora:x:unet=0.3>", LoraParams("x", 1.0, 0.3, None)),
        ("<lora:x:0.9:dyn=8:te=0.1>", LoraParams("x", 0.1, 0.1, 8)),
        ("<lora:my lora v1.5:-1>", LoraParams("my lora v1.5", -1.0, -1.0, None)),
    ],
)
def test_lora_params(reference: str, expected: LoraParams) -> None:
    _, found = extra_networks.parse_prompt(reference)
    assert LoraParams.from_params(found["lora"][0]) == expected


@pytest.mark.parametrize("reference", ["<lora:x:strong>", "<lora:x:1:1:big>", "<lora:te=1>"])
def test_lora_params_rejects_bad_references(reference: str) -> None:
    _, found = extra_networks.parse_prompt(reference)
    with pytest.raises(ValueError):
        LoraParams.from_params(found["lora"][0])
