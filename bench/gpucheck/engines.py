"""The slot engine's step settings side by side (not in the default parts; run it with
``--parts ceilings,estep,engines``): ``lt sample-thoughts`` at the largest E-step row count under

* ``graph``: the step captured as a CUDA graph, not compiled (the engine as first measured);
* ``compiled``: torch.compile fuses the step before capture (the default on CUDA);
* ``compiled_flex``: compiled, with FlexAttention reading only the KV blocks each row has written.

Each run is the estep part's ``lt_R`` measurement (same documents, same timing of the steady calls,
same engine profile) with ``LT_HF_COMPILE`` / ``LT_HF_ATTENTION`` set; the slot engine is forced
(``LT_HF_ENGINE=slots``) so that a CPU smoke run measures it too. ``lt_fraction`` is the steady
rate over the estep part's memory-bound limit, ``over_graph`` the rate over the ``graph`` setting.
A setting that cannot run as asked falls back with a warning, and ``engine`` says what ran.
"""

from __future__ import annotations

from . import estep
from .part import PartContext

NEEDS = estep.NEEDS
VARIANTS = {
    "graph": {"LT_HF_COMPILE": "0", "LT_HF_ATTENTION": "sdpa"},
    "compiled": {"LT_HF_COMPILE": "1", "LT_HF_ATTENTION": "sdpa"},
    "compiled_flex": {"LT_HF_COMPILE": "1", "LT_HF_ATTENTION": "flex"},
}
RATIO_FIELDS = ("lt_fraction", "over_graph")
FIELDS = ("rows", *estep.SETUP_FIELDS, "hw_limit_tokens_per_s", *(f"{v}.{f}" for v in VARIANTS for f in (*estep.LT_FIELDS, *RATIO_FIELDS)))


def run(ctx: PartContext) -> None:
    p = ctx.profile
    rows = max(p.estep_rows)
    ctx.set("rows", rows)
    state: dict = {}
    estep.setup(ctx, state)
    with ctx.step("hw_limit", ("hw_limit_tokens_per_s",)):
        ctx.require("mean_prompt_tokens", "bandwidth_gb_per_s")
        ctx.set("hw_limit_tokens_per_s", round(estep.memory_bound_limit(ctx, rows, rows)[2], 1))
    for name, env in VARIANTS.items():
        estep.run_lt(ctx, state, rows, key=name, env={"LT_HF_ENGINE": "slots", **env})
        with ctx.step(f"{name}_ratios", [f"{name}.{f}" for f in RATIO_FIELDS]):
            ctx.require(f"{name}.tokens_per_s")
            rate = ctx.get(f"{name}.tokens_per_s")
            if ctx.get("hw_limit_tokens_per_s"):
                ctx.set(f"{name}.lt_fraction", round(rate / ctx.get("hw_limit_tokens_per_s"), 4))
            else:
                ctx.null(f"{name}.lt_fraction", "the memory-bound limit was not computed")
            if ctx.get("graph.tokens_per_s"):
                ctx.set(f"{name}.over_graph", round(rate / ctx.get("graph.tokens_per_s"), 3))
            else:
                ctx.null(f"{name}.over_graph", "the graph setting did not run")
