"""`lt eval --variant auto` decides from the training layout an lt checkpoint records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_cli import formats
from lt_cli.evaluation import get_task
from lt_cli.evaluation.generation import resolve_variant, variant_source
from lt_cli.evaluation.provenance import TrainedFor, prompt_variant, trained_for

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GSM_FIXTURE = FIXTURES / "eval_gsm8k_predictions.jsonl"
SOL, PRIOR = formats.START_OF_LATENT, formats.PRIOR_PREFIX


def _folder(tmp_path: Path, name: str, train_config: dict | None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if train_config is not None:
        (folder / "train_config.json").write_text(json.dumps(train_config))
    return folder


#: what the reference's apps/main/eval.py evaluates for each training layout (latent task variants only
#: for latent_type "random"; prior_only / posterior_only get the raw tasks); completion: its own test
VARIANT_OF_LAYOUT = {
    "random": "latent",
    "prior-tagged": "latent",  # lt-only: trained on exactly the latent prompts' strings
    "prior": "raw",  # the reference's prior_only: <SoL>z<EoL>x, never <PRIOR>
    "posterior": "raw",  # posterior_only
    "posterior-tagged": "raw",  # lt-only: never trained to open a prior latent
    "pure": "raw",
    "raw": "raw",
}


def test_every_training_layout_has_a_decided_variant():
    assert set(VARIANT_OF_LAYOUT) | {"completion"} == set(formats.LAYOUTS)


@pytest.mark.parametrize("layout, variant", sorted(VARIANT_OF_LAYOUT.items()))
def test_layout_decides_the_variant(tmp_path, layout, variant):
    found = trained_for(str(_folder(tmp_path, layout, {"layout": layout, "data": ["x.jsonl"]})))
    assert found == TrainedFor(variant, layout, "train_config")
    # the tokenizer has the 4 tokens in every lt checkpoint; the layout still wins
    assert resolve_variant("auto", True, found.variant) == variant
    assert resolve_variant("latent", True, found.variant) == "latent"  # an explicit choice is kept
    assert variant_source("auto", found) == f"train_config (layout {layout})"


def test_models_lt_did_not_train_fall_back_to_the_tokenizer(tmp_path):
    assert trained_for(None) == TrainedFor(None)
    assert trained_for(str(tmp_path / "missing")) == TrainedFor(None)
    plain = trained_for(str(_folder(tmp_path, "hf", None)))
    assert plain.variant is None and resolve_variant("auto", True, plain.variant) == "latent"
    assert resolve_variant("auto", False, plain.variant) == "raw"
    assert variant_source("auto", plain) == "tokenizer" and variant_source("raw", plain) == "requested"
    broken = _folder(tmp_path, "broken", None)
    (broken / "train_config.json").write_text("{not json")
    assert trained_for(str(broken)).variant is None
    unknown = trained_for(str(_folder(tmp_path, "future", {"layout": "hologram"})))
    assert unknown == TrainedFor(None, "hologram", "train_config")


def test_finetuned_checkpoint_uses_its_finetuning_prompts(tmp_path):
    assert prompt_variant(f"Question: q\nAnswer:{SOL}{PRIOR}") == "latent"
    assert prompt_variant(f"Question: q\nAnswer:{SOL}") == "raw"
    assert prompt_variant("Question: q\nAnswer:") is None
    for variant, suffix in (("latent", SOL + PRIOR), ("raw", SOL)):
        data = tmp_path / f"sft_{variant}.jsonl"
        data.write_text(json.dumps({"prompt": "Q: 1+1?\nA:" + suffix, "completion": "2"}) + "\n")
        found = trained_for(str(_folder(tmp_path, f"ft_{variant}", {"layout": "completion", "data": [f"{data}:1.0"]})))
        assert found == TrainedFor(variant, "completion", "finetune_data")
    gone = trained_for(str(_folder(tmp_path, "ft_gone", {"layout": "completion", "data": [str(tmp_path / "deleted.jsonl")]})))
    assert gone == TrainedFor(None, "completion", "finetune_data")


@pytest.mark.parametrize("layout", ["raw", "prior", "prior-tagged"])
def test_trained_checkpoint_is_evaluated_with_the_prompts_of_its_layout(tiny_model_dir, tmp_path, layout):
    """lt train adds the special tokens with every layout; auto must still follow the layout: raw
    prompts for a raw baseline and for the reference's prior_only ablation (--layout prior), latent
    ones for a model trained on the tagged prior form."""
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app
    from lt_cli.io import read_all
    from lt_cli.chunking import ensure_chunks
    from lt_cli.training import TrainConfig, train

    data = tmp_path / "augmented.jsonl"
    with open(data, "w") as f:
        for record in read_all(FIXTURES / "math_docs.jsonl"):
            doc = ensure_chunks(record)
            for chunk in doc["chunks"]:
                chunk["latent"] = "think"
            f.write(json.dumps(doc) + "\n")
    ckpt = tmp_path / f"{layout}-model"
    train(TrainConfig(output=str(ckpt), data=[str(data)], model=str(tiny_model_dir), layout=layout, steps=1, seq_len=64, batch_size=1, log_every=1))
    assert json.loads((ckpt / "train_config.json").read_text())["layout"] == layout
    variant = VARIANT_OF_LAYOUT[layout]
    log = tmp_path / "samples.jsonl"
    console.reset_record_stream()
    result = CliRunner().invoke(app, ["eval", "--model", str(ckpt), "--task", "gsm8k", "--data", str(GSM_FIXTURE), "--limit", "2",
                                      "--num-fewshot", "1", "--max-new-tokens", "4", "--log-samples", str(log)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["tokenizer_has_latent_tokens"] is True  # the tokenizer rule would say latent for all three
    assert metrics["variant"] == variant and metrics["variant_source"] == f"train_config (layout {layout})"
    task = get_task("gsm8k")
    records = [json.loads(line) for line in GSM_FIXTURE.read_text().splitlines()[:2]]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["prompt"] for line in lines] == [task.build_prompt(r, variant == "latent", 1) for r in records]
    assert all(formats.contains_special_token(line["prompt"]) == (variant == "latent") for line in lines)
    # raw variant: the special tokens end a generation (the reference bans them; lt's backends cannot)
    assert metrics["generation"]["special_tokens"] == ("none" if variant == "latent" else "stop")
