"""One command that checks every GPU path of lt and measures it, within one short device lease.

    python bench/gpu_check.py OUT            # one H200 (CUDA), at most 8 minutes: the real check
    python bench/gpu_check.py --smoke OUT    # the same code on a CPU with tiny shapes (CI runs it)
    python bench/gpu_check.py --parts training,estep --budget-s 300 OUT
    python bench/gpu_check.py --parts ceilings,estep,engines --budget-s 560 OUT

Writes ``OUT/gpu_check.json`` (every field measured, or null with its reason) and
``OUT/gpu_check.md`` (the same as tables), plus ``OUT/logs/`` (one log per command run) and
``OUT/demo/`` (the demo's run folder); models and scratch files go to ``OUT/work/``. Parts, in
order (bench/gpucheck/*.py say what each measures and how):

* ``ceilings``: device, copy bandwidth, bf16/fp32 matmul rate;
* ``estep``: ``lt sample-thoughts`` tokens/s against a per-sample generate loop, static-cache
  ``generate`` and the memory-bound limit (it needs the ceilings, and runs before the parts already
  measured, so a check short of time keeps it);
* ``contract``: the backend contract in fp32 on the device (tests/backend_contract.py's checks) and
  bf16 against fp32 (SmolLM2-135M shape);
* ``training``: ``lt train`` in bf16, TinyLlama-1.1B shape, seq 2048: tokens/s, MFU, ratio to a
  bare PyTorch loop; and the same under ``torchrun`` with FSDP2 on one rank;
* ``demo``: ``lt bootstrap --iters 3`` timed, with the claims from its report.json.
* ``engines`` (only when named in ``--parts``): the E-step at 256 rows under each setting of the
  slot engine's step (CUDA graph only, compiled, compiled with FlexAttention).

Each part runs in its own process with its own budget; a part that fails, times out, or lacks a
package or the time to run is recorded and the next one starts. The exit status is 0 when every
selected part ran and passed its checks, 1 otherwise (the JSON is written either way). docs/
performance.md ("GPU check") has the device command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from gpucheck.profile import DEFAULT_PARTS, PARTS, PROFILES  # noqa: E402


def _passed(report: dict) -> bool:
    parts = report["parts"].values()
    if any(p["status"] != "ok" for p in parts):
        return False
    contract = report["parts"].get("contract")
    if contract is not None:
        checks = contract["results"]["checks"].values()
        if not all(c["passed"] for c in checks) or not contract["results"]["bf16"]["passed"]:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", type=Path, help="output folder (created)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (gloo instead of NCCL)")
    mode.add_argument("--full", action="store_true", help="the real check on a CUDA device (the default)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})")
    parser.add_argument("--budget-s", type=float, default=None, help="whole-check budget in seconds (default: the profile's, 460 full / 240 smoke)")
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "full"]

    if args.run_part:  # a child: one part, results in OUT/parts/NAME.json
        from gpucheck.part import PartContext
        from gpucheck.runner import part_module

        if profile.device == "cpu":
            import torch

            torch.set_num_threads(1)
        ctx = PartContext(args.run_part, args.out, profile, args.deadline or time.time() + profile.budget(args.run_part).budget_s)
        ctx.save()
        part_module(args.run_part).run(ctx)
        ctx.save()
        return 0

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    from gpucheck.report import markdown
    from gpucheck.runner import null_fields, run_check

    report = run_check(args.out, profile, parts, args.budget_s or profile.budget_s)
    summary = markdown(report)
    (args.out / "gpu_check.md").write_text(summary + "\n")
    print(summary.split("\n## ")[0], file=sys.stderr)  # the headline, last in the log
    nulls = null_fields(report)
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'} and gpu_check.md; {len(nulls)} null field(s)", file=sys.stderr)
    print(json.dumps({"check": "gpu_check", "mode": profile.name, "passed": _passed(report), "null_fields": len(nulls),
                      "seconds": report["seconds"]}))
    return 0 if _passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
