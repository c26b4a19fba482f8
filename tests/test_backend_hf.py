"""The transformers backend against the backend contract (tests/backend_contract.py) and its own details."""

from __future__ import annotations

import math

import pytest

import backend_contract as contract
from lt_cli.backends import canonical_backend_name, load_backend
from lt_cli.backends.base import FINISH_EOS, FINISH_LENGTH, Backend, BackendConfig, SamplingParams
from lt_cli.errors import LtError

PROMPTS = ["hello", "a much longer prompt than the first one", "x"]


@pytest.fixture(scope="module", params=["dynamic", "slots"])
def engine(request):
    """Every contract test runs on both sampling engines (lt_cli/backends/hf_sample.py, hf_engine.py)."""
    return request.param


@pytest.fixture(scope="module")
def backend(tiny_model_dir, engine):
    backend = load_backend("transformers", BackendConfig(model=str(tiny_model_dir), batch_size=8, max_model_len=64, options={"engine": engine}))
    assert backend.sampling_engine() == engine
    return backend


@pytest.fixture(scope="module")
def peaky_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a sharpened output layer: a peaked next-token distribution, so a wrong
    temperature or top-p changes frequencies enough for a chi-square test to notice."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(6.0)
    out = tmp_path_factory.mktemp("peaky-model")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def peaky(peaky_dir, engine):
    return load_backend("hf", BackendConfig(model=str(peaky_dir), batch_size=512, options={"engine": engine}))


def test_is_a_backend(backend):
    assert isinstance(backend, Backend)
    assert backend.name == "transformers"
    assert backend.max_model_len == 64
    assert backend.count_tokens("hello") == 5  # byte tokenizer: one token per byte, no BOS counted
    assert backend.count_tokens("<|START_OF_LATENT|>a") == 2


def test_backend_names():
    assert canonical_backend_name("hf") == "transformers"
    assert canonical_backend_name("Transformers") == "transformers"
    with pytest.raises(LtError, match="unknown backend"):
        canonical_backend_name("llamacpp")
    with pytest.raises(LtError, match="unknown backend"):
        load_backend("nope", BackendConfig(model="x"))


def test_bad_model_path():
    with pytest.raises(LtError, match="not found"):
        load_backend("hf", BackendConfig(model="./no/such/model-folder"))


def test_unknown_option(tiny_model_dir):
    with pytest.raises(LtError, match="unknown transformers backend option"):
        load_backend("hf", BackendConfig(model=str(tiny_model_dir), options={"warp_speed": 9}))


def test_sample_shapes_and_lengths(backend):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=7)
    out = contract.check_sample_shapes(backend, PROMPTS, params)
    for row in out:
        for s in row:
            if s.finish_reason == FINISH_LENGTH:
                assert len(s.token_ids) == 7
            if s.finish_reason == FINISH_EOS:
                assert s.token_ids[-1] in backend.eos_ids and "</s>" not in s.text


def test_eos_ends_a_sample(backend):
    """Over many long samples some end with EOS: the EOS id and its log-prob are kept, not its text."""
    out = backend.sample(["q"], SamplingParams(n=64, temperature=1.0, max_new_tokens=40), [list(range(64))])[0]
    eos = [s for s in out if s.finish_reason == FINISH_EOS]
    assert eos, "no sample ended with EOS"
    for s in eos:
        assert s.token_ids[-1] == backend.tokenizer.eos_token_id
        assert len(s.token_logprobs) == len(s.token_ids)
        assert s.text == backend.decode(s.token_ids[:-1])


def test_logq_matches_score(backend):
    checked = contract.check_logq_matches_score(backend, PROMPTS, n=32, max_new_tokens=3)
    assert checked >= 4


def test_logq_matches_score_longer(backend):
    """Longer samples (more incremental decode steps, rows finishing at different times)."""
    contract.check_logq_matches_score(backend, ["", "The"], n=48, max_new_tokens=6, min_checked=1)


@pytest.mark.parametrize(
    ("temperature", "top_p", "wrong"),
    [
        (1.0, 1.0, [(0.7, 1.0), (1.0, 0.8)]),
        (0.7, 1.0, [(1.0, 1.0)]),
        (1.0, 0.9, [(1.0, 1.0)]),
        (0.7, 0.9, [(1.0, 0.9), (0.7, 1.0)]),
    ],
)
def test_token_frequencies(peaky, peaky_dir, temperature, top_p, wrong):
    reference = contract.reference_next_token_logprobs(str(peaky_dir), "hello")
    result = contract.check_token_frequencies(peaky, "hello", reference, temperature=temperature, top_p=top_p, n=3000, wrong=wrong)
    assert result["dof"] >= 3


def test_seed_determinism(backend):
    contract.check_seed_determinism(backend, PROMPTS, SamplingParams(n=3, temperature=0.8, top_p=0.95, max_new_tokens=8))


def test_default_seeds_are_deterministic(backend):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=5)
    assert [s.token_ids for s in backend.sample(["ab"], params)[0]] == [s.token_ids for s in backend.sample(["ab"], params)[0]]


def test_sampling_batch_invariance(backend):
    contract.check_sampling_batch_invariance(backend, PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=10))


def test_sampling_batch_invariance_with_stops_and_top_p(backend):
    """Rows stop at different steps (compaction of the batch and cache) yet match their solo runs."""
    params = SamplingParams(n=4, temperature=0.9, top_p=0.8, max_new_tokens=12, stop=("e", "a", "o"))
    contract.check_sampling_batch_invariance(backend, PROMPTS, params)


def test_batch_size_does_not_change_samples(tiny_model_dir, backend):
    small = load_backend("hf", BackendConfig(model=str(tiny_model_dir), batch_size=1, max_model_len=64, options=dict(backend.config.options)))
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    seeds = [[7, 8, 9]] * len(PROMPTS)
    a = backend.sample(PROMPTS, params, seeds)
    b = small.sample(PROMPTS, params, seeds)
    assert [[s.token_ids for s in row] for row in a] == [[s.token_ids for s in row] for row in b]


def test_score_batch_invariance(backend):
    pairs = [("hello", " world"), ("hello", " there, friend"), ("hello", "!"), ("other context", " world"), ("", "abc"), ("x", "y")]
    contract.check_score_batch_invariance(backend, pairs)


def test_score_batch_size_invariance(tiny_model_dir, backend):
    pairs = [("ctx", " one"), ("ctx", " two two"), ("longer context here", " three"), ("z", "four four four")]
    small = load_backend("hf", BackendConfig(model=str(tiny_model_dir), batch_size=1, max_model_len=64, options={"score_batch_tokens": 8}))
    for a, b in zip(backend.score(pairs), small.score(pairs)):
        assert abs(a.logprob - b.logprob) < 1e-4
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_score_matches_a_plain_forward(tiny_model_dir, backend):
    """Independent reference: one unbatched forward over BOS + context + continuation."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    context, continuation = "hello", " world"
    ids = backend.encode(context) + backend.encode(continuation, add_bos=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    n_ctx = len(backend.encode(context))
    want = [float(logprobs[t - 1, ids[t]]) for t in range(n_ctx, len(ids))]
    got = backend.score([(context, continuation)])[0]
    assert got.token_logprobs == pytest.approx(want, abs=1e-4)
    assert got.logprob == pytest.approx(sum(want), abs=1e-4)


def test_empty_continuation_and_no_bos(tiny_model_dir, backend):
    assert backend.score([("hello", "")])[0].n_tokens == 0
    no_bos = load_backend("hf", BackendConfig(model=str(tiny_model_dir), add_bos=False, max_model_len=64))
    assert no_bos.encode("ab") == [no_bos.tokenizer.convert_tokens_to_ids("a"), no_bos.tokenizer.convert_tokens_to_ids("b")]
    with pytest.raises(LtError, match="empty context"):
        no_bos.score([("", "abc")])
    assert no_bos.score([("a", "bc")])[0].n_tokens == 2


def test_truncation_reported(backend, capsys):
    before = backend.n_truncated_pairs
    contract.check_truncation_reported(backend)
    assert backend.n_truncated_pairs >= before + 2
    assert "truncated" in capsys.readouterr().err


def test_long_prompt_is_cut_for_sampling(backend, capsys):
    out = backend.sample(["ab" * 100], SamplingParams(n=1, temperature=1.0, max_new_tokens=200))[0][0]
    assert backend.n_truncated_prompts >= 1
    assert "cut from the front" in capsys.readouterr().err
    assert out.finish_reason in (FINISH_LENGTH, FINISH_EOS)
    assert len(out.token_ids) <= 64 // 4  # the room left for new tokens


def test_stop_strings(backend):
    contract.check_stop_strings(backend, "hello")


def test_greedy(backend):
    contract.check_greedy(backend, PROMPTS)
    out = backend.sample(["hello"], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))[0][0]
    # greedy reports the untempered model's log-probs (as vLLM does), not log 1 = 0
    scored = backend.score([("hello", out.text)])[0] if backend.encode(out.text, add_bos=False) == out.token_ids else None
    assert all(lp < 0 for lp in out.token_logprobs)
    if scored is not None:
        assert scored.logprob == pytest.approx(out.logprob, abs=1e-4)


def test_stop_at_a_special_token(backend):
    """The E-step stops at <|END_OF_LATENT|>: the text ends before it, the ids keep its id."""
    eol = backend.tokenizer.convert_tokens_to_ids("<|END_OF_LATENT|>")
    ids = backend.encode("ab", add_bos=False) + [eol]
    stops = ("<|END_OF_LATENT|>",)
    assert backend._finish_reason(ids[:2], stops, 10, 50) is None
    assert backend._finish_reason(ids, stops, 10, 50) == "stop"
    sample = backend._make_sample(ids, [-1.0, -2.0, -3.0], "stop", stops)
    assert sample.text == "ab" and sample.token_ids == ids and sample.logprob == -6.0
    assert backend._finish_reason(ids[:2], stops, 64, 50) == FINISH_LENGTH  # context full


def test_empty_prompt_without_bos(tiny_model_dir):
    no_bos = load_backend("hf", BackendConfig(model=str(tiny_model_dir), add_bos=False, max_model_len=64))
    with pytest.raises(LtError, match="empty prompt"):
        no_bos.sample([""], SamplingParams(n=1, max_new_tokens=2))
    assert len(no_bos.sample(["a"], SamplingParams(n=1, max_new_tokens=2))[0][0].token_ids) >= 1


def test_special_tokens_are_single_ids(backend):
    out = backend.score([("<|START_OF_LATENT|>", "a<|END_OF_LATENT|>")])[0]
    assert out.n_tokens == 2


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(n=0),
        SamplingParams(temperature=-1.0),
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=1.5),
        SamplingParams(max_new_tokens=0),
        SamplingParams(stop=("",)),
    ],
)
def test_bad_sampling_params(backend, params):
    with pytest.raises(LtError):
        backend.sample(["a"], params)


def test_bad_seeds(backend):
    with pytest.raises(LtError, match="seeds"):
        backend.sample(["a", "b"], SamplingParams(n=2), [[1, 2]])
    with pytest.raises(LtError, match="seeds"):
        backend.sample(["a"], SamplingParams(n=2), [[1]])


def test_chat_needs_a_template(backend):
    with pytest.raises(LtError, match="chat template"):
        backend.chat([[{"role": "user", "content": "hi"}]], SamplingParams(n=1))


def test_chat_with_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    folder = tmp_path / "chat-model"
    import shutil

    shutil.copytree(tiny_model_dir, folder)
    tokenizer.save_pretrained(folder)
    chat_backend = load_backend("hf", BackendConfig(model=str(folder)))
    conversation = [{"role": "user", "content": "hi"}]
    assert chat_backend.render_chat(conversation) == "[user]hi\n[assistant]"
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=5)
    chatted = chat_backend.chat([conversation], params, [[1, 2]])
    sampled = chat_backend.sample(["[user]hi\n[assistant]"], params, [[1, 2]])
    assert [s.token_ids for s in chatted[0]] == [s.token_ids for s in sampled[0]]
    with pytest.raises(LtError, match="role"):
        chat_backend.render_chat([{"content": "no role"}])


# ------------------------------------------------------------------------------ real model


@pytest.mark.real_model
def test_smollm2_facts(smollm2_dir):
    real = load_backend("hf", BackendConfig(model=str(smollm2_dir)))
    greedy = real.sample(["The capital of France is"], SamplingParams(n=1, temperature=0.0, max_new_tokens=3))[0][0]
    assert greedy.text.startswith(" Paris"), greedy.text
    paris, berlin = real.score([("", "The capital of France is Paris."), ("", "The capital of France is Berlin.")])
    assert paris.logprob > berlin.logprob + 2.0
    assert math.isfinite(paris.logprob) and paris.n_tokens == real.count_tokens("The capital of France is Paris.")


@pytest.mark.real_model
def test_smollm2_contract(smollm2_dir, capsys):
    real = load_backend("hf", BackendConfig(model=str(smollm2_dir), batch_size=16))
    assert "lacks the latent special tokens" in capsys.readouterr().err
    contract.check_logq_matches_score(real, ["The capital of France is", "Once upon a time"], n=4, max_new_tokens=5, min_checked=4)
    contract.check_sampling_batch_invariance(real, ["Hello", "Two plus two is"], SamplingParams(n=2, temperature=0.8, top_p=0.9, max_new_tokens=6))
    chat = real.chat([[{"role": "user", "content": "What is 15 times 4?"}]], SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    assert "60" in chat[0][0].text
