"""The sizes of one check: ``FULL`` for one H200 in at most 9 minutes, ``SMOKE`` for a CPU.

Both run exactly the same code; only the numbers differ. Budgets are wall seconds per part
(``budget_s``: the part is stopped there; ``min_s``: a part is skipped, with the reason recorded,
when less than this is left of the whole check's budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .shapes import SMOLLM2_135M, TINY_TIED, TINY_UNTIED, TINYLLAMA_1_1B, Shape

#: every part, in the order they run; a plain run does DEFAULT_PARTS (``engines`` repeats the E-step
#: under each step setting of the slot engine, for whoever tunes it: ``--parts ceilings,estep,engines``).
#: ``estep`` runs right after the ceilings its memory-bound limit is computed from: it is the slowest
#: part and the one still measuring an open acceptance item, so a check that runs short of time
#: loses a part already measured (training, demo), not that one.
PARTS = ("ceilings", "estep", "contract", "training", "demo", "engines")
DEFAULT_PARTS = PARTS[:5]


@dataclass(frozen=True)
class Budget:
    budget_s: float
    min_s: float


@dataclass(frozen=True)
class Profile:
    name: str
    device: str  # cuda | cpu
    budget_s: float
    budgets: dict[str, Budget]
    # ceilings
    copy_mib: int
    matmul_size: int
    timing_reps: int
    # contract
    contract_shape: Shape
    contract_samples: int  # n per prompt for the log q = score check
    bf16_logits_tolerance: float  # relative L2 of centred logits, bf16 against fp32
    # training
    train_shape: Shape
    seq_len: int
    batch_size: int
    train_steps: int
    skip_steps: int  # first steps left out of steady-state rates
    train_dtype: str
    train_compile: bool  # bare loop and lt train with each transformer layer compiled (lt train --compile)
    # E-step: rows per decode step (bench/gpucheck/estep.py names its fields after them), and per
    # row count the documents and documents per backend call (3 calls: the first is start-up)
    estep_docs: dict[int, int]
    estep_docs_per_call: dict[int, int]
    estep_k: int
    estep_max_new_tokens: int
    generate_prompts: int  # the per-sample generate loop: prompts x K samples
    score_pairs: int  # (posterior prompt, sampled thought) pairs scored
    score_bare_tokens: int  # tokens per forward pass of the bare packed baseline
    # demo
    demo_args: tuple[str, ...] = field(default_factory=tuple)

    def budget(self, part: str) -> Budget:
        return self.budgets[part]

    @property
    def estep_rows(self) -> tuple[int, ...]:
        return tuple(self.estep_docs)


FULL = Profile(
    name="full",
    device="cuda",
    budget_s=570.0,
    budgets={
        "ceilings": Budget(40, 15),
        "contract": Budget(110, 30),  # the decode step compiles for the contract's model too
        "training": Budget(200, 80),
        "estep": Budget(320, 60),
        "demo": Budget(150, 60),
        "engines": Budget(300, 120),
    },
    copy_mib=1024,
    matmul_size=8192,
    timing_reps=10,
    contract_shape=SMOLLM2_135M,
    contract_samples=16,
    bf16_logits_tolerance=3e-2,
    train_shape=TINYLLAMA_1_1B,
    seq_len=2048,
    batch_size=8,
    train_steps=14,
    skip_steps=4,
    train_dtype="bfloat16",
    train_compile=True,
    estep_docs={64: 96, 256: 384},
    estep_docs_per_call={64: 32, 256: 128},
    estep_k=4,
    estep_max_new_tokens=128,
    generate_prompts=1,
    score_pairs=256,
    score_bare_tokens=16384,
    demo_args=(),
)

SMOKE = Profile(
    name="smoke",
    device="cpu",
    budget_s=240.0,
    budgets={
        "ceilings": Budget(30, 10),
        "contract": Budget(60, 20),
        "training": Budget(120, 40),
        "estep": Budget(90, 30),
        "demo": Budget(90, 30),
        "engines": Budget(150, 40),
    },
    copy_mib=64,
    matmul_size=256,
    timing_reps=5,
    contract_shape=TINY_TIED,
    contract_samples=16,
    bf16_logits_tolerance=3e-2,
    train_shape=TINY_UNTIED,
    seq_len=64,
    batch_size=4,
    train_steps=6,
    skip_steps=2,
    train_dtype="bfloat16",
    train_compile=False,  # a CPU compile takes minutes; tests/test_train_speed.py covers --compile
    estep_docs={64: 6, 256: 6},
    estep_docs_per_call={64: 2, 256: 2},
    estep_k=2,
    estep_max_new_tokens=16,
    generate_prompts=1,
    score_pairs=16,
    score_bare_tokens=512,
    demo_args=("--demo-train", "24", "--demo-heldout", "8", "--demo-steps", "3", "--warm-steps", "2", "--steps", "2",
               "--batch-size", "4", "--seq-len", "64", "--warmup-steps", "1", "--save-every", "2", "--max-latent-tokens", "8",
               "--eval-max-new-tokens", "16"),
)

PROFILES = {"full": FULL, "smoke": SMOKE}
