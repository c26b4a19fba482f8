"""The E-step library and `lt sample-thoughts`: prompts, seeds, cache, truncation rule, resume."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import FIXTURES, REPO
from lt_cli import formats
from lt_cli.backends.base import FINISH_LENGTH, FINISH_STOP, Sample, SamplingParams, Score
from lt_cli.chunking import ChunkingConfig
from lt_cli.errors import LtError
from lt_cli.estep import (
    SampleConfig,
    apply_scores,
    chunk_prompt,
    chunk_scoring_pair,
    sample_candidates,
    score_candidates,
    select_document,
)
from lt_cli.records import document_id
from lt_cli.sample_cache import SampleCache, cache_key
from lt_cli.seeding import sample_seed

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600"}
SOL, EOL, PRIOR, POST = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX, formats.POSTERIOR_PREFIX


class CharBackend:
    """A deterministic stand-in with a real distribution over characters, for fast unit tests.

    Each generated token is one of "ab " or the stop string, with fixed probabilities, drawn from
    ``random.Random(seed)``; scoring gives every continuation character log(1/4) and applies the
    base.py truncation policy with a character budget ``max_len``. It records its calls.
    """

    name = "char"
    model_id = "char-model"
    alphabet = ["a", "b", " ", EOL]
    probs = [0.4, 0.3, 0.2, 0.1]

    def __init__(self, max_len: int = 10_000):
        self.max_len = max_len
        self.sample_calls: list[int] = []
        self.score_calls: list[int] = []

    def sample(self, prompts, params: SamplingParams, seeds=None):
        self.sample_calls.append(len(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            row = []
            for j in range(params.n):
                rng = random.Random(seeds[i][j])
                text, lps, ids = "", [], []
                reason = FINISH_LENGTH
                for _ in range(params.max_new_tokens):
                    k = rng.choices(range(4), weights=self.probs)[0]
                    lps.append(math.log(self.probs[k]))
                    ids.append(k)
                    if self.alphabet[k] == EOL:
                        reason = FINISH_STOP
                        break
                    text += self.alphabet[k]
                row.append(Sample(text=text, token_ids=ids, token_logprobs=lps, finish_reason=reason))
            out.append(row)
        return out

    def score(self, pairs):
        self.score_calls.append(len(pairs))
        scores = []
        for context, continuation in pairs:
            overflow = max(0, len(context) + len(continuation) - self.max_len)
            cut_context = min(overflow, len(context))
            cut_cont = overflow - cut_context
            kept = len(continuation) - cut_cont
            lps = [math.log(0.25)] * kept
            scores.append(Score(logprob=math.fsum(lps), token_logprobs=lps, n_context_truncated=cut_context, n_continuation_truncated=cut_cont))
        return scores

    def chat(self, conversations, params, seeds=None):
        raise NotImplementedError

    def close(self):
        pass


def docs(n: int = 3) -> list[dict]:
    texts = [
        "First sentence here. Second one follows. Third is short. Fourth line. Fifth closes it.",
        "Alpha beta. Gamma delta! Epsilon? Zeta eta theta.",
        "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve.",
        "A lone sentence without friends",
    ]
    return [{"id": f"doc{i}", "text": texts[i % len(texts)]} for i in range(n)]


# --------------------------------------------------------------------------------- exact prompts
def test_posterior_prompt_and_joint_pair_exact_strings_fixed_mode():
    chunks = [{"text": "A1. "}, {"text": "B2. "}, {"text": "C3. "}, {"text": "D4. "}, {"text": "E5."}]
    config = SampleConfig(prefix_chunks=3)
    assert chunk_prompt(chunks, 0, config) == f"{SOL}{EOL}A1. {SOL}{POST}"
    assert chunk_prompt(chunks, 4, config) == f"B2. C3. D4. {SOL}{EOL}E5.{SOL}{POST}"
    pair = chunk_scoring_pair(chunks, 0, "think", config)
    assert (pair.context, pair.continuation) == ("", f"{SOL}{PRIOR}think{EOL}A1. ")
    pair = chunk_scoring_pair(chunks, 2, "z", config)
    assert (pair.context, pair.continuation) == ("A1. B2. ", f"{SOL}{PRIOR}z{EOL}C3. ")


def test_posterior_prompt_and_joint_pair_exact_strings_reference_quirks():
    chunks = [{"text": "A1. "}, {"text": "B2."}]
    config = SampleConfig(prefix_chunks=3, reference_quirks=True)
    assert chunk_prompt(chunks, 0, config) == f"A1. {SOL}{POST}"
    assert chunk_prompt(chunks, 1, config) == f"A1. {SOL}{EOL}B2.{SOL}{POST}"
    pair = chunk_scoring_pair(chunks, 0, "think", config)
    assert (pair.context, pair.continuation) == (SOL, f"{PRIOR}think{EOL}A1. ")
    pair = chunk_scoring_pair(chunks, 1, "z", config)
    assert (pair.context, pair.continuation) == (f"A1. {SOL}", f"{PRIOR}z{EOL}B2.")


# --------------------------------------------------------------------------------- sampling
def test_candidates_schema_seeds_and_log_w():
    backend = CharBackend()
    config = SampleConfig(k=3, max_new_tokens=20)
    out = list(sample_candidates(backend, docs(2), config))
    assert len(out) == 2
    for doc in out:
        assert doc["num_chunks"] == len(doc["chunks"]) >= 1
        assert "".join(c["text"] for c in doc["chunks"]) == doc["text"]
        for i, chunk in enumerate(doc["chunks"]):
            assert len(chunk["candidates"]) == 3
            assert chunk["num_suffix_token_truncated"] == 0
            for j, cand in enumerate(chunk["candidates"]):
                assert set(cand) == {"latent", "log_q", "log_p", "log_w", "finished", "n_tokens"}
                # the sample is exactly what the backend draws with the documented seed
                expected = CharBackend().sample(["x"], config.sampling_params(), [[sample_seed(42, doc["id"], i, j)]])[0][0]
                assert cand["latent"] == expected.text
                assert cand["n_tokens"] == len(expected.token_ids)
                assert cand["finished"] == (expected.finish_reason != FINISH_LENGTH)
                assert cand["log_q"] == pytest.approx(expected.logprob)
                pair = chunk_scoring_pair(doc["chunks"], i, cand["latent"], config)
                assert cand["log_p"] == pytest.approx(len(pair.continuation) * math.log(0.25))
                assert cand["log_w"] == pytest.approx(cand["log_p"] - cand["log_q"])
    # one sample call and one score call per group of documents
    assert backend.sample_calls and len(backend.sample_calls) == len(backend.score_calls) == 1


def test_same_seed_same_candidates_other_seed_differs_and_batching_invariant():
    a = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, docs_per_call=1)))
    b = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, docs_per_call=3)))
    c = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, seed=1)))
    assert orjson.dumps(a) == orjson.dumps(b)
    assert orjson.dumps(a) != orjson.dumps(c)


def test_no_score_leaves_weights_missing_and_score_candidates_fills_them():
    config = SampleConfig(k=2, max_new_tokens=10, score=False)
    unscored = list(sample_candidates(CharBackend(), docs(2), config))
    assert all(c["log_p"] is None and c["log_w"] is None for d in unscored for ch in d["chunks"] for c in ch["candidates"])
    scored = list(score_candidates(CharBackend(), unscored, config))
    full = list(sample_candidates(CharBackend(), docs(2), SampleConfig(k=2, max_new_tokens=10)))
    assert orjson.dumps(scored) == orjson.dumps(full)


def test_raw_and_prechunked_inputs_agree():
    from lt_cli.chunking import chunk_record

    config = SampleConfig(k=2, max_new_tokens=10)
    raw = list(sample_candidates(CharBackend(), docs(3), config))
    pre = list(sample_candidates(CharBackend(), [chunk_record(d, ChunkingConfig()) for d in docs(3)], config))
    assert orjson.dumps(raw) == orjson.dumps(pre)


def test_cache_makes_rerun_free_and_larger_k_reuses_samples(tmp_path):
    cache = SampleCache(tmp_path / "c.sqlite")
    first_backend = CharBackend()
    k2 = list(sample_candidates(first_backend, docs(2), SampleConfig(k=2, max_new_tokens=12), cache))
    n_chunks = sum(len(d["chunks"]) for d in k2)
    assert first_backend.sample_calls == [2 * n_chunks]
    again = CharBackend()
    k2_again = list(sample_candidates(again, docs(2), SampleConfig(k=2, max_new_tokens=12), cache))
    assert again.sample_calls == [] and again.score_calls == []
    assert orjson.dumps(k2_again) == orjson.dumps(k2)
    bigger = CharBackend()
    k4 = list(sample_candidates(bigger, docs(2), SampleConfig(k=4, max_new_tokens=12), cache))
    assert bigger.sample_calls == [2 * n_chunks]  # only sample indices 2 and 3 are new
    for small, large in zip(k2, k4):
        for cs, cl in zip(small["chunks"], large["chunks"]):
            assert [c["latent"] for c in cl["candidates"][:2]] == [c["latent"] for c in cs["candidates"]]
    # a different seed or sampling parameter is a different key
    other = CharBackend()
    list(sample_candidates(other, docs(2), SampleConfig(k=2, max_new_tokens=13), cache))
    assert other.sample_calls == [2 * n_chunks]
    assert cache_key("x", a=1, b=[1, 2]) == cache_key("x", b=[1, 2], a=1) != cache_key("x", a=2, b=[1, 2])
    cache.close()


def test_truncation_rule_cuts_the_same_suffix_tokens_from_every_candidate():
    chunk = {"text": "xyz", "candidates": [{"latent": "l", "log_q": -1.0}, {"latent": "longer", "log_q": -2.0}]}
    scores = [
        Score(logprob=-6.0, token_logprobs=[-1.0] * 6, n_context_truncated=3, n_continuation_truncated=0),
        Score(logprob=-4.0, token_logprobs=[-1.0] * 4, n_context_truncated=5, n_continuation_truncated=2),
    ]
    apply_scores(chunk, scores)
    assert chunk["num_suffix_token_truncated"] == 2 and chunk["num_prefix_token_truncated"] == 5
    assert chunk["candidates"][0]["log_p"] == pytest.approx(-4.0)  # two trailing tokens dropped
    assert chunk["candidates"][1]["log_p"] == pytest.approx(-4.0)
    assert chunk["candidates"][0]["log_w"] == pytest.approx(-3.0)
    assert chunk["candidates"][1]["log_w"] == pytest.approx(-2.0)


def test_truncation_through_the_backend_policy():
    config = SampleConfig(k=3, max_new_tokens=40, prefix_chunks=3)
    text = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve. Thirteen. Fourteen."
    [doc] = list(sample_candidates(CharBackend(max_len=40), [{"id": "t", "text": text}], config))
    assert any(c["num_suffix_token_truncated"] > 0 for c in doc["chunks"])
    assert any(c["num_prefix_token_truncated"] > 0 for c in doc["chunks"][1:])
    for i, chunk in enumerate(doc["chunks"]):
        lengths = [len(chunk_scoring_pair(doc["chunks"], i, c["latent"], config).continuation) for c in chunk["candidates"]]
        context = len(chunk_scoring_pair(doc["chunks"], i, "", config).context)
        overflow = max(0, context + max(lengths) - 40)
        assert chunk["num_suffix_token_truncated"] == max(0, overflow - context)
        scored = [L - chunk["num_suffix_token_truncated"] for L in lengths]
        assert [c["log_p"] for c in chunk["candidates"]] == pytest.approx([n * math.log(0.25) for n in scored])


def test_api_like_sample_without_logprobs_is_an_error():
    class NoLogprobs(CharBackend):
        def sample(self, prompts, params, seeds=None):
            return [[Sample(text="z", token_ids=[], token_logprobs=[], finish_reason=FINISH_STOP)] for _ in prompts]

    with pytest.raises(LtError, match="log-probs"):
        list(sample_candidates(NoLogprobs(), docs(1), SampleConfig(k=1)))


def test_bad_config_values_are_rejected():
    with pytest.raises(LtError):
        SampleConfig(k=0)
    with pytest.raises(LtError):
        SampleConfig(max_new_tokens=0)
    with pytest.raises(LtError):
        SampleConfig(prefix_chunks=-1)
