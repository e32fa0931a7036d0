"""Prompt language in the conditioning: chunks, BREAK, emphasis, schedules, AND, cache."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_components

from modules.engine import conditioning, denoise, noise, samplers
from modules.engine.conditioning import CHUNK_TOKENS, GuidancePlan, PromptEncoder
from modules.engine.model import DiffusionModel


@pytest.fixture(scope="module")
def model() -> DiffusionModel:
    c = build_components("sd1", 7)
    return DiffusionModel(family="sd1", unet=c["unet"], vae=c["vae"], text_encoder=c["text_encoder"],
                          tokenizer=c["tokenizer"], scheduler_config=c["scheduler_config"])


def words(n: int) -> str:
    return " ".join(["cat"] * n)  # "cat" is one token


def test_long_prompts_are_cut_into_75_token_chunks(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    assert [len(c.tokens) for c in enc.chunks(words(300))] == [75, 75, 75, 75]
    assert enc.encode_one(words(300)).embeds.shape[1] == 4 * 77
    assert enc.encode_one(words(76)).embeds.shape[1] == 2 * 77
    assert enc.token_count(words(80)) == (80, 150)
    assert enc.token_count("") == (0, 75)


def test_break_starts_a_new_chunk(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    chunks = enc.chunks("a red cat BREAK a blue dog")
    assert len(chunks) == 2
    assert enc.tokenize("a red cat") == chunks[0].tokens
    assert enc.encode_one("a red cat BREAK a blue dog").embeds.shape[1] == 2 * 77


def test_a_chunk_that_fills_up_after_a_comma_moves_the_tail(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    text = words(70) + ", " + words(10)
    chunks = enc.chunks(text)
    assert len(chunks[0].tokens) == 71  # 70 words and the comma; the 10 words moved on
    assert len(chunks[1].tokens) == 10
    no_backtrack = PromptEncoder(model, comma_padding_backtrack=0).chunks(text)
    assert len(no_backtrack[0].tokens) == 75


def test_emphasis_weights_the_chosen_tokens(model: DiffusionModel) -> None:
    plain = PromptEncoder(model, emphasis="No norm").encode_one("a red cat on a mat").embeds
    weighted = PromptEncoder(model, emphasis="No norm").encode_one("a (red:1.5) cat on a mat").embeds
    diff = (plain - weighted).abs().amax(dim=-1)[0]
    changed = (diff > 1e-6).nonzero().flatten().tolist()
    assert changed == [2]  # BOS, "a", "red" -> position 2 only
    assert torch.allclose(weighted[0, 2], plain[0, 2] * 1.5, atol=1e-5)

    original = PromptEncoder(model).encode_one("a (red:1.5) cat on a mat").embeds
    assert torch.allclose(original.mean(), plain.mean(), atol=1e-5)  # "Original" keeps the mean
    ignored = PromptEncoder(model, emphasis="Ignore").encode_one("a (red:1.5) cat on a mat").embeds
    assert torch.equal(ignored, PromptEncoder(model).encode_one("a red cat on a mat").embeds)


def test_schedules_switch_at_the_named_step(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    plan = GuidancePlan(enc, ["a [red:blue:4] ball"], [""], steps=10)
    red, blue = enc.encode_one("a red ball").embeds, enc.encode_one("a blue ball").embeds
    for step in range(0, 5):
        assert torch.equal(plan.at(step).per_image_cond().embeds, red), step
    for step in range(5, 10):
        assert torch.equal(plan.at(step).per_image_cond().embeds, blue), step
    # Alternation: A1111's schedule is [[1, cat], [2, dog], [3, cat], [4, dog]] and its step counter
    # starts at 0, so the first text serves steps 0 and 1.
    alt = GuidancePlan(enc, ["[cat|dog]"], [""], steps=4)
    seq = [alt.at(s).per_image_cond().embeds for s in range(4)]
    cat, dog = enc.encode_one("cat").embeds, enc.encode_one("dog").embeds
    assert [torch.equal(e, cat) for e in seq] == [True, True, False, True]
    assert torch.equal(seq[2], dog)


def test_each_distinct_text_is_encoded_once(model: DiffusionModel) -> None:
    calls: list[int] = []
    handle = model.text_encoder.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        enc = PromptEncoder(model, clip_skip=1, emphasis="Original", comma_padding_backtrack=19)
        GuidancePlan(enc, ["[p:q:3] zebra"] * 4, ["no zebra"] * 4, steps=10)
        first = len(calls)
        GuidancePlan(enc, ["[p:q:3] zebra"] * 4, ["no zebra"] * 4, steps=10)
    finally:
        handle.remove()
    assert first == 3  # "p zebra", "q zebra", "no zebra"
    assert len(calls) == first  # second plan: all from the cache


def _run(model: DiffusionModel, plan: GuidancePlan, seed: int = 3) -> torch.Tensor:
    spec, sched = samplers.resolve("Euler", None)
    run = samplers.SamplerRun(spec, sched, model.scheduler_config, 4, seeds=[seed], device=torch.device("cpu"))
    x = noise.batch_noise([seed], (4, 16, 16)) * run.init_noise_sigma
    return denoise.sample(model, run, x, denoise.Guidance(None, None, 7.0, plan=plan))


def test_and_with_half_weights_of_one_prompt_equals_the_prompt(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    plain = _run(model, GuidancePlan(enc, ["a small cat"], [""], steps=4))
    halves = _run(model, GuidancePlan(enc, ["a small cat :0.5 AND a small cat :0.5"], [""], steps=4))
    assert torch.allclose(plain, halves, atol=1e-4)
    mixed = _run(model, GuidancePlan(enc, ["a small cat AND a big dog :0.7"], [""], steps=4))
    assert not torch.allclose(plain, mixed, atol=1e-3)


def test_plan_matches_fixed_conditioning_for_plain_prompts(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    cond, uncond = enc.encode_pair(["a cat"], ["a dog"])
    spec, sched = samplers.resolve("Euler a", None)
    outs = []
    for guidance in (denoise.Guidance(cond, uncond, 6.0),
                     denoise.Guidance(None, None, 6.0, plan=GuidancePlan(enc, ["a cat"], ["a dog"], steps=4))):
        run = samplers.SamplerRun(spec, sched, model.scheduler_config, 4, seeds=[9], device=torch.device("cpu"))
        x = noise.batch_noise([9], (4, 16, 16)) * run.init_noise_sigma
        outs.append(denoise.sample(model, run, x, guidance))
    assert torch.equal(outs[0], outs[1])


def test_long_positive_and_short_negative_are_padded_alike(model: DiffusionModel) -> None:
    enc = PromptEncoder(model)
    step = GuidancePlan(enc, [words(100)], ["blurry"], steps=4).at(0)
    assert step.cond.tokens == step.uncond.tokens == 2 * 77
    assert conditioning.CHUNK_TOKENS == CHUNK_TOKENS == 75
