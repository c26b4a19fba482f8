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
from lt_cli.backends import hf_engine, hf_slot_decoder
from lt_cli.backends.hf_stops import StopWatch
from lt_cli.backends.base import BackendConfig, SamplingParams

PROMPTS = ["hello", "a much longer prompt than the first one, with more words in it", "x", "", "0123456789" * 3]


def _backend(model_dir, engine: str, batch_size: int, options_extra: dict | None = None, **kwargs):
    options = {"engine": engine, **(options_extra or {})}
    return load_backend("hf", BackendConfig(model=str(model_dir), batch_size=batch_size, options=options, **kwargs))


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
    original_admit = hf_slot_decoder.SlotDecoder.admit
    monkeypatch.setattr(hf_slot_decoder.SlotDecoder, "admit", lambda self, slots, *a: (admissions.append(len(slots)), original_admit(self, slots, *a))[1])
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
        assert torch.equal(hf_slot_decoder.row_uniforms(torch, seed, 700), per_step)


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
    original = hf_slot_decoder.SlotDecoder.admit
    def counting_admit(self, slots, rows, ps, sd):
        prefilled.append(len(ps))
        return original(self, slots, rows, ps, sd)

    monkeypatch.setattr(hf_slot_decoder.SlotDecoder, "admit", counting_admit)
    monkeypatch.setenv("LT_ENGINE_PROFILE", "1")
    slots = _backend(tiny_model_dir, "slots", 16).sample(prompts, params, seeds)
    assert prefilled == [3]
    assert "slot engine profile: 12 rows" in capsys.readouterr().err
    _same(slots, _backend(tiny_model_dir, "dynamic", 16).sample(prompts, params, seeds))


def test_compiled_step_equals_the_dynamic_loop_and_compiles_once(tiny_model_dir, capsys):
    """torch.compile of the decode step (the default on CUDA) changes no sample; the columns and the
    uniforms are dynamic, so a longer prompt or another max_new_tokens reuses the compiled step."""
    from torch._dynamo.utils import counters

    compiled = _backend(tiny_model_dir, "slots", 4, options_extra={"compile": True})
    dynamic = _backend(tiny_model_dir, "dynamic", 4)
    params = SamplingParams(n=3, temperature=0.9, top_p=0.95, max_new_tokens=12, stop=("e",))
    prompts = [p + str(i) for i in range(2) for p in PROMPTS]
    _same(compiled.sample(prompts, params), dynamic.sample(prompts, params))
    decoder = compiled._decoder_cache[1]
    assert decoder.mode == "compiled eager" and decoder.attention == "sdpa"
    assert "decode step compiled in" in capsys.readouterr().err
    graphs = counters["stats"]["unique_graphs"]
    longer = SamplingParams(n=2, temperature=0.9, top_p=0.95, max_new_tokens=20)
    _same(compiled.sample(["a much longer prompt " * 12], longer), dynamic.sample(["a much longer prompt " * 12], longer))
    assert compiled._decoder_cache[1] is not decoder and compiled._decoder_cache[1].capacity > decoder.capacity
    assert counters["stats"]["unique_graphs"] == graphs  # no new compile


def test_a_step_that_does_not_compile_falls_back(tiny_model_dir, monkeypatch, capsys):
    """Flex attention that inductor cannot compile falls back to compiled SDPA; a step that does not
    compile at all runs uncompiled; each says so once."""
    calls = []

    def fake_compiled(torch):
        def step(decoder):
            calls.append(decoder.attention)
            if decoder.attention == "flex" or fail_all:
                raise RuntimeError("no kernel for this")
            return hf_slot_decoder.SlotDecoder._step_ops(decoder)
        return step

    monkeypatch.setattr(hf_slot_decoder, "_compiled_step", fake_compiled)
    monkeypatch.setattr(hf_slot_decoder, "_FAILED_COMPILES", set())
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6)
    reference = _backend(tiny_model_dir, "dynamic", 4).sample(PROMPTS, params)
    fail_all = False
    backend = _backend(tiny_model_dir, "slots", 4, options_extra={"compile": True, "attention": "flex"})
    assert backend.sampler_identity() == "slots/compiled/flex"
    _same(backend.sample(PROMPTS, params), reference)
    assert backend.sampler_identity() == "slots/compiled/sdpa"  # the sample cache files them under what ran
    assert calls[:2] == ["flex", "sdpa"] and backend._decoder_cache[1].attention == "sdpa"
    assert backend._decoder_cache[1].mode == "compiled eager"
    err = capsys.readouterr().err
    assert "with flex attention could not be compiled (RuntimeError: no kernel for this)" in err
    calls.clear()
    backend.sample(["a longer prompt than before " * 6], params)  # a new decoder: flex is not tried again
    assert calls[0] == "sdpa" and "could not be compiled" not in capsys.readouterr().err
    fail_all = True
    backend = _backend(tiny_model_dir, "slots", 4, options_extra={"compile": True})
    _same(backend.sample(PROMPTS, params), reference)
    assert backend.sampler_identity() == "slots/uncompiled/sdpa"
    assert backend._decoder_cache[1].mode == "eager"
    assert "runs uncompiled, with SDPA attention" in capsys.readouterr().err
    assert hf_slot_decoder._FAILED_COMPILES == {"flex", "sdpa", "uncompiled"}


def test_flex_block_mask_is_the_boolean_mask():
    """The block mask reads blocks up to each row's write column (all full but the last) and gives
    the same attention as SDPA with the boolean mask, grouped-query heads included."""
    import torch

    from lt_cli.backends import hf_slot_attention as attention

    g = torch.Generator().manual_seed(0)
    query = torch.randn(6, 8, 1, 16, generator=g)
    key, value = torch.randn(6, 2, 384, 16, generator=g), torch.randn(6, 2, 384, 16, generator=g)
    write, columns = torch.tensor([0, 5, 127, 128, 300, 383]), torch.arange(384)
    mask = attention.block_mask(torch, columns, write)
    assert mask.full_kv_num_blocks.flatten().tolist() == [0, 0, 0, 1, 2, 2]
    assert mask.kv_indices[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 2, 2]
    assert mask.to_dense()[:, 0, 0].tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    with torch.inference_mode(), pytest.warns(UserWarning, match="without torch.compile"):
        flex, _ = attention.slot_attention(None, query, key, value, mask, scaling=0.25)
    sdpa, _ = attention.slot_attention(None, query, key, value, attention.boolean_mask(columns, write), scaling=0.25)
    assert sdpa.shape == (6, 1, 8, 16)
    assert torch.allclose(flex, sdpa, atol=1e-5)


@pytest.mark.parametrize(("options", "env", "message"), [
    ({"compile": "sometimes"}, {}, "compile must be auto, true or false"),
    ({"attention": "paged"}, {}, "attention must be one of sdpa, flex"),
])
def test_bad_step_options_are_refused(tiny_model_dir, options, env, message):
    from lt_cli.errors import LtError

    with pytest.raises(LtError, match=message):
        _backend(tiny_model_dir, "slots", 4, options_extra=options)


def test_step_options_from_the_environment(tiny_model_dir, monkeypatch):
    from lt_cli.backends.hf_slot_decoder import StepOptions
    from lt_cli.errors import LtError

    backend = _backend(tiny_model_dir, "slots", 4)
    assert backend.step_options() == StepOptions(compile=False, graph=True, attention="sdpa")  # auto: compiled on CUDA only
    monkeypatch.setenv("LT_HF_COMPILE", "1")
    monkeypatch.setenv("LT_HF_ATTENTION", "flex")
    assert backend.step_options() == StepOptions(compile=True, graph=True, attention="flex")
    monkeypatch.setenv("LT_HF_ATTENTION", "xformers")
    with pytest.raises(LtError, match="attention must be one of"):
        backend.step_options()


def test_the_sample_cache_keys_the_slot_engine_settings(tiny_model_dir, monkeypatch):
    """bf16 samples of the slot engine (compiled or not) differ from the dynamic loop's at rounding
    level, so sample cache keys name the sampler; the dynamic loop's keys are those of before."""
    from lt_cli.cache import backend_identity

    dynamic = _backend(tiny_model_dir, "dynamic", 4)
    assert "sampler" not in backend_identity(dynamic, sampling=True)
    slots = _backend(tiny_model_dir, "slots", 4)
    compiled = _backend(tiny_model_dir, "slots", 4, options_extra={"compile": True, "attention": "flex"})
    assert backend_identity(slots, sampling=True)["sampler"] == "slots/uncompiled/sdpa"
    monkeypatch.setattr(hf_slot_decoder, "_FAILED_COMPILES", set())
    assert backend_identity(compiled, sampling=True)["sampler"] == "slots/compiled/flex"
    flex_only = _backend(tiny_model_dir, "slots", 4, options_extra={"compile": False, "attention": "flex"})
    assert backend_identity(flex_only, sampling=True)["sampler"] == "slots/compiled/flex"  # flex runs only compiled
    hf_slot_decoder._FAILED_COMPILES.add("flex")  # as after a failed compile in this process
    assert backend_identity(compiled, sampling=True)["sampler"] == "slots/compiled/sdpa"
    assert backend_identity(flex_only, sampling=True)["sampler"] == "slots/uncompiled/sdpa"
    assert backend_identity(compiled) == backend_identity(dynamic)  # scores do not depend on the sampler


def test_compiling_the_step_fuses_its_kernels(tmp_path):
    """bench/step_kernels.py's count on a 2-layer model: the compiled step keeps every matrix
    product (7 per layer + the head) and fuses the elementwise work into far fewer kernels."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "step_kernels.py"
    spec = importlib.util.spec_from_file_location("lt_bench_step_kernels", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = bench.build_model(tmp_path / "model", layers=2)
    eager = bench.eager_ops(bench.decoder_for(folder, rows=4, compiled=False))
    assert eager["aten::mm"] == 2 * 7 + 1 and sum(eager.values()) > 80
    code = "\n".join([
        "    extern_kernels.mm(buf0, arg1_1, out=buf1)",
        "    cpp_fused_add_mul_0(buf1, buf2)",
        "    triton_poi_fused_add_1.run(buf2, buf3, stream=stream0)",
        "    buf4 = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(buf3, buf5, buf6)",
        "    # extern_kernels.mm(comment, not a call)",
    ])
    assert bench.compiled_kernels(code) == {"extern_kernels.mm": 1, "fused": 2, "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default": 1}
