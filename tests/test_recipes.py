"""runs/: the paper recipes print the documented command graph, use only real lt flags, submit a
consistent Slurm dependency graph, and prepare_finemath splits like the reference."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import REPO

RUNS = REPO / "runs"
RECIPE_VARS = ("FINEMATH", "DATA", "OUT", "LOGS", "BASE_MODEL", "TEACHER", "NGPU", "K", "ITERS", "TRIALS", "E_SHARDS",
               "SYNTH_SHARDS", "TRAIN_NODES", "GPUS_PER_NODE", "REFERENCE_QUIRKS", "SBATCH_ARGS", "DRY_RUN")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"lt_runs_{name}", RUNS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"lt_runs_{name}"] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARS}
    env.update(extra)
    return env


def _dry(recipe: str, *args: str, **env) -> str:
    done = subprocess.run(["bash", str(RUNS / recipe), *args], capture_output=True, text=True, cwd=REPO, env=_env(**env))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _documented(heading: str) -> str:
    text = (RUNS / "README.md").read_text()
    start = text.index(heading)
    block = text[text.index("```sh\n", start) + len("```sh\n") :]
    return block[: block.index("```")]


# ------------------------------------------------------------------------------- the graphs
def test_slurm_dry_run_prints_the_documented_graph():
    assert _dry("paper_slurm.sh", "--dry-run") == _documented("## The command graph of `paper_slurm.sh --dry-run`")


def test_single_node_dry_run_prints_the_documented_commands():
    assert _dry("paper_single_node.sh", "--dry-run") == _documented("## The commands of `paper_single_node.sh --dry-run`")


def test_dry_run_env_var_equals_flag_and_bad_arguments_fail():
    assert _dry("paper_slurm.sh", DRY_RUN="1") == _dry("paper_slurm.sh", "--dry-run")
    bad = subprocess.run(["bash", str(RUNS / "paper_slurm.sh"), "--wet-run"], capture_output=True, text=True, cwd=REPO, env=_env())
    assert bad.returncode == 2 and "unknown argument --wet-run" in bad.stderr
    elsewhere = subprocess.run(["bash", str(RUNS / "paper_slurm.sh"), "--dry-run"], capture_output=True, text=True, cwd=REPO / "runs", env=_env())
    assert elsewhere.returncode == 2 and "repository root" in elsewhere.stderr


def _slurm_jobs(text: str) -> dict[str, dict]:
    """JOB_name=$(sbatch ...) lines -> {name: {options, deps, wrap}}, in order."""
    jobs: dict[str, dict] = {}
    lines = text.splitlines()
    assert lines[0] == "mkdir -p lt-runs/paper/logs"  # sbatch needs the --output folder
    for line in lines[1:]:
        match = re.fullmatch(r"JOB_(\w+)=\$\((sbatch .*)\)", line)
        assert match, line
        words = shlex.split(match.group(2))
        options = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
        deps = re.findall(r"\$JOB_(\w+)", options.get("dependency", ""))
        jobs[match.group(1)] = {"options": options, "deps": deps, "wrap": options["wrap"]}
    return jobs


def test_slurm_graph_dependencies_shards_and_merges_are_consistent():
    jobs = _slurm_jobs(_dry("paper_slurm.sh", "--dry-run", E_SHARDS="16", ITERS="2", TRAIN_NODES="4"))
    names = list(jobs)
    assert names == ["prep", "synth", "synth_merge", "warm", "eval_warm", "estep_1", "merge_1", "select_1", "train_1", "eval_1",
                     "estep_2", "merge_2", "select_2", "train_2", "eval_2", "raw_token", "eval_raw_token", "raw_flops", "eval_raw_flops"]
    for i, (name, job) in enumerate(jobs.items()):
        assert all(dep in names[:i] for dep in job["deps"]), name  # every dependency was submitted before
        if job["deps"]:
            assert job["options"]["dependency"].startswith("afterok:") and job["options"]["kill-on-invalid-dep"] == "yes"
    assert [jobs[n]["deps"] for n in ("synth", "synth_merge", "warm", "estep_1", "merge_1", "select_1", "train_1", "estep_2", "raw_token")] == [
        ["prep"], ["synth"], ["synth_merge"], ["warm"], ["estep_1"], ["merge_1"], ["select_1"], ["train_1"], ["prep"]]
    # array jobs: task I runs --shard I/N over N tasks, and the merge asks for exactly N shards
    for array, merge, n in (("synth", "synth_merge", 20), ("estep_1", "merge_1", 16), ("estep_2", "merge_2", 16)):
        assert jobs[array]["options"]["array"] == f"0-{n - 1}"
        assert f'--shard "$SLURM_ARRAY_TASK_ID/{n}"' in jobs[array]["wrap"]
        merge_words = shlex.split(jobs[merge]["wrap"])
        assert merge_words[:2] == ["lt", "merge"] and merge_words[merge_words.index("--num-shards") + 1] == str(n)
        out_pattern = shlex.split(jobs[array]["wrap"].replace('"$SLURM_ARRAY_TASK_ID', '"{i}').replace("$SLURM_ARRAY_TASK_ID", "{i}"))
        assert merge_words[-1] == out_pattern[out_pattern.index("-o") + 1]  # merges what the array wrote
    # iteration 2 samples with iteration 1's model; training always starts from the base model
    assert "--model lt-runs/paper/iter1/trial0 " in jobs["estep_2"]["wrap"]
    for name in ("warm", "train_1", "train_2", "raw_token", "raw_flops"):
        wrap = jobs[name]["wrap"]
        assert wrap.startswith("srun --ntasks-per-node=1 torchrun ") and " -m lt_cli train --model TinyLlama/TinyLlama_v1.1 " in wrap
        assert jobs[name]["options"]["nodes"] == "4" and jobs[name]["options"]["gpus-per-node"] == "8"


def _lt_invocations(text: str) -> list[list[str]]:
    """Every lt command in a dry-run output (direct, under env/torchrun, inside --wrap)."""
    commands = []
    for line in text.splitlines():
        match = re.fullmatch(r"JOB_\w+=\$\((sbatch .*)\)", line)
        pieces = [line.rstrip(" &")]
        if match:
            wrap = next(w for w in shlex.split(match.group(1)) if w.startswith("--wrap="))[len("--wrap="):]
            pieces = wrap.split(" && ")
        for piece in pieces:
            words = shlex.split(piece.replace("$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)", "HEAD"))
            if "lt_cli" in words:
                commands.append(words[words.index("lt_cli") + 1 :])
            elif "lt" in words:
                commands.append(words[words.index("lt") + 1 :])
    return commands


def test_every_lt_command_in_the_recipes_uses_real_flags():
    import typer

    from lt_cli.cli import COMMANDS, app

    root = typer.main.get_command(app)
    invocations = _lt_invocations(_dry("paper_slurm.sh", "--dry-run")) + _lt_invocations(_dry("paper_single_node.sh", "--dry-run"))
    used = {words[0] for words in invocations}
    assert used == {"synthesize", "merge", "train", "sample-thoughts", "select", "eval"}
    pending = []
    for words in invocations:
        command = root.commands[words[0]]
        module = importlib.import_module(f"lt_cli.commands.{dict(COMMANDS)[words[0]]}")
        if module.HELP == "(being built)":
            pending.append(words[0])
            continue
        known = {opt for param in command.params if param.param_type_name == "option" for opt in param.opts + param.secondary_opts}
        for word in words[1:]:
            if word.startswith("-") and word not in ("-",):
                assert word in known, f"lt {words[0]} has no option {word}"
        # and the arguments parse (types, choices, required options)
        ctx = command.make_context(words[0], list(words[1:]), resilient_parsing=False)
        ctx.close()
    if pending:
        pytest.skip(f"not yet built, flags unchecked: lt {', lt '.join(sorted(set(pending)))}")


def test_submit_records_real_job_ids_for_dependencies(tmp_path):
    """Not a dry run: a fake sbatch hands out ids; later jobs must depend on those ids."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f"""#!/bin/bash
n=$(( $(wc -l < {log} 2>/dev/null || echo 0) + 100 ))
printf '%s\\n' "$n $*" >> {log}
echo "$n;cluster"
""")
    (bin_dir / "sbatch").chmod(0o755)
    out = tmp_path / "run"
    done = subprocess.run(["bash", str(RUNS / "paper_slurm.sh")], capture_output=True, text=True, cwd=REPO,
                          env=_env(PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(out), ITERS="1"))
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    ids = {re.search(r"--job-name=lt-(\S+)", line).group(1): line.split()[0] for line in lines}
    assert list(ids) == ["prep", "synth", "synth-merge", "warm", "eval-warm", "estep-1", "merge-1", "select-1", "train-1", "eval-1",
                         "raw-token", "eval-raw-token", "raw-flops", "eval-raw-flops"]
    by_name = {re.search(r"--job-name=lt-(\S+)", line).group(1): line for line in lines}
    assert f"--dependency=afterok:{ids['warm']} " in by_name["estep-1"]
    assert f"--dependency=afterok:{ids['estep-1']} " in by_name["merge-1"]
    assert "--dependency" not in by_name["prep"]
    assert (out / "logs").is_dir()


# ------------------------------------------------------------------------------- cost
def test_cost_model_matches_the_numbers_quoted_in_recipes_and_docs():
    cost = _load("cost")
    a = cost.Assumptions()
    rows = {name: hours for name, _, hours in cost.stages(a)}
    assert round(rows["warm start"], 1) == 5.6
    assert round(rows["E-step, per iteration"], 1) == 302.7
    assert round(rows["M-step, per iteration"], 1) == 90.3
    assert round(rows["total"]) == 1302
    # E-step arithmetic by hand: 4 x 2.3 x 1.92e9 decoded at 20k/s, (3 + 1 + 4 x 3.3) x 1.92e9 prefilled at 160k/s
    assert rows["E-step, per iteration"] == pytest.approx((4 * 2.3 * 1.92e9 / 20_000 + 17.2 * 1.92e9 / 160_000) / 3600)
    # the E-step grows linearly with K and data; training only with the budget
    k8 = {name: h for name, _, h in cost.stages(cost.Assumptions(k=8))}
    assert k8["M-step, per iteration"] == rows["M-step, per iteration"]
    assert k8["E-step, per iteration"] > 1.8 * rows["E-step, per iteration"]
    for recipe in ("paper_single_node.sh", "paper_slurm.sh"):
        assert "1,302 GPU-h" in (RUNS / recipe).read_text()
    docs = (REPO / "docs" / "scaling.md").read_text()
    assert cost.table(a) in docs
    assert cost.table(cost.Assumptions(scale=10)) in docs and cost.table(cost.Assumptions(scale=100)) in docs


# ------------------------------------------------------------------------------- data splits
def test_split_sizes_reproduce_the_papers_counts():
    prep = _load("prepare_finemath")
    assert prep.split_sizes(6_699_493) == {"total": 6_699_493, "val": 6_700, "train": 6_692_793, "warmstart": 334_640, "bootstrap": 1_338_556}
    # position p -> train index p - (p // 1000 + 1) after removing the validation lines
    assert [prep.split_of(i) for i in (0, 1, 13, 14, 17, 18, 1000, 1001, 1002)] == [
        ("val",), ("train", "warmstart"), ("train",), ("train", "bootstrap"), ("train", "bootstrap"), ("train",), ("val",), ("train",),
        ("train", "warmstart")]


def _corpus(path: Path, n: int) -> list[dict]:
    records = [{"text": f"document {i}: {i} + {i} = {2 * i}."} for i in range(n)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return records


def test_prepare_without_shuffle_equals_the_documented_awk_split(tmp_path):
    if shutil.which("awk") is None:
        pytest.skip("awk is absent")
    prep = _load("prepare_finemath")
    src = tmp_path / "all.jsonl"
    _corpus(src, 2_345)
    summary = prep.prepare([str(src)], str(tmp_path / "out"), shuffle_seed=None)
    assert {k: summary[k] for k in ("val", "warmstart", "bootstrap")} == {k: prep.split_sizes(2_345)[k] for k in ("val", "warmstart", "bootstrap")}
    readme = (RUNS / "README.md").read_text()
    awk_lines = [line for line in readme.splitlines() if line.startswith("awk ")]
    assert len(awk_lines) == 3
    for line in awk_lines:
        subprocess.run(line, shell=True, check=True, cwd=tmp_path)
    for name in ("val", "warmstart", "bootstrap"):
        ours = [orjson.loads(x) for x in (tmp_path / "out" / f"{name}.jsonl").read_bytes().splitlines()]
        theirs = [orjson.loads(x) for x in (tmp_path / f"{name}.jsonl").read_bytes().splitlines()]
        assert [r["text"] for r in ours] == [r["text"] for r in theirs], name
        assert (tmp_path / "out" / f"{name}.jsonl.done").exists()
    assert orjson.loads((tmp_path / "out" / "val.jsonl").read_bytes().splitlines()[1])["id"] == "finemath-1000"


def test_prepare_with_shuffle_is_seeded_disjoint_and_complete(tmp_path):
    prep = _load("prepare_finemath")
    src = tmp_path / "all.jsonl"
    records = _corpus(src, 4_321)
    a = prep.prepare([str(src)], str(tmp_path / "a"), shuffle_seed=42, write_train=True)
    prep.prepare([str(src)], str(tmp_path / "b"), shuffle_seed=42)
    prep.prepare([str(src)], str(tmp_path / "c"), shuffle_seed=7)
    assert a["expected"] == prep.split_sizes(4_321) and a["train"] == a["expected"]["train"]
    texts = {}
    for name in ("val", "warmstart", "bootstrap", "train"):
        texts[name] = [orjson.loads(x)["text"] for x in (tmp_path / "a" / f"{name}.jsonl").read_bytes().splitlines()]
        assert len(texts[name]) == a["expected"][name]
    assert (tmp_path / "a" / "bootstrap.jsonl").read_bytes() == (tmp_path / "b" / "bootstrap.jsonl").read_bytes()
    assert (tmp_path / "a" / "bootstrap.jsonl").read_bytes() != (tmp_path / "c" / "bootstrap.jsonl").read_bytes()
    assert not set(texts["warmstart"]) & set(texts["bootstrap"]) and not set(texts["val"]) & set(texts["train"])
    assert set(texts["val"]) | set(texts["train"]) == {r["text"] for r in records}
    assert set(texts["warmstart"]) | set(texts["bootstrap"]) <= set(texts["train"])
    assert not (tmp_path / "a" / "all.unshuffled.jsonl").exists()
    assert orjson.loads((tmp_path / "a" / "splits.json").read_bytes())["shuffle_seed"] == 42


def test_prepare_reads_parquet_and_rejects_missing_input(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    prep = _load("prepare_finemath")
    folder = tmp_path / "finemath-4plus"
    folder.mkdir()
    for part in range(2):
        rows = [{"text": f"part {part} row {i}", "url": f"http://x/{part}/{i}", "int_score": 4} for i in range(30)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"train-{part:05d}.parquet")
    summary = prep.prepare([str(folder)], str(tmp_path / "out"), shuffle_seed=None)
    assert summary["total"] == 60 and summary["val"] == 1 and summary["warmstart"] == 3
    first = orjson.loads((tmp_path / "out" / "warmstart.jsonl").read_bytes().splitlines()[0])
    assert first == {"id": "finemath-1", "text": "part 0 row 1", "url": "http://x/0/1", "int_score": 4}
    with pytest.raises(SystemExit, match="no such file"):
        prep.prepare([str(tmp_path / "absent")], str(tmp_path / "out2"))
    done = subprocess.run([sys.executable, str(RUNS / "prepare_finemath.py"), "--input", str(folder)], capture_output=True, text=True)
    assert done.returncode == 2 and "--input and --out are required" in done.stderr


def test_recipe_training_budgets_give_the_papers_step_counts():
    """steps = tokens // (batch x seq_len): 4,069 warm start, 33,060 per M-step and FLOPs-matched
    baseline, 9,765 token-matched baseline (the budgets of ``ryoungj/BoLT
    bin/exp_setups/bootstrap_fixed_data.sh``; docs/method.md §5)."""
    from lt_cli.commands.common import parse_tokens as _parse_tokens

    for recipe in ("paper_slurm.sh", "paper_single_node.sh"):
        steps = {}
        for words in _lt_invocations(_dry(recipe, "--dry-run")):
            if words[0] != "train":
                continue
            value = dict(zip(words, words[1:]))
            steps[value["--output"]] = _parse_tokens(value["--tokens"]) // (int(value["--batch-size"]) * int(value["--seq-len"]))
        assert steps == {
            "lt-runs/paper/warm/trial0": 4069,
            "lt-runs/paper/iter1/trial0": 33060,
            "lt-runs/paper/iter2/trial0": 33060,
            "lt-runs/paper/iter3/trial0": 33060,
            "lt-runs/paper/raw-token-matched": 9765,
            "lt-runs/paper/raw-flops-matched": 33060,
        }, recipe


# ------------------------------------------------------------------------------- the config file
def _stage_config(words: list[str]):
    """An lt command line as the config the command builds from it (the real CLI parses it)."""
    import typer

    from lt_cli.cli import COMMANDS, app
    from lt_cli.commands.common import FILE_PARAMS

    command = typer.main.get_command(app).commands[words[0]]
    params = command.make_context(words[0], list(words[1:])).params
    module = importlib.import_module(f"lt_cli.commands.{dict(COMMANDS)[words[0]]}")
    return module.config_from_flags({k: v for k, v in params.items() if k not in FILE_PARAMS})


#: settings that name files, which the two layouts place differently (lt-runs/paper/iter1/trial0
#: against RUN/k4/iter1/model); --shard splits the E-step over GPUs in the recipe only
PATH_SETTINGS = {"input", "output", "data", "log_samples", "shard"}


def _settings(config) -> dict:
    from lt_cli import flags

    values = flags.flat(config)
    out = {k: v for k, v in values.items() if k not in PATH_SETTINGS}
    if "lt-runs" in str(out.get("model")):
        out["model"] = "<checkpoint of the previous stage>"
    return out


def test_the_paper_config_prints_the_recipes_commands(tmp_path):
    """`lt bootstrap --config runs/paper/bolt.toml --dry-run` runs every lt command of
    runs/paper_single_node.sh with the same settings (files aside): synthesis, warm start, three
    E-steps (sample-thoughts, select), three M-steps, both raw baselines and every evaluation."""
    done = subprocess.run([sys.executable, "-m", "lt_cli", "bootstrap", "--config", "runs/paper/bolt.toml", "--dry-run"],
                          capture_output=True, text=True, cwd=REPO, env=_env())
    assert done.returncode == 0, done.stderr
    stages: dict[str, list] = {}
    key = None
    for line in done.stdout.splitlines():
        if line.startswith("# "):
            key = line[2:].split(" (")[0]
            continue
        words = shlex.split(line)
        stages.setdefault(key, []).append(words[words.index("lt_cli") + 1:])
    recipe: dict[str, list] = {}
    for words in _lt_invocations(_dry("paper_single_node.sh", "--dry-run")):
        value = dict(zip(words, words[1:]))
        if words[0] == "synthesize" and value["--shard"] == "0/20":
            recipe["warm/synthesize"] = [words]
        elif words[0] == "train":
            out = value["--output"]
            name = {"lt-runs/paper/warm/trial0": "warm", "lt-runs/paper/raw-token-matched": "baseline-raw-tokens",
                    "lt-runs/paper/raw-flops-matched": "baseline-raw"}.get(out) or f"k4/{out.split('/')[2]}"
            recipe[f"{name}/train"] = [words]
        elif words[0] == "sample-thoughts" and value["--shard"].startswith("0/"):
            recipe[f"k4/{value['-o'].split('/')[2]}/sample"] = [words]
        elif words[0] == "select":
            recipe[f"k4/{words[1].split('/')[2]}/select"] = [words]
        elif words[0] == "eval":
            model = value["--model"]
            name = {"lt-runs/paper/warm/trial0": "warm", "lt-runs/paper/raw-token-matched": "baseline-raw-tokens",
                    "lt-runs/paper/raw-flops-matched": "baseline-raw"}.get(model) or f"k4/{model.split('/')[2]}"
            recipe.setdefault(f"{name}/eval", []).append(words)
    assert set(recipe) == set(stages), sorted(set(recipe) ^ set(stages))
    assert len(stages) == 1 + 2 + 2 * 2 + 3 * 4
    for key in stages:
        mine = sorted((_settings(_stage_config(w)) for w in stages[key]), key=repr)
        theirs = sorted((_settings(_stage_config(w)) for w in recipe[key]), key=repr)
        assert mine == theirs, key
