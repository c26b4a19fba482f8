"""Adaptive E-step sampling (`lt sample-thoughts --k-max`): round schedule, stopping rules, the
prefix property, one backend call per round, resume, and how `lt select` treats the result."""

from __future__ import annotations

import math

import orjson
import pytest

from fakes import ChoiceBackend
from lt_cli.errors import LtError
from lt_cli.estep import SampleConfig, SelectionStats, chunk_prompt, first_candidates, round_sizes, sample_candidates, select_document, should_stop
from lt_cli.estep.adaptive import pooled_weights, rounds_for, unbiased_counts
from lt_cli.seeding import sample_seed

from conftest import kill_9_after_records
from test_estep import ENV, LT, cli, small_corpus


def qa_docs(n: int) -> list[dict]:
    """Demo-shaped documents: a fixed problem chunk (never sampled) and an answer chunk."""
    return [{"id": f"d{i}", "chunks": [{"text": f"Q: {i}", "latent": "", "latent_fixed": True}, {"text": " A:1"}]} for i in range(n)]


def cand(latent: str, log_p: float, log_q: float = -1.0) -> dict:
    return {"latent": latent, "log_p": log_p, "log_q": log_q, "log_w": log_p - log_q}


# --------------------------------------------------------------------------------- pure functions
def test_round_sizes_double_or_step_and_stop_at_k_max():
    assert round_sizes(1, 8) == [1, 2, 4, 8]
    assert round_sizes(2, 8) == [2, 4, 8]
    assert round_sizes(3, 8) == [3, 6, 8]
    assert round_sizes(2, 8, 3) == [2, 5, 8]
    assert round_sizes(4, 4) == [4]
    assert rounds_for([1, 2, 4, 8], 3) == [1, 2, 3] and rounds_for([8], 4) == [4] and rounds_for([2, 4], 4) == [2, 4]
    with pytest.raises(ValueError):
        round_sizes(3, 2)


def test_coverage_rule_is_a_bound_on_the_posterior_mass_of_distinct_latents():
    # exp(-2.5) = 0.082 < 0.1: not yet; a second distinct latent adds exp(-3) = 0.050 -> 0.132
    assert not should_stop([cand("a", -2.5)], "coverage", 0.1)
    assert should_stop([cand("a", -2.5), cand("b", -3.0)], "coverage", 0.1)
    # the same latent twice is one latent: its probability counts once
    assert not should_stop([cand("a", -2.5), cand("a", -2.5)], "coverage", 0.1)
    # a confidently repeated wrong latent never stops it, however flat its weights
    assert not should_stop([cand("w", -20.0, -0.01)] * 8, "coverage")
    # log p of a chunk whose text was cut for scoring is no bound
    assert not should_stop([cand("a", -0.1)], "coverage", 0.1, truncated=True)
    assert should_stop([cand("a", math.log(0.1))], "coverage")  # the default threshold is 0.1, inclusive


def test_weight_rules_mass_repeat_ess():
    heavy_and_light = [cand("a", -1.0), cand("b", -6.0)]  # p = 0.9933, 0.0067
    assert should_stop(heavy_and_light, "mass", 0.99) and not should_stop(heavy_and_light, "mass", 0.995)
    assert not should_stop(heavy_and_light, "repeat", 0.9), "the heaviest latent was drawn once"
    assert should_stop(heavy_and_light + [cand("a", -1.0)], "repeat", 0.9)
    # mass pools identical latents: two copies of "b" against one "a" with equal weights
    assert pooled_weights(["a", "b", "b"], [0.0, 0.0, 0.0]) == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    assert should_stop([cand("a", 0.0), cand("b", 0.0), cand("b", 0.0)], "mass", 0.6)
    # ESS / n: flat weights stop, one dominant weight does not
    assert should_stop([cand("a", -1.0), cand("b", -1.0)], "ess", 0.9)
    assert not should_stop(heavy_and_light, "ess", 0.6)  # ESS 1.013 of 2
    assert not should_stop([cand("a", -math.inf)], "ess", 0.5)
    with pytest.raises(ValueError):
        should_stop([cand("a", 0.0)], "best")


def test_config_checks():
    with pytest.raises(LtError, match="--k-max must be at least --k"):
        SampleConfig(k=4, k_max=2)
    with pytest.raises(LtError, match="--stop-rule"):
        SampleConfig(k_max=8, stop_rule="best")
    with pytest.raises(LtError, match="--stop-threshold"):
        SampleConfig(k_max=8, stop_threshold=1.5)
    with pytest.raises(LtError, match="needs --k 2"):
        SampleConfig(k=1, k_max=8, stop_rule="mass")
    with pytest.raises(LtError, match="--k-step"):
        SampleConfig(k_max=8, k_step=0)
    with pytest.raises(LtError, match="--no-score"):
        list(sample_candidates(ChoiceBackend(), qa_docs(1), SampleConfig(k=1, k_max=4, score=False)))


# --------------------------------------------------------------------------------- sampling in rounds
def test_adaptive_set_is_a_prefix_of_the_k_max_set_and_stops_where_the_rule_says():
    docs = qa_docs(40)
    adaptive = list(sample_candidates(ChoiceBackend(), docs, SampleConfig(k=1, k_max=8, docs_per_call=40)))
    fixed = list(sample_candidates(ChoiceBackend(), docs, SampleConfig(k=8, docs_per_call=40)))
    menu = ChoiceBackend()
    stops = []
    for a_doc, f_doc in zip(adaptive, fixed):
        assert a_doc["estep"] == {"model_parameters": 1000, "k": 1, "k_max": 8, "k_step": None, "stop_rule": "coverage", "stop_threshold": 0.1}
        assert f_doc["estep"] == {"model_parameters": 1000}
        problem, answer = a_doc["chunks"]
        assert len(problem["candidates"]) == 1 and "sampling" not in problem  # fixed chunk: first-round copies, never sampled
        n = len(answer["candidates"])
        assert answer["candidates"] == f_doc["chunks"][1]["candidates"][:n]  # the same samples, the same log p
        # the coverage rule stops after the first round (1, 2, 4, 8) whose samples include "right"
        # (joint probability 0.4 >= 0.1); the wrong latents (exp(-20)) never reach 0.1
        drawn = [menu.draw(sample_seed(42, a_doc["id"], 1, j)) for j in range(8)]
        first_right = drawn.index("right") + 1 if "right" in drawn else None
        expected = next((size for size in (1, 2, 4, 8) if first_right is not None and size >= first_right), 8)
        assert n == expected, (drawn, n)
        assert answer["sampling"]["rounds"] == [s for s in (1, 2, 4, 8) if s <= n]
        assert answer["sampling"]["stopped"] == ("rule" if first_right is not None and first_right <= n else "k_max")
        assert answer["sampling"]["prompt_tokens"] == len(chunk_prompt(a_doc["chunks"], 1, SampleConfig()))  # the fake counts characters
        stops.append(n)
    assert set(stops) >= {1, 2, 8}, stops  # the menu gives early, late and no stops in 40 documents


def test_one_sampling_and_one_scoring_call_per_round():
    backend = ChoiceBackend()
    out = list(sample_candidates(backend, qa_docs(30), SampleConfig(k=1, k_max=8, docs_per_call=30)))
    ns = [len(d["chunks"][1]["candidates"]) for d in out]
    # round r samples the chunks still open: all 30, then those that did not stop at 1, 2, 4
    open_after = [sum(1 for n in ns if n > size) for size in (1, 2, 4)]
    expected = [30] + [count * step for count, step in zip(open_after, (1, 2, 4)) if count]
    assert backend.sample_calls == expected
    # scoring: round 1 also scores the 30 fixed problem chunks; later rounds only the new samples
    assert backend.score_calls == [60] + expected[1:]


def test_fixed_k_schedule_step_and_other_rules_run():
    out = list(sample_candidates(ChoiceBackend(), qa_docs(12), SampleConfig(k=2, k_max=7, k_step=2, stop_rule="mass", stop_threshold=0.99)))
    for doc in out:
        chunk = doc["chunks"][1]
        assert chunk["sampling"]["rounds"] == [2, 4, 6, 7][: len(chunk["sampling"]["rounds"])]
        assert len(chunk["candidates"]) == chunk["sampling"]["rounds"][-1]


def test_resumed_group_is_recomputed_with_the_same_rounds():
    config = SampleConfig(k=1, k_max=8, docs_per_call=4)
    full = list(sample_candidates(ChoiceBackend(), qa_docs(10), config))
    tail = list(sample_candidates(ChoiceBackend(), qa_docs(10), config, skip=6))
    assert orjson.dumps(tail) == orjson.dumps(full[6:])


# --------------------------------------------------------------------------------- lt select
def test_select_on_adaptive_candidates_reports_only_unbiased_elbo():
    docs = list(sample_candidates(ChoiceBackend(), qa_docs(20), SampleConfig(k=2, k_max=8)))
    assert len({len(d["chunks"][1]["candidates"]) for d in docs}) > 1, "the test needs chunks that stopped at different rounds"
    for doc in docs:
        assert unbiased_counts(doc["chunks"]) == 2
        out = select_document(doc, "importance", 42)
        assert set(out["elbo"]) == {"1", "2"}  # only the first round: drawn whatever the weights
        assert out["chunks"][1]["latent"] == doc["chunks"][1]["candidates"][out["chunks"][1]["selected"]]["latent"]
    stats = SelectionStats()
    for doc in docs:
        stats.add(doc)
    data = stats.to_json()
    assert data["k"] is None and set(data["elbo_n_per_document"]) == {"1", "2"}
    compute = data["compute"]
    ns = [len(d["chunks"][1]["candidates"]) for d in docs]
    assert compute["samples"] == sum(ns) and compute["samples_per_chunk"] == {"mean": sum(ns) / 20, "min": min(ns), "max": max(ns)}
    assert compute["stopped_by_rule"] == sum(1 for d in docs if d["chunks"][1]["sampling"]["stopped"] == "rule")
    # a fixed-K stream with mixed K is still refused
    with pytest.raises(ValueError, match="select one K"):
        fixed = SelectionStats()
        fixed.add({"chunks": [{"text": "a", "candidates": [cand("x", -1.0)]}, {"text": "b", "candidates": [cand("x", -1.0)] * 2}]})


def test_select_k_on_adaptive_candidates_caps_them():
    docs = list(sample_candidates(ChoiceBackend(), qa_docs(20), SampleConfig(k=1, k_max=8)))
    for doc in docs:
        n = len(doc["chunks"][1]["candidates"])
        capped = first_candidates(orjson.loads(orjson.dumps(doc)), 2)
        chunk = capped["chunks"][1]
        assert len(chunk["candidates"]) == min(n, 2)
        assert chunk["sampling"]["rounds"] == [1, 2][: len(chunk["sampling"]["rounds"])]
        # cut chunks say whether the rule holds on their first 2 (a right latent among them)
        holds = "right" in [c["latent"] for c in chunk["candidates"]]
        assert chunk["sampling"]["stopped"] == (("rule" if holds else "k_max") if n > 2 else doc["chunks"][1]["sampling"]["stopped"])
        assert capped["estep"]["k_max"] == 2


def test_cli_adaptive_select_without_k(tmp_path):
    candidates = tmp_path / "cand.jsonl"
    docs = list(sample_candidates(ChoiceBackend(), qa_docs(6), SampleConfig(k=1, k_max=4)))
    candidates.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    code, out, err = cli(["select", candidates])
    assert code == 0, err
    assert "(adaptive)" in err and "ELBO_1 per document" in err and "ELBO_2" not in err
    assert len(out.splitlines()) == 6


# --------------------------------------------------------------------------------- a real model
def test_adaptive_with_a_real_model_is_a_prefix_of_the_fixed_run(tmp_path, tiny_model_dir):
    corpus = small_corpus(tmp_path / "docs.jsonl", 3)
    common = ["sample-thoughts", "--model", tiny_model_dir, "--max-new-tokens", "8", "--dtype", "float32", corpus]
    code, fixed, err = cli(common + ["--k", "4"])
    assert code == 0, err
    code, adaptive, err = cli(common + ["--k", "2", "--k-max", "4", "--stop-rule", "mass", "--stop-threshold", "0.9"])
    assert code == 0, err
    assert "compute:" in err and "per sampled chunk" in err
    ns = []
    for f_doc, a_doc in zip(map(orjson.loads, fixed.splitlines()), map(orjson.loads, adaptive.splitlines())):
        for f_chunk, a_chunk in zip(f_doc["chunks"], a_doc["chunks"]):
            n = len(a_chunk["candidates"])
            ns.append(n)
            # the same samples; their log-probs come from other batches, equal up to float rounding
            keys = ("latent", "n_tokens", "finished")
            assert [{k: c[k] for k in keys} for c in a_chunk["candidates"]] == [{k: c[k] for k in keys} for c in f_chunk["candidates"][:n]]
            assert [c["log_q"] for c in a_chunk["candidates"]] == pytest.approx([c["log_q"] for c in f_chunk["candidates"][:n]], rel=1e-5)
            assert [c["log_p"] for c in a_chunk["candidates"]] == pytest.approx([c["log_p"] for c in f_chunk["candidates"][:n]], rel=1e-5)
            assert a_chunk["sampling"]["prompt_tokens"] == f_chunk["sampling"]["prompt_tokens"]
    assert len(set(ns)) > 1, f"the tiny model should stop some chunks early and not others: {ns}"


@pytest.mark.slow
def test_adaptive_kill_9_and_resume_is_byte_identical(tmp_path, tiny_model_dir):
    n_docs = 16
    corpus = small_corpus(tmp_path / "docs.jsonl", n_docs)
    args = ["sample-thoughts", "--model", tiny_model_dir, "--k", "2", "--k-max", "8", "--stop-rule", "mass", "--max-new-tokens", "24",
            "--docs-per-call", "2", "--dtype", "float32", corpus]
    reference = tmp_path / "reference.jsonl"
    code, _, err = cli(args + ["-o", reference, "--no-cache"])
    assert code == 0, err
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    done = kill_9_after_records(LT + args + ["-o", out], partial, 3, ENV)
    assert not out.exists() and 3 <= done < n_docs
    code, _, err = cli(args + ["-o", out])
    assert code == 0 and "resuming after" in err, err
    assert out.read_bytes() == reference.read_bytes()
    stats = orjson.loads((tmp_path / "out.jsonl.stats.json").read_bytes())["stats"]
    assert stats == orjson.loads((tmp_path / "reference.jsonl.stats.json").read_bytes())["stats"]


def test_rounds_keep_the_uniform_truncation_cut_across_all_candidates():
    """Later rounds score only their new candidates; when their cut at the end of the chunk differs
    from the earlier rounds', the chunk is rescored whole, so every candidate loses the same tokens."""
    from fakes import CharBackend

    from lt_cli.estep import chunk_scoring_pair

    config = SampleConfig(k=2, k_max=8, stop_rule="ess", stop_threshold=0.999, max_new_tokens=40, prefix_chunks=3)
    text = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve. Thirteen. Fourteen."
    backend = CharBackend(max_len=40)
    [doc] = list(sample_candidates(backend, [{"id": "t", "text": text}], config))
    rescored = 0
    for i, chunk in enumerate(doc["chunks"]):
        lengths = [len(chunk_scoring_pair(doc["chunks"], i, c["latent"], config).continuation) for c in chunk["candidates"]]
        context = len(chunk_scoring_pair(doc["chunks"], i, "", config).context)
        cut = max(0, max(0, context + max(lengths) - 40) - context)
        assert chunk["num_suffix_token_truncated"] == cut
        assert [c["log_p"] for c in chunk["candidates"]] == pytest.approx([(n - cut) * math.log(0.25) for n in lengths])
        first_round = lengths[:2]
        rescored += cut != max(0, max(0, context + max(first_round) - 40) - context)
    assert rescored, "no chunk needed a deeper cut in a later round: make the text or the budget tighter"
    assert len(backend.score_calls) > len(backend.sample_calls), "the rescoring call"
