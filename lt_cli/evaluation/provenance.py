"""Which prompt variant a checkpoint was trained for, read from what ``lt train`` saved with it.

Why not the tokenizer: ``lt train`` adds the four latent special tokens to every checkpoint,
``--layout raw`` included, so "the tokenizer has the tokens" cannot tell a raw baseline from a
latent model; scoring a raw baseline with ``<SoL><PRIOR>`` prompts measures untrained tokens.

What decides: the training layout, as in the reference. Its ``apps/main/eval.py`` evaluates the
latent task variants exactly when the model's ``latent_type`` is in ``["random", "prior"]``; its
data loader (``lingua/data.py``) knows ``random``, ``prior_only``, ``posterior_only``, ``pure`` and
None (raw), so of the layouts it can train only ``random`` gets latent prompts, and the
``prior_only``/``posterior_only`` ablations get the raw ones. Every lt checkpoint folder holds
``train_config.json`` with its ``layout``, so nothing else needs recording:

* ``random``: the model learned ``<SoL><PRIOR> thought <EoL> text`` -> ``latent``.
* ``prior-tagged`` (lt-only; the prior half of ``random`` alone): the latent prompts are exactly its
  training strings -> ``latent`` (the reference's list also names ``"prior"``, a type its loader
  does not accept at this commit; the tagged prior form is the one it can mean).
* ``prior`` and ``posterior`` (the reference's ``prior_only``/``posterior_only``), ``posterior-tagged``
  (lt-only), ``pure``, ``raw``: never trained on ``<SoL><PRIOR>`` -> ``raw``.
* ``completion`` (a fine-tuned model from ``lt finetune-eval``): the prompt variant of its
  fine-tuning data, read from the first record of the data file the config names (its prompt ends
  with ``<SoL><PRIOR>`` for latent models and ``<SoL>`` for raw ones).

Models lt did not train (no ``train_config.json``) fall back to the tokenizer rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import formats

LATENT_LAYOUTS = frozenset({"random", "prior-tagged"})
RAW_LAYOUTS = frozenset({"raw", "pure", "prior", "posterior", "posterior-tagged"})
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass(frozen=True)
class TrainedFor:
    """``variant`` is latent, raw or None (not decidable from the folder); ``layout`` as saved."""

    variant: str | None
    layout: str | None = None
    source: str = "none"


def _read_json(path: Path) -> dict | None:
    import orjson

    try:
        obj = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def prompt_variant(prompt: str) -> str | None:
    """latent / raw for a fine-tuning prompt that ends in the latent suffix / a bare ``<SoL>``."""
    if prompt.endswith(formats.latent_eval_suffix()):
        return "latent"
    if prompt.endswith(formats.START_OF_LATENT):
        return "raw"
    return None


def _completion_data_variant(train_config: dict) -> str | None:
    from ..training.config import DataSource

    for spec in train_config.get("data") or []:
        from .data import read_jsonl

        try:
            records = read_jsonl(DataSource.parse(str(spec)).path, 1)
        except Exception:  # the data may have moved or changed: the caller falls back to the tokenizer
            return None
        prompt = records[0].get("prompt") if records else None
        return prompt_variant(prompt) if isinstance(prompt, str) else None
    return None


def trained_for(model: str | None) -> TrainedFor:
    """The variant ``model`` (a local folder) was trained for, from its ``train_config.json``."""
    if not model:
        return TrainedFor(None)
    path = Path(model) / TRAIN_CONFIG_FILE
    if not path.is_file():
        return TrainedFor(None)
    config = _read_json(path)
    layout = config.get("layout") if config else None
    if not isinstance(layout, str):
        return TrainedFor(None, None, "train_config")
    if layout in LATENT_LAYOUTS:
        return TrainedFor("latent", layout, "train_config")
    if layout in RAW_LAYOUTS:
        return TrainedFor("raw", layout, "train_config")
    if layout == "completion":
        return TrainedFor(_completion_data_variant(config), layout, "finetune_data")
    return TrainedFor(None, layout, "train_config")
