"""`lt eval --export-lm-eval`: lm-evaluation-harness YAMLs generated from the task files render
exactly lt's prompts (checked with lm-eval itself when it is installed, and with lm-eval's
documented plain-text rule always)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_cli import formats
from lt_cli.errors import UsageError
from lt_cli.evaluation import EvalConfig, evaluate, get_task, parse_task_file
from lt_cli.evaluation.lmeval_export import export_lm_eval, jinja_template, task_spec

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GSM = FIXTURES / "eval_gsm8k_predictions.jsonl"
MATH = FIXTURES / "eval_math_predictions.jsonl"
SOL = formats.START_OF_LATENT


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _load_yaml(path: Path) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: {"!function": loader.construct_scalar(node)})
    return yaml.load(path.read_text(), Loader=Loader)


def _render(spec: dict, doc: dict) -> str:
    """lm-eval 0.4's plain-text few-shot context (api/task.py fewshot_context + build_qa_turn):
    per exemplar ``doc_to_text + target_delimiter + doc_to_target + fewshot_delimiter``, then
    ``doc_to_text(doc)``; templates are Jinja with StrictUndefined and keep_trailing_newline."""
    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    few = spec["fewshot_config"]
    text = env.from_string(spec["doc_to_text"])
    target = env.from_string(few["doc_to_target"])
    parts = [text.render(**ex) + few["target_delimiter"] + target.render(**ex) + few["fewshot_delimiter"]
             for ex in few["samples"][: spec["num_fewshot"]]]
    return "".join(parts) + text.render(**doc)


@pytest.mark.parametrize("task_name, data", [("gsm8k", GSM), ("math", MATH)])
def test_exported_yaml_renders_lt_prompts(tmp_path, task_name, data):
    result = evaluate(EvalConfig(task=task_name, data=str(data), export_lm_eval=str(tmp_path / "out"), max_new_tokens=64))
    task = get_task(task_name)
    assert result["lm_eval_tasks"] == [f"lt_{task_name}_latent", f"lt_{task_name}_raw"]
    assert sorted(Path(f).name for f in result["files"]) == sorted([f"lt_{task_name}_latent.yaml", f"lt_{task_name}_raw.yaml", "utils.py"])
    for variant in ("latent", "raw"):
        latent = variant == "latent"
        spec = _load_yaml(tmp_path / "out" / f"lt_{task_name}_{variant}.yaml")
        assert spec["dataset_path"] == "json" and spec["dataset_kwargs"]["data_files"]["test"] == str(data.resolve())
        assert spec["output_type"] == "generate_until" and spec["fewshot_config"]["sampler"] == "first_n"
        pool = task.latent_exemplars if latent else task.exemplars
        assert spec["num_fewshot"] == len(pool) == (8 if task_name == "gsm8k" else 4)
        assert [s[task.input_fields[0]] for s in spec["fewshot_config"]["samples"]] == [ex[task.input_fields[0]] for ex in pool]  # file order
        assert spec["generation_kwargs"]["until"] == task.stop_strings(latent) + ([] if latent else [t for t in formats.SPECIAL_TOKENS])
        assert spec["generation_kwargs"]["do_sample"] is False and spec["generation_kwargs"]["max_gen_toks"] == 64
        assert spec["process_results"] == {"!function": f"utils.process_{task_name}_{variant}"}
        assert [m["metric"] for m in spec["metric_list"]] == (["flexible", "strict"] if task_name == "gsm8k" else ["math_verify"]) * 1 + (
            [f"{p}_{m}" for p in ("thought", "answer") for m in (["flexible", "strict"] if task_name == "gsm8k" else ["math_verify"])] if latent else [])
        for record in _records(data):
            assert _render(spec, record) == task.build_prompt(record, latent)
    utils = (tmp_path / "out" / "utils.py").read_text()
    assert f"process_{task_name}_latent = make_process_results('{task_name}', latent=True)" in utils


def test_the_old_hand_written_order_was_wrong():
    """The YAML docs/eval.md used to print had lt's 4th and 6th exemplars first; the export keeps file order."""
    spec = task_spec(get_task("gsm8k"), "latent", data=str(GSM))
    questions = [s["question"] for s in spec["fewshot_config"]["samples"]]
    assert questions[0].startswith("A bakery sells muffins") and questions[3].startswith("Tom has 50 marbles")
    assert questions[5].startswith("A school orders 9 boxes")


def test_jinja_template_escapes_braces_and_refuses_formats():
    from jinja2 import Environment, StrictUndefined

    template = "Solve {{x}} for {problem}: %{{#}} {{% raw %}}"
    converted = jinja_template(template)
    rendered = Environment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(converted).render(problem="P")
    assert rendered == template.format(problem="P") == "Solve {x} for P: %{#} {% raw %}"
    for bad in ("{problem!r}", "{problem:>10}", "{0}"):
        with pytest.raises(UsageError, match="plain"):
            jinja_template(bad)


def test_export_utils_hook_grades_like_lt(tmp_path):
    from lt_cli.evaluation.lmeval_hooks import make_process_results

    hook = make_process_results("gsm8k", latent=True)
    doc = {"question": "q", "answer": "She has 12.\n#### 12"}
    assert hook(doc, [f"3 * 4 = 12{formats.END_OF_LATENT} The answer is 12."]) == {
        "flexible": 1.0, "strict": 1.0, "thought_flexible": 1.0, "thought_strict": 0.0, "answer_flexible": 1.0, "answer_strict": 1.0}
    assert hook(doc, ["The answer is 13."])["flexible"] == 0.0
    # exporting a second task into the same folder keeps the first task's hooks
    evaluate(EvalConfig(task="gsm8k", data=str(GSM), export_lm_eval=str(tmp_path), variant="latent"))
    evaluate(EvalConfig(task="math", data=str(MATH), export_lm_eval=str(tmp_path), variant="raw"))
    lines = [line for line in (tmp_path / "utils.py").read_text().splitlines() if "make_process_results(" in line and "import" not in line]
    assert lines == ["process_gsm8k_latent = make_process_results('gsm8k', latent=True)",
                     "process_math_raw = make_process_results('math', latent=False)"]
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == ["lt_gsm8k_latent.yaml", "lt_math_raw.yaml"]


def test_export_bad_inputs(tmp_path):
    with pytest.raises(UsageError, match="generation task"):
        evaluate(EvalConfig(task="nll", export_lm_eval=str(tmp_path)))
    # MATH reads 7 Hub configs: without --data, one YAML per config and a group over them
    hub = evaluate(EvalConfig(task="math", export_lm_eval=str(tmp_path / "math"), variant="raw"))
    assert hub["lm_eval_tasks"] == ["lt_math_raw"]
    group = _load_yaml(tmp_path / "math" / "lt_math_raw.yaml")
    assert group["task"] == [f"lt_math_raw_{c}" for c in get_task("math").data["hf_configs"]]
    part = _load_yaml(tmp_path / "math" / "lt_math_raw_algebra.yaml")
    assert (part["dataset_path"], part["dataset_name"]) == ("EleutherAI/hendrycks_math", "algebra")
    with pytest.raises(UsageError, match="no such file"):
        evaluate(EvalConfig(task="gsm8k", data=str(tmp_path / "missing.jsonl"), export_lm_eval=str(tmp_path)))
    hub = task_spec(get_task("gsm8k"), "raw")  # one dataset config: the hub path is kept
    assert (hub["dataset_path"], hub["dataset_name"], hub["test_split"]) == ("openai/gsm8k", "main", "test")
    custom = parse_task_file({"name": "t", "version": 1, "grader": "gsm8k", "prompt": "Q: {question!r}", "input_fields": ["question"]})
    with pytest.raises(UsageError, match="plain"):
        export_lm_eval(custom, str(tmp_path), data=str(GSM))


def test_lm_eval_renders_the_same_prompts_and_token_ids(tiny_model_dir, tmp_path, monkeypatch):
    """lm-eval itself (0.4.x, when installed) loads the exported YAMLs, builds lt's prompts
    character for character and token for token, and grades through lt's hook."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    out = tmp_path / "lt_tasks"
    evaluate(EvalConfig(task="gsm8k", data=str(GSM), export_lm_eval=str(out), max_new_tokens=4))
    manager = TaskManager(include_path=str(out), include_defaults=False)
    names = ["lt_gsm8k_latent", "lt_gsm8k_raw"]
    if hasattr(manager, "load"):  # lm-eval >= 0.4.10
        tasks = manager.load(names)["tasks"]
    else:
        from lm_eval.tasks import get_task_dict

        tasks = get_task_dict(names, manager)
    task = get_task("gsm8k")
    records = _records(GSM)
    backend = load_backend("transformers", BackendConfig(model=str(tiny_model_dir)))
    lm = HFLM(pretrained=str(tiny_model_dir), batch_size=2, device="cpu")
    try:
        for name, lm_task in tasks.items():
            latent = name.endswith("_latent")
            lm_task.build_all_requests(limit=None, rank=0, world_size=1)
            contexts = [instance.args[0] for instance in lm_task.instances]
            prompts = [task.build_prompt(r, latent) for r in records]
            assert contexts == prompts
            for context, prompt in zip(contexts, prompts):
                lm_ids = lm.tok_batch_encode([context])[0][0].tolist()
                assert lm_ids == backend.encode(prompt)  # the ids lt sends, BOS by models.bos_policy
        results = lm_eval.simple_evaluate(model=lm, tasks=["lt_gsm8k_latent"], task_manager=manager, limit=2, log_samples=True)
    finally:
        backend.close()
    assert set(results["results"]["lt_gsm8k_latent"]) >= {"flexible,none", "strict,none", "answer_strict,none"}
    from lt_cli.evaluation.graders import get_grader

    grader = get_grader("gsm8k")
    for sample in results["samples"]["lt_gsm8k_latent"]:
        graded = grader.grade(sample["filtered_resps"][0], grader.gold(sample["doc"]), latent=True)
        assert sample["flexible"] == float(graded.correct["flexible"])


# ------------------------------------------------------------------ checkpoints lt trained
@pytest.fixture(scope="module")
def lt_trained_no_bos(tmp_path_factory) -> Path:
    """An lt-trained checkpoint whose base tokenizer adds no BOS by itself (like SmolLM2's, GPT-2's,
    Qwen's): lt gives it a BOS before every prompt (models.bos_policy); the saved tokenizer must too."""
    from tokenizers import processors

    from lt_cli.model_folder import save_model_folder
    from lt_cli.tiny import build_byte_tokenizer, build_tiny_llama
    from lt_cli.training import TrainConfig, train

    root = tmp_path_factory.mktemp("no-bos")
    tokenizer = build_byte_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    save_model_folder(build_tiny_llama(len(tokenizer)), tokenizer, root / "base")
    train(TrainConfig(output=str(root / "ckpt"), data=[str(FIXTURES / "math_docs.jsonl")], model=str(root / "base"), layout="raw",
                      steps=1, seq_len=64, batch_size=1, log_every=1))
    return root


def test_lt_trained_checkpoint_tokenizer_adds_the_bos_lt_sends(lt_trained_no_bos):
    """Any program that tokenizes text with the checkpoint's own tokenizer (vLLM, lm-eval's default,
    transformers) gets the ids lt eval sends: BOS first."""
    from transformers import AutoTokenizer

    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig
    from lt_cli.models import tokenizer_adds_bos

    base = AutoTokenizer.from_pretrained(lt_trained_no_bos / "base")
    saved = AutoTokenizer.from_pretrained(lt_trained_no_bos / "ckpt")
    assert not tokenizer_adds_bos(base) and tokenizer_adds_bos(saved)
    backend = load_backend("transformers", BackendConfig(model=str(lt_trained_no_bos / "ckpt")))
    try:
        for prompt in [task.build_prompt(r, False) for task, r in [(get_task("gsm8k"), _records(GSM)[0]), (get_task("math"), _records(MATH)[0])]]:
            assert backend.encode(prompt) == saved.encode(prompt) == [saved.bos_token_id] + base.encode(prompt)
            assert saved(prompt, add_special_tokens=False)["input_ids"] == base.encode(prompt)  # lt's own encoding is unchanged
    finally:
        backend.close()


def test_lm_eval_and_lt_eval_agree_on_an_lt_trained_checkpoint(lt_trained_no_bos, tmp_path, monkeypatch):
    """lm-eval (when installed), default model arguments, on the exported task: the same prompt ids
    as lt eval and the same greedy generations, so the same accuracy."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    ckpt = str(lt_trained_no_bos / "ckpt")
    out = tmp_path / "lt_tasks"
    evaluate(EvalConfig(task="gsm8k", data=str(GSM), export_lm_eval=str(out), variant="raw", num_fewshot=2, max_new_tokens=12))
    manager = TaskManager(include_path=str(out), include_defaults=False)
    lm = HFLM(pretrained=ckpt, batch_size=1, device="cpu")
    backend = load_backend("transformers", BackendConfig(model=ckpt))
    task = get_task("gsm8k")
    try:
        (lm_task,) = manager.load(["lt_gsm8k_raw"])["tasks"].values() if hasattr(manager, "load") else [None]
        lm_task.build_all_requests(limit=None, rank=0, world_size=1)
        for instance in lm_task.instances:
            prompt = task.build_prompt(instance.doc, False, 2)
            assert instance.args[0] == prompt
            assert lm.tok_batch_encode([prompt])[0][0].tolist() == backend.encode(prompt)  # BOS included on both sides
    finally:
        backend.close()
    results = lm_eval.simple_evaluate(model=lm, tasks=["lt_gsm8k_raw"], task_manager=manager, log_samples=True)
    ours = evaluate(EvalConfig(task="gsm8k", model=ckpt, data=str(GSM), variant="raw", num_fewshot=2, max_new_tokens=12, device="cpu",
                               log_samples=str(tmp_path / "lt.jsonl")))
    lt_outputs = [json.loads(line)["output"] for line in (tmp_path / "lt.jsonl").read_text().splitlines()]
    lm_outputs = {s["doc_id"]: s["resps"][0][0] for s in results["samples"]["lt_gsm8k_raw"]}
    assert [lm_outputs[i] for i in range(len(lt_outputs))] == lt_outputs
    assert results["results"]["lt_gsm8k_raw"]["flexible,none"] == pytest.approx(ours["metrics"]["flexible"])
