"""``lt view --html OUT.html``: one self-contained static page with the terminal view's content.

Every document is in the page as HTML (readable with scripts off, searchable with the browser's
find); a small inline script adds the pager: one document at a time, keys to move (``j``/``k``,
arrows), and a search box that takes the filter grammar of :class:`lt_cli.view.model.Filter`
(also from the address: ``page.html#q=ess<2``). No server, no network: the styles and the
script are inline and a Content-Security-Policy forbids loading anything, so the page opens the
same from a laptop, a cluster's file browser or an e-mail attachment. Exact values ride along as
``data-`` attributes (``data-log-w`` is ``repr(float)``), rounded ones are shown.
"""

from __future__ import annotations

from html import escape
from typing import Iterable

from .model import CandidateView, ChunkView, DocumentView
from .text import chunk_title, fixed_line, headline, number, shown_latent

STYLE = """
:root { --thought: #7a2e8c; --drawn: #e6f4ea; --muted: #666; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #111; background: #fff; }
header { position: sticky; top: 0; background: #f6f6f6; border-bottom: 1px solid #ddd; padding: .6em 1em; z-index: 1; }
h1 { font-size: 1.1em; margin: 0 0 .3em; } h2 { font-size: 1em; margin: 0 0 .5em; }
#q { width: 38em; max-width: 60vw; } .summary, .meta, .hint { color: var(--muted); font-size: .9em; }
main { padding: 1em; max-width: 70em; }
section.doc { border: 1px solid #ddd; border-radius: 6px; padding: .8em 1em; margin-bottom: 1em; }
.one section.doc:not(.current) { display: none; } section.doc.hidden { display: none !important; }
.chunk { margin: .6em 0; } .chunk-head { color: var(--muted); font-size: .85em; }
.thought { color: var(--thought); font-style: italic; white-space: pre-wrap; border-left: 3px solid var(--thought); padding-left: .6em; }
.thought::before { content: "thought  "; font-style: normal; font-weight: bold; font-size: .8em; }
.text { white-space: pre-wrap; padding-left: .9em; }
table.cands { border-collapse: collapse; margin: .4em 0 .4em .9em; font-size: .88em; }
table.cands th, table.cands td { border-bottom: 1px solid #eee; padding: .15em .5em; text-align: right; vertical-align: top; }
table.cands td.latent { text-align: left; white-space: pre-wrap; font-family: ui-monospace, monospace; }
tr.drawn { background: var(--drawn); } .field { margin: .2em 0; } .field b { color: var(--muted); font-weight: normal; }
"""

SCRIPT = r"""
(function () {
  var docs = Array.prototype.slice.call(document.querySelectorAll("section.doc"));
  var q = document.getElementById("q"), all = document.getElementById("all"), pos = document.getElementById("pos");
  var shown = docs, at = 0;
  function parse(query) {
    var f = {};
    query.split(/\s+/).filter(Boolean).forEach(function (word) {
      var i = word.indexOf(":"), key = i > 0 ? word.slice(0, i) : "";
      if (word.slice(0, 4) === "ess<") f.ess = parseFloat(word.slice(4));
      else if (["id", "finish", "text", "thought"].indexOf(key) >= 0) f[key] = word.slice(i + 1);
      else f.any = f.any ? f.any + " " + word : word;
    });
    return f;
  }
  function glob(pattern) {
    return new RegExp("^" + pattern.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
  }
  function texts(doc, selector) {
    return Array.prototype.map.call(doc.querySelectorAll(selector), function (e) { return e.textContent; });
  }
  function some(list, pattern) {
    var re = new RegExp(pattern);
    return list.some(function (t) { return re.test(t); });
  }
  function matches(doc, f) {
    try {
      if (f.id && !glob(f.id).test(doc.dataset.id)) return false;
      if (f.ess !== undefined && !(doc.dataset.ess !== "" && parseFloat(doc.dataset.ess) < f.ess)) return false;
      if (f.finish && (" " + doc.dataset.finish + " ").indexOf(" " + f.finish + " ") < 0) return false;
      if (f.text && !some(texts(doc, ".text, .problem"), f.text)) return false;
      if (f.thought && !some(texts(doc, ".thought, td.latent"), f.thought)) return false;
      if (f.any && !some(texts(doc, ".text, .problem, .thought, td.latent"), f.any)) return false;
    } catch (e) { return false; }
    return true;
  }
  function show() {
    var f = parse(q.value);
    shown = docs.filter(function (d) { var ok = matches(d, f); d.classList.toggle("hidden", !ok); return ok; });
    at = Math.min(at, Math.max(shown.length - 1, 0));
    docs.forEach(function (d) { d.classList.remove("current"); });
    if (shown.length) shown[at].classList.add("current");
    document.body.classList.toggle("one", !all.checked);
    pos.textContent = shown.length ? (all.checked ? shown.length : (at + 1) + "/" + shown.length) + " of " + docs.length : "no document matches";
    document.body.dataset.shown = JSON.stringify(shown.map(function (d) { return d.dataset.id; }));
  }
  function move(step) { at = Math.min(Math.max(at + step, 0), Math.max(shown.length - 1, 0)); show(); if (!all.checked) window.scrollTo(0, 0); }
  document.getElementById("prev").onclick = function (e) { e.preventDefault(); move(-1); };
  document.getElementById("next").onclick = function (e) { e.preventDefault(); move(1); };
  document.getElementById("filters").onsubmit = function (e) { e.preventDefault(); at = 0; show(); };
  q.oninput = function () { at = 0; show(); };
  all.onchange = show;
  document.addEventListener("keydown", function (e) {
    if (e.target === q) { if (e.key === "Escape") q.blur(); return; }
    if (e.key === "j" || e.key === "n" || e.key === "ArrowRight") move(1);
    else if (e.key === "k" || e.key === "p" || e.key === "ArrowLeft") move(-1);
    else if (e.key === "g") { at = 0; show(); }
    else if (e.key === "G") { at = shown.length - 1; show(); }
    else if (e.key === "/") { e.preventDefault(); q.focus(); }
  });
  var hash = decodeURIComponent(location.hash.slice(1));
  if (hash.slice(0, 2) === "q=") q.value = hash.slice(2);
  show();
  document.body.dataset.ready = "1";
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _exact(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def _candidate_row(c: CandidateView) -> str:
    attributes = (f' data-index="{c.index}" data-weight="{_exact(c.weight)}" data-log-q="{_exact(c.log_q)}" data-log-p="{_exact(c.log_p)}"'
                  f' data-log-w="{_exact(c.log_w)}" data-n-tokens="{_exact(c.n_tokens)}" data-finish="{c.finish_reason or ""}"')
    cells = [("drawn" if c.drawn else ""), str(c.index), number(c.weight, 3), number(c.log_q), number(c.log_p), number(c.log_w),
             str(c.n_tokens) if c.n_tokens is not None else "-", c.finish_reason or "-"]
    row = "".join(f"<td>{escape(cell)}</td>" for cell in cells) + f'<td class="latent">{escape(shown_latent(c.latent))}</td>'
    return f'<tr class="cand{" drawn" if c.drawn else ""}"{attributes}>{row}</tr>'


def _chunk(doc: DocumentView, chunk: ChunkView) -> str:
    out = ['<div class="chunk">']
    if len(doc.chunks) > 1:
        out.append(f'<div class="chunk-head">{escape(chunk_title(chunk))}</div>')
    for kind, value in chunk.parts():
        out.append(f'<div class="{kind}">{escape(value)}</div>')
    if chunk.fixed and chunk.candidates:
        out.append(f'<div class="chunk-head">{escape(fixed_line(chunk))}</div>')
    if chunk.candidates:
        header = "".join(f"<th>{name}</th>" for name in ("", "#", "weight", "log q", "log p", "log w", "tokens", "end", "thought"))
        rows = "".join(_candidate_row(c) for c in chunk.candidates)
        out.append(f'<table class="cands"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>')
    out.append("</div>")
    return "".join(out)


def _document(doc: DocumentView) -> str:
    fields_before = "".join(f'<div class="field {escape(label)}"><b>{escape(label)}:</b> {escape(value)}</div>'
                            for label, value in doc.fields if label in ("problem", "prompt"))
    fields_after = "".join(f'<div class="field"><b>{escape(label)}:</b> {escape(value)}</div>'
                           for label, value in doc.fields if label not in ("problem", "prompt"))
    elbo = " ".join(f'data-elbo-{escape(n)}="{_exact(v)}"' for n, v in sorted(doc.elbo.items(), key=lambda kv: int(kv[0])))
    return (f'<section class="doc" id="d{doc.number}" data-id="{escape(doc.id)}" data-kind="{doc.kind}" data-ess="{_exact(doc.ess)}" '
            f'data-finish="{" ".join(sorted(doc.finish_reasons))}" {elbo}><h2>{escape(headline(doc))}</h2>{fields_before}'
            + "".join(_chunk(doc, chunk) for chunk in doc.chunks) + fields_after + "</section>")


def render_html(documents: Iterable[DocumentView], title: str, note: str = "") -> str:
    """The page (a string) for ``documents``."""
    from .. import __version__

    docs = list(documents)
    kinds: dict[str, int] = {}
    for doc in docs:
        kinds[doc.kind] = kinds.get(doc.kind, 0) + 1
    summary = f"{len(docs):,} documents (" + ", ".join(f"{n:,} {k}" for k, n in kinds.items()) + f") · lt {__version__}" + (f" · {note}" if note else "")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lt view: {escape(title)}</title><style>{STYLE}</style></head>\n"
        '<body class="one" data-ready="0"><header>'
        f"<h1>lt view · {escape(title)}</h1><div class=\"summary\">{escape(summary)}</div>"
        '<form id="filters"><input id="q" type="search" placeholder="regex on text or thought; id:GLOB ess&lt;X finish:stop|length text:RE thought:RE"> '
        '<button id="prev" title="previous (k, ←)">←</button> <span id="pos"></span> <button id="next" title="next (j, →)">→</button> '
        '<label><input id="all" type="checkbox"> all at once</label> <span class="hint">keys: j/k or arrows, / search, g/G first/last</span></form>'
        "</header>\n<main>\n" + "\n".join(_document(doc) for doc in docs) + "\n</main>\n"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
