"""The demo corpus, its prompts and its accuracy grading (no training; a scripted backend)."""

from __future__ import annotations


import pytest

from lt_cli import formats
from lt_cli.demo import DemoCorpusConfig, StateMachine, parse_answer, write_demo_corpus
from lt_cli.demo.accuracy import DemoEvalConfig, demo_prompt, evaluate_demo_accuracy, graded_text
from lt_cli.demo.corpus import strip_latents, thought_text
from lt_cli.errors import LtError
from lt_cli.files import read_json
from lt_cli.io import read_all

from fakes import ScriptedBackend


def small_config(**overrides) -> DemoCorpusConfig:
    values = dict(n_train=60, n_heldout=20, warm_fraction=0.1, seed=3)
    values.update(overrides)
    return DemoCorpusConfig(**values)


def test_corpus_files_are_deterministic_and_consistent(tmp_path):
    config = small_config()
    a = write_demo_corpus(tmp_path / "a", config)
    b = write_demo_corpus(tmp_path / "b", config)
    for name in ("raw", "warm", "teacher", "heldout", "machine"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    raw, teacher, warm, heldout = (read_all(p) for p in (a.raw, a.teacher, a.warm, a.heldout))
    assert (len(raw), len(teacher), len(warm), len(heldout)) == (60, 60, 6, 20)
    machine_data = read_json(a.machine)
    transitions = machine_data["transitions"]
    # every letter is a permutation of the states
    for row in transitions.values():
        assert sorted(row) == list(range(config.n_states))
    words = set()
    for doc, raw_doc in zip(teacher, raw):
        problem, answer = doc["chunks"]
        word = problem["text"][len("Q: "):]
        assert len(word) == config.n_steps and problem["latent"] == "" and problem["latent_fixed"] is True
        # replay the state machine from state 0: the thought lists every state, the last is the answer
        state, states = 0, []
        for letter in word:
            state = transitions[letter][state]
            states.append(state)
        assert answer["latent"] == "".join(map(str, states))
        assert answer["text"] == f" Answer: {states[-1]}" and doc["answer"] == states[-1]
        assert doc["text"] == problem["text"] + answer["text"]
        # the raw document is the same text; only the fixed (empty) problem latent stays
        assert raw_doc["chunks"] == [{"text": problem["text"], "latent": "", "latent_fixed": True}, {"text": answer["text"]}]
        words.add(word)
    assert warm == teacher[:6]
    held_words = {d["chunks"][0]["text"][3:] for d in heldout}
    assert not held_words & words, "held-out problems must not be training documents"
    assert len(words) == 60


def test_other_seed_gives_another_machine(tmp_path):
    a = read_json(write_demo_corpus(tmp_path / "a", small_config(seed=1)).machine)
    b = read_json(write_demo_corpus(tmp_path / "b", small_config(seed=2)).machine)
    assert a["transitions"] != b["transitions"]


@pytest.mark.parametrize(
    "overrides",
    [dict(n_states=1), dict(n_letters=0), dict(n_letters=27), dict(n_steps=0), dict(n_train=0), dict(warm_fraction=0.0), dict(warm_fraction=1.5),
     dict(n_letters=3, n_steps=3), dict(n_steps=13, n_train=20, n_heldout=5)],
)
def test_bad_corpus_config(overrides):
    with pytest.raises(ValueError):
        small_config(**overrides)


def test_answer_chunk_keeps_the_two_layouts_apart(tmp_path):
    """Design invariant (lt_cli/demo/corpus.py): under the prior and the posterior layout, state i
    sits at two token distances from letter i; their difference (answer chunk + 2 tokens) must be at
    least the number of steps, or one layout's look-up lands on another letter under the other."""
    from lt_cli.demo.corpus import MAX_STEPS
    from lt_cli.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    doc = read_all(write_demo_corpus(tmp_path, small_config()).teacher)[0]
    word, states = doc["chunks"][0]["text"][len("Q: "):], doc["chunks"][1]["latent"]
    distances = {}
    for layout in ("prior", "posterior"):
        ids = tokenizer(formats.render_chunks(doc["chunks"], ["prior", layout]), add_special_tokens=False)["input_ids"]
        tokens = [tokenizer.decode([i]) for i in ids]
        first_letter = tokens.index(word[0])
        first_state = max(i for i, t in enumerate(tokens) if t in (formats.PRIOR_PREFIX, formats.POSTERIOR_PREFIX)) + 1
        assert "".join(tokens[first_letter : first_letter + 8]) == word and "".join(tokens[first_state : first_state + 8]) == states
        distances[layout] = first_state - first_letter
    assert distances == {"prior": 10, "posterior": 22}
    assert distances["posterior"] - distances["prior"] == MAX_STEPS == 12 >= small_config().n_steps


def test_estep_prompt_renders_the_problem_chunk_as_training_does(tmp_path):
    """The E-step samples q for the answer chunk after the problem chunk written exactly as training
    writes it (prior layout, empty fixed latent); with the raw text instead, q was sampled in a
    context it never saw (docs/bootstrap.md: 47% of proposals right instead of 96%)."""
    from lt_cli.estep import SampleConfig, chunk_prompt, chunk_scoring_pair

    doc = read_all(write_demo_corpus(tmp_path, small_config()).raw)[0]
    problem, answer = doc["chunks"][0]["text"], doc["chunks"][1]["text"]
    rendered_problem = formats.prior_chunk("", problem)
    assert chunk_prompt(doc["chunks"], 1, SampleConfig()) == formats.posterior_prompt(rendered_problem, answer)
    assert chunk_scoring_pair(doc["chunks"], 1, "123", SampleConfig()).context == rendered_problem
    assert chunk_scoring_pair(doc["chunks"], 0, "", SampleConfig()).context == ""


def test_state_machine_trace():
    import numpy as np

    machine = StateMachine(4, 2, np.random.default_rng(0))
    a, b = machine.transitions["a"], machine.transitions["b"]
    assert machine.trace("ab") == [a[0], b[a[0]]]
    assert thought_text([3, 1, 2]) == "312"


def test_parse_answer_and_graded_text():
    assert parse_answer(" Answer: 7") == 7
    assert parse_answer("junk Answer:12 Answer: 3") == 12
    assert parse_answer("no answer") is None and parse_answer(" A:7") is None and parse_answer("Answer: x") is None
    eol = formats.END_OF_LATENT
    # latent variant: only what follows the first <EoL> counts (an answer inside the thought does not)
    assert parse_answer(graded_text(f"35 Answer: 9{eol} Answer: 4</s>", "latent")) == 4
    assert graded_text("35 Answer: 9 Answer: 4", "latent") == ""
    assert parse_answer(graded_text(" Answer: 4", "raw")) == 4


def test_prompts():
    latent = demo_prompt("Q: abc", "latent")
    # the problem chunk exactly as training renders it (prior layout, empty latent), then <SoL><PRIOR>
    assert latent == formats.prior_chunk("", "Q: abc") + formats.START_OF_LATENT + formats.PRIOR_PREFIX
    assert demo_prompt("Q: abc", "raw") == "Q: abc"
    with pytest.raises(ValueError):
        demo_prompt("Q: abc", "other")
    with pytest.raises(ValueError):
        DemoEvalConfig(variant="other")




def test_accuracy_counts_exact_answers(tmp_path):
    files = write_demo_corpus(tmp_path, small_config(n_heldout=4))
    docs = read_all(files.heldout)
    eol = formats.END_OF_LATENT
    outputs = {}
    for i, doc in enumerate(docs):
        prompt = demo_prompt(doc["chunks"][0]["text"], "latent")
        gold = doc["answer"]
        outputs[prompt] = [f"12{eol} Answer: {gold}", f"12{eol} Answer: {(gold + 1) % 10}", f"Answer: {gold} never closed", f"1{eol} Answer: {gold}"][i]
    backend = ScriptedBackend(lambda prompt, j: outputs[prompt])
    metrics = evaluate_demo_accuracy(backend, docs, DemoEvalConfig(variant="latent", batch_size=3))
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["n_problems"] == 4 and metrics["n_answered"] == 3
    assert [s["correct"] for s in metrics["samples"]] == [True, False, False, True]
    # greedy, in batches of 3
    assert [len(p) for p, _, _ in backend.calls] == [3, 1]
    assert all(params.temperature == 0.0 for _, params, _ in backend.calls)


def test_accuracy_rejects_non_demo_records():
    backend = ScriptedBackend(lambda prompt, j: "")
    with pytest.raises(LtError):
        evaluate_demo_accuracy(backend, [{"text": "hello"}])
    with pytest.raises(LtError):
        evaluate_demo_accuracy(backend, [])


def test_strip_latents_keeps_other_fields():
    doc = {"id": "x", "text": "Q: ab A:1", "answer": 1, "chunks": [{"text": "Q: ab", "latent": ""}, {"text": " A:1", "latent": "0 1"}]}
    raw = strip_latents(doc)
    assert raw == {"id": "x", "text": "Q: ab A:1", "answer": 1, "chunks": [{"text": "Q: ab"}, {"text": " A:1"}]}
    assert doc["chunks"][1]["latent"] == "0 1"


def test_demo_task_registers_in_eval_registry(tmp_path):
    from lt_cli.demo import task as demo_task
    from lt_cli.evaluation import EvalConfig, evaluate
    from lt_cli.evaluation.registry import get_task

    assert isinstance(get_task("demo"), demo_task.DemoTask)
    files = write_demo_corpus(tmp_path, small_config(n_heldout=2))
    docs = read_all(files.heldout)
    outputs = {demo_prompt(d["chunks"][0]["text"], "raw"): f" Answer: {d['answer']}" for d in docs}
    config = EvalConfig(task="demo", data=str(files.heldout), variant="raw", log_samples=str(tmp_path / "s.jsonl"))
    metrics = evaluate(config, backend=ScriptedBackend(lambda prompt, j: outputs[prompt]))
    assert metrics["accuracy"] == 1.0 and metrics["n_problems"] == 2
    assert len(read_all(tmp_path / "s.jsonl")) == 2
    with pytest.raises(LtError):
        evaluate(EvalConfig(task="demo", variant="raw"), backend=ScriptedBackend(lambda prompt, j: outputs[prompt]))
