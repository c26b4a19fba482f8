"""The embedded demo: a synthetic data-constrained corpus, a tiny model and an accuracy eval.

``lt bootstrap --iters 3`` with no data or model arguments runs BoLT on it on a CPU; see
docs/bootstrap.md for what it measured and how long it takes. :data:`DEMO_SETTINGS` are the
defaults the bootstrap driver applies in demo mode (any flag given explicitly wins). They were
calibrated on this 2-core machine (docs/bootstrap.md, "Calibration") so that the 3-iteration demo
finishes in about 4 minutes and the K sweep (``--sweep-k 1,4,8``) in about 9. Two of them depart
from the paper because of that budget: M-steps continue from the previous model (``--from-base``
restores the paper's choice), and the learning rate is high (4e-3) for a short run.
"""

from __future__ import annotations

from .corpus import DemoCorpusConfig, DemoCorpusFiles, StateMachine, parse_answer, write_demo_corpus

#: Bootstrap settings for the demo (``lt bootstrap`` flag name -> value); about 4 minutes on 2 idle cores.
DEMO_SETTINGS: dict = {
    "seq_len": 128,
    "batch_size": 20,  # 2,560 tokens per step, about 67 documents with thoughts
    "lr": 4e-3,
    "warmup_steps": 20,
    "warm_steps": 300,
    "mstep_steps": 200,
    "save_every": 100,
    "prefix_chunks": 3,
    "max_new_tokens": 32,  # E-step latent budget: 8 states = 15 bytes; a runaway thought stops here
    "temperature": 1.0,
    "docs_per_call": 64,  # 64 prompts x K rows per backend call: tiny models are overhead-bound
    "estep_batch_size": 256,  # rows per forward pass: 2x faster than 16 for K=8 (docs/performance.md)
    "eval_tasks": ["demo"],
    "eval_max_new_tokens": 48,
    "eval_batch_size": 128,
    # The paper trains every M-step from the base model with 16x the warm start's budget; ten CPU
    # minutes cannot pay for that, so the demo carries the weights forward (--from-base: the paper's
    # choice; docs/bootstrap.md has both measured).
    "continue_training": True,
    "raw_baseline": True,
    "teacher_baseline": True,
}

#: The demo's tiny Llama (TinyModelConfig fields): 2 layers, 128 wide, byte vocabulary.
DEMO_MODEL: dict = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 512, "max_position_embeddings": 256, "seed": 0}

__all__ = ["DEMO_MODEL", "DEMO_SETTINGS", "DemoCorpusConfig", "DemoCorpusFiles", "StateMachine", "parse_answer", "write_demo_corpus"]
