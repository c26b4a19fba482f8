"""NLL and ELBO: the reference's document cut and `--reference-quirks`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lt_cli import formats
from lt_cli.errors import UsageError
from lt_cli.evaluation import EvalConfig, evaluate
from lt_cli.evaluation.doccut import DocumentCutter, doc_token_limit

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOL, EOL, PRIOR, POST = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX, formats.POSTERIOR_PREFIX


def _fixture_docs() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "math_docs.jsonl").read_text().splitlines()]


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_doc_token_limit_is_the_references():
    assert doc_token_limit(None, 2048) == 2045  # max_tokens - 1 (BOS) - 2 (slack), apps/main/eval.py
    assert doc_token_limit(None, 8192) == 8189
    assert doc_token_limit(900, 2048) == 900
    assert doc_token_limit(0, 2048) is None  # whole documents
    assert doc_token_limit(None, None) is None
    with pytest.raises(UsageError, match="max-doc-tokens"):
        doc_token_limit(-1, 2048)
    with pytest.raises(UsageError, match="no room"):
        doc_token_limit(None, 3)


def test_cutter_encodes_cuts_and_decodes():
    cutter = DocumentCutter(lambda t: list(t.encode()), lambda ids: bytes(ids).decode(), 5)
    assert cutter.cut("abc").__dict__ == {"text": "abc", "n_tokens": 3, "n_tokens_cut": 0}
    assert cutter.cut("abcde").__dict__ == {"text": "abcde", "n_tokens": 5, "n_tokens_cut": 0}
    assert cutter.cut("abcdefg").__dict__ == {"text": "abcde", "n_tokens": 7, "n_tokens_cut": 2}
    assert not DocumentCutter(None, None, 5).active and DocumentCutter(None, None, 5).cut("abcdefg").text == "abcdefg"


def _direct_logprobs(model, ids: list[int]) -> list[float]:
    """log p(ids[t+1] | ids[:t+1]) for t = 0..len-2, straight from transformers."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[t, ids[t + 1]]) for t in range(len(ids) - 1)]


def test_nll_cuts_documents_like_the_reference(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = " ".join(d["text"] for d in _fixture_docs())
    long_doc = {"id": "long", "text": (text + "\n\n") * 3}
    data = _write(tmp_path / "docs.jsonl", [long_doc, _fixture_docs()[0]])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    n_long = len(tokenizer(long_doc["text"], add_special_tokens=False)["input_ids"])
    n_short = len(tokenizer(_fixture_docs()[0]["text"], add_special_tokens=False)["input_ids"])
    assert n_long > 4000

    log = tmp_path / "nll.jsonl"
    nll = evaluate(EvalConfig(task="nll", model=str(tiny_model_dir), data=str(data), log_samples=str(log)))
    assert nll["max_doc_tokens"] == 2045 and nll["n_documents_cut"] == 1 and nll["n_tokens_cut"] == n_long - 2045
    assert nll["n_tokens"] == 2045 + n_short and nll["n_tokens_truncated"] == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["n_tokens_scored"] for line in lines] == [2045, n_short] and lines[0]["n_text_tokens"] == n_long
    # the reference's arithmetic, straight from the model: BOS + first 2045 tokens
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    kept = tokenizer(long_doc["text"], add_special_tokens=False)["input_ids"][:2045]
    assert lines[0]["text"] == tokenizer.decode(kept)
    direct = -sum(_direct_logprobs(model, [tokenizer.bos_token_id] + kept)) / 2045
    assert lines[0]["nll_per_token"] == pytest.approx(direct, abs=1e-4)

    whole = evaluate(EvalConfig(task="nll", model=str(tiny_model_dir), data=str(data), max_doc_tokens=0, limit=1))
    assert whole["max_doc_tokens"] is None and whole["n_documents_cut"] == 0
    assert whole["n_tokens"] == 2047 and whole["n_tokens_truncated"] == n_long - 2047  # the context, not the cut


def test_elbo_reference_quirks_match_the_reference_formula(tiny_model_dir, tmp_path):
    """`--reference-quirks` reproduces apps/main/eval.py: cut, uniform chunks, the E-step's quirky
    prompts, joint log p skipping the first <SoL>, ELBO_n per (whole-document token - cut)."""
    from typer.testing import CliRunner
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lt_cli import console
    from lt_cli.chunking import ChunkingConfig, chunk_text
    from lt_cli.cli import app

    docs = _fixture_docs()
    long_doc = {"id": "long", "text": " ".join(d["text"] for d in docs)}
    data = _write(tmp_path / "docs.jsonl", [long_doc, docs[1], docs[4]])
    log = tmp_path / "elbo.jsonl"
    console.reset_record_stream()
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--task", "elbo", "--data", str(data), "--reference-quirks",
                                      "--max-doc-tokens", "900", "--max-latent-tokens", "2", "--seed", "7", "--log-samples", str(log)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["reference_quirks"] is True and metrics["n_documents_cut"] == 1
    assert metrics["n_posterior_prompts_over_1024_tokens"] == 0  # so the reference would not have cut any prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    bos = tokenizer.bos_token_id
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    per_doc = {1: [], 2: [], 4: []}
    checked_log_q = 0
    for line, source in zip(lines, [long_doc, docs[1], docs[4]]):
        cut_ids = encode(source["text"])[:900]
        assert line["text"] == tokenizer.decode(cut_ids)
        texts = [c["text"] for c in line["chunks"]]
        assert texts == chunk_text(line["text"], ChunkingConfig(mode="uniform"))
        elbo = {1: 0.0, 2: 0.0, 4: 0.0}
        suffix_cut = 0
        for i, chunk in enumerate(line["chunks"]):
            prefix, suffix = "".join(texts[:i]), texts[i]
            # posterior prompt of the reference: no <SoL><EoL> before the first chunk
            prompt = (prefix + SOL + EOL if prefix else "") + suffix + SOL + POST
            log_w = []
            for candidate in chunk["candidates"]:
                latent_ids = encode(candidate["latent"])
                if not candidate["finished"] and len(latent_ids) == candidate["n_tokens"] and tokenizer.decode(latent_ids) == candidate["latent"]:
                    ids = [bos] + encode(prompt) + latent_ids
                    log_q = sum(_direct_logprobs(model, ids)[-len(latent_ids):])
                    assert candidate["log_q"] == pytest.approx(log_q, abs=1e-4)
                    checked_log_q += 1
                joint = [bos] + encode(prefix + SOL + PRIOR + candidate["latent"] + EOL + suffix)
                prefix_len = len([bos] + encode(prefix))
                log_p = sum(_direct_logprobs(model, joint)[prefix_len:])  # skips the first <SoL>
                assert candidate["log_p"] == pytest.approx(log_p, abs=1e-4)
                log_w.append(log_p - candidate["log_q"])
            for n in elbo:
                top = max(log_w[:n])
                elbo[n] += top + math.log(sum(math.exp(w - top) for w in log_w[:n])) - math.log(n)
            suffix_cut += chunk["num_suffix_token_truncated"]
        n_tokens = len(encode(line["text"])) - suffix_cut
        assert line["n_elbo_tokens"] == n_tokens
        for n in elbo:
            per_doc[n].append(elbo[n] / n_tokens)
    assert checked_log_q == 12  # candidates whose latent text re-encodes to the sampled tokens
    for n in (1, 2, 4):
        assert metrics[f"elbo_{n}_per_token"] == pytest.approx(sum(per_doc[n]) / len(per_doc[n]), abs=1e-4)
    assert metrics["n_documents"] == 3 and metrics["raw_token_count"] == "whole document minus cut suffix tokens"


def test_elbo_default_scores_the_first_sol(tiny_model_dir, tmp_path):
    """lt's default E-step prompts differ from the reference's: every chunk's posterior prompt has
    the <SoL><EoL> boundary and log p counts the first <SoL>."""
    data = _write(tmp_path / "docs.jsonl", [_fixture_docs()[1]])
    log = tmp_path / "elbo.jsonl"
    metrics = evaluate(EvalConfig(task="elbo", model=str(tiny_model_dir), data=str(data), max_latent_tokens=2, seed=7, elbo_n=(1,),
                                  log_samples=str(log)))
    assert metrics["reference_quirks"] is False and metrics["raw_token_count"] == "chunk tokens as scored"
    assert "n_posterior_prompts_over_1024_tokens" not in metrics
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    line = json.loads(log.read_text().splitlines()[0])
    first = line["chunks"][0]
    candidate = first["candidates"][0]
    joint = [tokenizer.bos_token_id] + tokenizer(SOL + PRIOR + candidate["latent"] + EOL + first["text"], add_special_tokens=False)["input_ids"]
    assert candidate["log_p"] == pytest.approx(sum(_direct_logprobs(model, joint)), abs=1e-4)  # <SoL> included


def test_reference_quirks_only_for_likelihood_tasks(tiny_model_dir):
    with pytest.raises(UsageError, match="reference-quirks"):
        evaluate(EvalConfig(task="gsm8k", model=str(tiny_model_dir), reference_quirks=True))
    with pytest.raises(UsageError, match="max-doc-tokens"):
        evaluate(EvalConfig(task="nll", model=str(tiny_model_dir), data=str(FIXTURES / "math_docs.jsonl"), max_doc_tokens=-5))
