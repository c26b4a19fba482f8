"""lt view: every kind of lt record as a document with its thoughts and ranked candidates, plain text
in a pipe, the terminal pager driven headless, and an HTML page that holds every document,
candidate and weight and works with no network (parsed; and in headless Chromium when installed)."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from lt_cli import console
from lt_cli.cli import app
from lt_cli.estep.select import select_document
from lt_cli.view import Filter, document_view, read_views
from lt_cli.view.html import render_html
from lt_cli.view.pager import browse


def _candidates(log_ws: list[float], finished=True) -> list[dict]:
    return [{"latent": f"thought {j} of weight {w}", "log_q": -10.0 - j, "log_p": -10.0 - j + w, "log_w": w, "finished": finished if j else True,
             "n_tokens": 5 + j} for j, w in enumerate(log_ws)]


def candidate_docs() -> list[dict]:
    """Three documents shaped like the demo's candidates: a problem chunk with a given latent and an
    answer chunk with K = 3 sampled thoughts."""
    docs = []
    for i, log_ws in enumerate(([-3.0, -1.0, -2.0], [-1.0, -1.0, -9.0], [-20.0, -0.5, -0.6])):
        fixed = {"text": f"Q: problem {i}", "latent": "", "latent_fixed": True,
                 "candidates": [{"latent": "", "log_q": 0.0, "log_p": -4.0, "log_w": -4.0, "finished": True, "n_tokens": 0}] * 3}
        answer = {"text": f" Answer: {i}", "candidates": _candidates(log_ws, i != 1)}
        docs.append({"id": f"doc-{i}", "estep": {"model_parameters": 1000}, "chunks": [fixed, answer]})
    return docs


@pytest.fixture
def files(tmp_path):
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("".join(json.dumps(d) + "\n" for d in candidate_docs()))
    augmented = tmp_path / "augmented.jsonl"
    augmented.write_text("".join(json.dumps(select_document(d, seed=7)) + "\n" for d in candidate_docs()))
    return candidates, augmented


# ------------------------------------------------------------------------------------ the model
def test_every_kind_of_record():
    raw = document_view({"id": 1, "text": "Plain text."}, 1)
    assert (raw.kind, raw.id, raw.chunks[0].parts()) == ("raw", "1", [("text", "Plain text.")])
    chunked = document_view({"text": "A. B.", "chunks": [{"text": "A."}, {"suffix": " B."}]}, 2)
    assert chunked.kind == "chunked" and chunked.id.startswith("md5:") and [c.text for c in chunked.chunks] == ["A.", " B."]
    teacher = document_view({"id": "t", "chunks": [{"text": "x = 3.", "latent": "three things"}]}, 3)
    assert teacher.kind == "thoughts" and teacher.chunks[0].parts() == [("thought", "three things"), ("text", "x = 3.")]  # thought first
    wrap = document_view({"id": "w", "text": "orig", "latent": "rephrased"}, 4)
    assert wrap.kind == "rephrased" and wrap.chunks[0].thought == "rephrased"
    sample = document_view({"index": 4, "question": "2+2?", "prompt": "Q: 2+2?<|START_OF_LATENT|><|PRIOR_PREFIX|>", "variant": "latent",
                            "output": "two and two<|END_OF_LATENT|> The answer is 4.", "finish_reason": "stop", "gold": "4", "correct": True}, 5)
    assert sample.kind == "eval" and sample.chunks[0].parts() == [("thought", "two and two"), ("text", " The answer is 4.")]
    assert ("problem", "2+2?") in sample.fields and ("correct", "True") in sample.fields and sample.finish_reasons == {"stop"} and sample.id == "problem 4"
    chunks = [{"text": "A.", "candidates": _candidates([-1.0, -2.0])}]
    elbo_log = document_view({"index": 0, "text": "A. B.", "elbo_1": -5.0, "elbo_2": -4.5, "chunks": chunks}, 6)
    assert elbo_log.kind == "candidates" and elbo_log.elbo == {"1": -5.0, "2": -4.5}


def test_candidates_are_ranked_by_weight_and_the_figures_are_lt_selects(files):
    candidates, augmented = files
    docs = list(read_views(str(candidates), selected=str(augmented)))
    selected = [select_document(d, seed=7) for d in candidate_docs()]
    for doc, chosen in zip(docs, selected):
        answer = doc.chunks[1]
        weights = [c.weight for c in answer.candidates]
        assert weights == sorted(weights, reverse=True) and math.isclose(sum(weights), 1.0)
        assert [c.index for c in answer.candidates if c.drawn] == [chosen["chunks"][1]["selected"]]
        assert answer.thought == chosen["chunks"][1]["latent"]  # the drawn candidate is the chunk's thought
        assert doc.ess == pytest.approx(chosen["ess"]) and doc.elbo == pytest.approx(chosen["elbo"]) and doc.mean_log_w == pytest.approx(chosen["mean_log_w"])
        assert doc.chunks[0].fixed and doc.chunks[0].parts() == [("text", doc.chunks[0].text)]  # a given empty latent: no thought to show
    assert docs[0].chunks[1].candidates[0].latent == "thought 1 of weight -1.0" and docs[1].finish_reasons == {"stop", "length"}
    # lt select's output in another order (or with documents missing) is matched by id
    shuffled = augmented.with_name("shuffled.jsonl")
    shuffled.write_text("".join(reversed(augmented.read_text().splitlines(keepends=True))))
    again = list(read_views(str(candidates), selected=str(shuffled)))
    assert [[c.index for c in d.chunks[1].candidates if c.drawn] for d in again] == [[c.index for c in d.chunks[1].candidates if c.drawn] for d in docs]
    # augmented documents (lt select's output) read the same figures, recorded rather than computed
    assert [d.ess for d in read_views(str(augmented))] == pytest.approx([d.ess for d in docs])


def test_filters():
    docs = [document_view(d, i + 1) for i, d in enumerate(candidate_docs())]
    ess = [d.ess for d in docs]
    assert [d.id for d in docs if Filter(ess_below=sorted(ess)[1] + 1e-9).matches(d)] == [d.id for d in docs if d.ess <= sorted(ess)[1]]
    assert [d.id for d in docs if Filter.parse("finish:length").matches(d)] == ["doc-1"]  # its thoughts hit --max-new-tokens
    assert [d.id for d in docs if Filter.parse("id:doc-[12]").matches(d)] == ["doc-1", "doc-2"]
    assert [d.id for d in docs if Filter.parse("text:problem.1").matches(d)] == ["doc-1"]
    assert [d.id for d in docs if Filter.parse("thought:weight.-20").matches(d)] == ["doc-2"]
    assert [d.id for d in docs if Filter.parse("Answer:.2").matches(d)] == ["doc-2"]
    from lt_cli.errors import UsageError

    with pytest.raises(UsageError, match="bad regex"):
        Filter.parse("text:(")


# ------------------------------------------------------------------------------------ the command
def _invoke(args, **kwargs):
    console.reset_record_stream()
    return CliRunner().invoke(app, ["view", *args], **kwargs)


def test_plain_text_in_a_pipe(files):
    candidates, augmented = files
    result = _invoke([str(candidates), "--selected", str(augmented)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("\n== ") + out.startswith("== ") == 3
    block = out.split("== doc-0")[1].split("== doc-1")[0]
    assert "thought  | thought" in block and "text     |  Answer: 0" in block and "latent given, not sampled: 3 copies, log p -4.00" in block
    ranked = [re.search(r"#\d+", line).group() for line in block.splitlines() if line.strip().startswith(("#", "> #"))]
    assert ranked == ["#1", "#2", "#0"]  # heaviest first
    assert "w 0.665  log q -11.00  log p -12.00  log w -1.00  6 tokens  stop" in block
    filtered = _invoke([str(candidates), "--finish", "length", "--grep-thought", "weight -9"])
    assert [line.split()[1] for line in filtered.stdout.splitlines() if line.startswith("== ")] == ["doc-1"]
    assert _invoke([str(candidates), "--finish", "length", "--grep-thought", "weight -20"]).stdout == ""
    from_stdin = _invoke(["--id", "doc-1"], input=candidates.read_text())
    assert from_stdin.exit_code == 0 and [line.split()[1] for line in from_stdin.stdout.splitlines() if line.startswith("== ")] == ["doc-1"]
    bad = _invoke([str(candidates), "--grep", "("])
    assert bad.exit_code == 2 and "bad regex" in bad.stderr


def test_the_terminal_pager_driven_headless(files):
    from rich.console import Console

    candidates, augmented = files
    docs = list(read_views(str(candidates), selected=str(augmented)))
    screen = Console(file=io.StringIO(), record=True, width=120, force_terminal=True)
    asked = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "finish:length"

    browse(docs, screen, iter(["n", "right", "p", "/", "G", "c", "q"]), ask)
    text = screen.export_text()
    pages = [page for page in text.split("doc-") if page[:1].isdigit()]
    assert [page[:5] for page in pages] == ["0 (1/", "1 (2/", "2 (3/", "1 (2/", "1 (1/", "1 (1/", "0 (1/"]
    assert "filter: finish:length · 1 of 3 documents" in text and asked
    assert "thought" in text and "drawn" in text and "log w" in text and "ESS" in text


def test_html_holds_every_document_candidate_and_weight(files, tmp_path):
    candidates, augmented = files
    out = tmp_path / "view.html"
    result = _invoke([str(candidates), "--selected", str(augmented), "--html", str(out)])
    assert result.exit_code == 0, result.output

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.docs, self.rows, self.urls, self.tags, self.csp = [], [], [], set(), None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.tags.add(tag)
            if tag == "section":
                self.docs.append(a)
            if tag == "tr" and "cand" in (a.get("class") or ""):
                self.rows.append((self.docs[-1]["data-id"], a))
            self.urls += [v for k, v in attrs if k in ("src", "href") and v]
            if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
                self.csp = a["content"]

    page = Page()
    page.feed(out.read_text())
    source = candidate_docs()
    assert [d["data-id"] for d in page.docs] == [d["id"] for d in source]
    for doc in source:
        rows = [a for doc_id, a in page.rows if doc_id == doc["id"]]
        expected = [c for chunk in doc["chunks"] for c in chunk["candidates"]]
        assert len(rows) == len(expected)
        assert sorted(float(a["data-log-w"]) for a in rows) == sorted(c["log_w"] for c in expected)  # exact values
        assert sorted(float(a["data-log-q"]) for a in rows) == sorted(c["log_q"] for c in expected)
        assert sorted(int(a["data-n-tokens"]) for a in rows) == sorted(c["n_tokens"] for c in expected)
        weights = [float(a["data-weight"]) for a in rows]
        assert math.isclose(sum(weights), 2.0)  # two chunks, each normalised
        assert sum("drawn" in a["class"] for a in rows) == 2  # one drawn per chunk
    # self-contained: no link or source anywhere, nothing may load (CSP), styles and script inline
    assert page.urls == [] and page.csp.startswith("default-src 'none'") and {"style", "script"} <= page.tags
    assert "http://" not in out.read_text() and "https://" not in out.read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")
def test_html_in_headless_chromium_without_network(files, tmp_path):
    """The page runs its script offline (every network request would fail) and its search agrees
    with lt view's own filter."""
    candidates, augmented = files
    out = tmp_path / "view.html"
    _invoke([str(candidates), "--selected", str(augmented), "--html", str(out)])
    docs = list(read_views(str(candidates), selected=str(augmented)))
    for query in ("", "finish:length", "id:doc-[01]", f"ess<{sorted(d.ess for d in docs)[1] + 1e-6}", "thought:weight.-0.6"):
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--proxy-server=127.0.0.1:9",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", out.as_uri() + ("#q=" + query if query else "")],
            capture_output=True, text=True, timeout=120,
        ).stdout
        body = {}

        class Body(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "body":
                    body.update(attrs)

        Body().feed(dom)
        assert body.get("data-ready") == "1", dom[:500]
        expected = [d.id for d in docs if Filter.parse(query).matches(d)]
        assert json.loads(body["data-shown"]) == expected, query


def test_bootstrap_report_follows_example_documents_and_writes_views(files, tmp_path):
    from types import SimpleNamespace

    from lt_cli.bootstrap.examples import example_thoughts, write_views

    candidates, augmented = files
    run = tmp_path / "run"
    for t in (1, 2):
        folder = run / "k3" / f"iter{t}"
        folder.mkdir(parents=True)
        shutil.copy(augmented, folder / "augmented.jsonl")
    shutil.copy(candidates, run / "k3" / "iter1" / "candidates.jsonl")
    rows = [{"arm": "k3", "iter": 0}] + [{"arm": "k3", "iter": t, "view": f"k3/iter{t}/view.html"} for t in (1, 2)]
    examples = example_thoughts(SimpleNamespace(demo=False, teacher_data=None), run, rows)
    assert [e["id"] for e in examples] == ["doc-0", "doc-1", "doc-2"]
    assert [(t["arm"], t["iter"]) for t in examples[0]["thoughts"]] == [("k3", 1), ("k3", 2)] and examples[0]["teacher"] is None
    write_views({"name": "x", "iterations": rows}, run)
    first = (run / "k3" / "iter1" / "view.html").read_text()
    second = (run / "k3" / "iter2" / "view.html").read_text()
    assert first.count('<tr class="cand') == 18 and '<tr class="cand' not in second  # the candidates when the iteration has them
    assert second.count('class="thought"') == 3


def test_render_html_escapes_everything():
    page = render_html([document_view({"id": "<x>", "chunks": [{"text": "<script>alert(1)</script>", "latent": "a & b"}]}, 1)], "<t>")
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page and 'data-id="&lt;x&gt;"' in page and "a &amp; b" in page
