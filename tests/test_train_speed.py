"""lt train's speed options: the chunked loss (training/loss.py) and --compile (training/compiling.py).

Both must change no result beyond float rounding: the chunked loss against the plain one, value and
every gradient; --compile against an eager run, loss by loss, with the same saved parameter names.
"""

from __future__ import annotations

import json

import pytest

from lt_cli.training.loss import IGNORE_INDEX, chunked_loss, full_loss, head_computes_loss, resolve_loss_impl


def _model(tie: bool = False):
    import torch

    from lt_cli.tiny import TinyModelConfig, build_tiny_llama

    torch.manual_seed(0)
    return build_tiny_llama(300, TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96, tie_word_embeddings=tie))


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_chunked_loss_equals_the_full_loss_and_its_gradients(tie, bf16):
    import torch

    model = _model(tie)
    ids = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(2))
    labels[0, :7] = IGNORE_INDEX
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        full = full_loss(model(input_ids=ids, use_cache=False).logits, labels)
    (full * 0.5).backward()
    reference = _grads(model)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), head_computes_loss(model, labels, chunk_tokens=17):
        chunked = model(input_ids=ids, use_cache=False).logits
    (chunked * 0.5).backward()
    got = _grads(model)
    tolerance = 2e-2 if bf16 else 1e-5
    assert chunked.shape == () and chunked.item() == pytest.approx(full.item(), rel=tolerance / 10)
    assert set(got) == set(reference)
    for name in reference:
        scale = reference[name].abs().max().item() + 1e-12
        assert (got[name] - reference[name]).abs().max().item() / scale < tolerance, name
    assert model.get_output_embeddings().forward.__func__ is torch.nn.Linear.forward  # the head is itself again


def test_chunked_loss_alone_matches_cross_entropy():
    import torch

    hidden = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (50,))
    labels[::7] = IGNORE_INDEX
    value = chunked_loss(hidden, weight, bias, labels, chunk_tokens=9)
    reference = torch.nn.functional.cross_entropy(hidden @ weight.t() + bias, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    got = torch.autograd.grad(value * 3, (hidden, weight, bias))
    want = torch.autograd.grad(reference * 3, (hidden, weight, bias))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)


def test_loss_impl_resolution():
    model = _model()
    assert resolve_loss_impl("auto", "cpu", model) == "full"
    assert resolve_loss_impl("auto", "cuda", model) == "chunked"
    assert resolve_loss_impl("chunked", "cpu", model) == "chunked"
    assert resolve_loss_impl("full", "cuda", model) == "full"


def _train(tmp_path, tiny_corpus, name: str, **extra) -> tuple[list[float], dict]:
    from lt_cli.training import TrainConfig, train

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 96}))
    out = tmp_path / name
    train(TrainConfig(output=str(out), init_config=str(config), data=[str(tiny_corpus)], seq_len=32, batch_size=4, steps=3, warmup_steps=1, **extra))
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    saved = json.loads((out / "train_config.json").read_text())
    return losses, saved


@pytest.fixture
def tiny_corpus(tmp_path):
    from lt_cli.io import read_all
    from lt_cli.chunking import ensure_chunks

    from conftest import FIXTURES

    path = tmp_path / "aug.jsonl"
    with open(path, "w") as f:
        for i, record in enumerate(read_all(FIXTURES / "math_docs.jsonl")):
            doc = ensure_chunks(record)
            for chunk in doc["chunks"]:
                chunk["latent"] = "thought " + chunk["text"][:20]
            f.write(json.dumps(doc) + "\n")
    return path


def test_lt_train_chunked_loss_matches_full(tmp_path, tiny_corpus):
    full, saved_full = _train(tmp_path, tiny_corpus, "full", loss="full")
    chunked, saved_chunked = _train(tmp_path, tiny_corpus, "chunked", loss="chunked", loss_chunk_tokens=50)
    assert saved_full["loss"] == "full" and saved_chunked["loss"] == "chunked"
    assert chunked == pytest.approx(full, rel=1e-4)


@pytest.mark.slow
def test_lt_train_compile_matches_eager(tmp_path, tiny_corpus):
    """One compile of a 2-layer model (about a minute on a busy CPU): same losses, same saved names."""
    from safetensors import safe_open

    eager, _ = _train(tmp_path, tiny_corpus, "eager")
    compiled, saved = _train(tmp_path, tiny_corpus, "compiled", compile=True)
    assert saved["compile"] is True
    assert compiled == pytest.approx(eager, rel=1e-4)
    names = []
    for folder in ("eager", "compiled"):
        with safe_open(str(tmp_path / folder / "model.safetensors"), "pt") as f:
            names.append(sorted(f.keys()))
    assert names[0] == names[1] and not any("_orig_mod" in n for n in names[1])
