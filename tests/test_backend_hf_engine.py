"""The slot engine (lt_cli/backends/hf_engine.py) against the dynamic loop, and its parts.

tests/test_backend_hf.py runs the whole backend contract on both engines; here: the engines agree
sample for sample while the slot engine admits rows into freed slots of a running batch,
the uniforms a row draws up front are those the per-step draws gave, and incremental stop checks
agree with searching the whole decoded text.
"""

from __future__ import annotations

import random

import pytest

from lt_cli.backends import load_backend
from lt_cli.backends import hf_engine
from lt_cli.backends.hf_stops import StopWatch
from lt_cli.backends.base import BackendConfig, SamplingParams

PROMPTS = ["hello", "a much longer prompt than the first one, with more words in it", "x", "", "0123456789" * 3]


def _backend(model_dir, engine: str, batch_size: int, **kwargs):
    return load_backend("hf", BackendConfig(model=str(model_dir), batch_size=batch_size, options={"engine": engine}, **kwargs))


def _same(a, b) -> None:
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            assert (x.token_ids, x.finish_reason, x.text, x.prompt_tokens) == (y.token_ids, y.finish_reason, y.text, y.prompt_tokens)
            assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-5)


@pytest.mark.parametrize(
    ("batch_size", "params"),
    [
        (4, SamplingParams(n=4, temperature=1.0, max_new_tokens=16, stop=("e", "q"))),
        (3, SamplingParams(n=5, temperature=0.8, top_p=0.9, max_new_tokens=40)),
        (16, SamplingParams(n=3, temperature=0.0, max_new_tokens=12)),
    ],
)
def test_slots_equal_the_dynamic_loop_through_admissions(tiny_model_dir, batch_size, params, monkeypatch):
    prompts = [p + str(i) for i in range(6) for p in PROMPTS]
    admissions = []
    original_admit = hf_engine.SlotDecoder.admit
    monkeypatch.setattr(hf_engine.SlotDecoder, "admit", lambda self, slots, *a: (admissions.append(len(slots)), original_admit(self, slots, *a))[1])
    slots = _backend(tiny_model_dir, "slots", batch_size).sample(prompts, params)
    dynamic = _backend(tiny_model_dir, "dynamic", batch_size).sample(prompts, params)
    _same(slots, dynamic)
    assert len(admissions) > 1 and sum(admissions) == len(prompts) * params.n  # rows joined a running batch


def test_slot_decoder_is_reused_across_calls(tiny_model_dir):
    backend = _backend(tiny_model_dir, "slots", 4)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8)
    first = backend.sample(["ab", "cd"], params)
    decoder = backend._decoder_cache[1]
    assert backend.sample(["ab", "cd"], params) == first
    assert backend._decoder_cache[1] is decoder
    backend.sample(["a much longer prompt " * 12], params)  # needs more columns: a new decoder
    assert backend._decoder_cache[1].capacity > decoder.capacity


def test_row_uniforms_are_the_per_step_draws():
    import torch

    for seed in (0, 1, 2**40 + 3, 2**64 - 1):
        generator = torch.Generator().manual_seed(seed)
        per_step = torch.cat([torch.rand(1, generator=generator, dtype=torch.float64) for _ in range(700)])
        assert torch.equal(hf_engine.row_uniforms(torch, seed, 700), per_step)


def _check_stopwatch(decode, vocab: list[int], stops: tuple[str, ...], rng: random.Random, n_sequences: int = 150) -> int:
    """Every prefix of random sequences: the watch's answer equals a search of the whole text."""
    watch = StopWatch(decode, stops)
    hits = 0
    for _ in range(n_sequences):
        tokens: list[int] = []
        for _ in range(rng.randint(1, 40)):
            tokens.append(rng.choice(vocab))
            full = any(s in decode(tokens) for s in stops)
            assert watch.hit(tokens) == full, (tokens, stops)
            if full:
                hits += 1
                break
    return hits


def test_stopwatch_agrees_with_whole_text_search_byte_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # bytes of "é", "→" and "ab ", spaces, newlines and a latent special token, so stops land often
    pieces = tokenizer("é→ab \n<|END_OF_LATENT|>", add_special_tokens=False)["input_ids"]
    vocab = pieces + tokenizer("xyz", add_special_tokens=False)["input_ids"]
    rng = random.Random(0)
    hits = sum(_check_stopwatch(decode, vocab, stops, rng) for stops in [("é",), ("→a",), ("b ",), ("\n\n",), ("<|END_OF_LATENT|>", "zz")])
    assert hits > 50


def test_stopwatch_agrees_with_whole_text_search_sentencepiece(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    vocab = sorted(set(tokenizer(" the cat sat. A dog ran!\n\nÉtoile → café, the end", add_special_tokens=False)["input_ids"]))
    rng = random.Random(1)
    hits = sum(_check_stopwatch(decode, vocab, stops, rng) for stops in [(".",), (" the",), ("\n",), ("é",), ("t ",), ("→ c",)])
    assert hits > 50


def test_models_the_engine_does_not_know_use_the_dynamic_loop(tiny_model_dir, capsys):
    backend = _backend(tiny_model_dir, "slots", 4)
    backend.model.config.model_type = "gemma2"
    backend._engine = None
    assert "gemma2" in hf_engine.unsupported_reason(backend.model)
    assert backend.sampling_engine() == "dynamic"
    assert "slot engine cannot run" in capsys.readouterr().err


def test_auto_is_the_dynamic_loop_on_the_cpu(tiny_model_dir):
    assert _backend(tiny_model_dir, "auto", 4).sampling_engine() == "dynamic"


def test_unknown_engine_is_refused(tiny_model_dir):
    from lt_cli.errors import LtError

    with pytest.raises(LtError, match="engine must be one of"):
        _backend(tiny_model_dir, "warp", 4)


def test_equal_prompts_are_prefilled_once(tiny_model_dir, monkeypatch, capsys):
    """The E-step asks for a chunk's K samples as K equal prompts with one seed each."""
    prompts = [p for p in PROMPTS[:3] for _ in range(4)]
    seeds = [[100 + i] for i in range(len(prompts))]
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=10)
    prefilled = []
    original = hf_engine.SlotDecoder.admit
    monkeypatch.setattr(hf_engine.SlotDecoder, "admit", lambda self, slots, rows, ps, sd: (prefilled.append(len(ps)), original(self, slots, rows, ps, sd))[1])
    monkeypatch.setenv("LT_ENGINE_PROFILE", "1")
    slots = _backend(tiny_model_dir, "slots", 16).sample(prompts, params, seeds)
    assert prefilled == [3]
    assert "slot engine profile: 12 rows" in capsys.readouterr().err
    _same(slots, _backend(tiny_model_dir, "dynamic", 16).sample(prompts, params, seeds))
