"""What the report shows of the thoughts themselves: the same few documents' thoughts in every EM
iteration (so a reader sees them change), and an HTML view (``lt view --html``) of each
iteration's augmented data, written into the run folder next to it.

Both are read from the files the stages wrote (``ARM/iterT/augmented.jsonl``, and the candidates
the iteration sampled), which a resumed run has in the same bytes, so its report shows the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: documents whose thoughts the report follows over the iterations
N_EXAMPLES = 3
#: characters of a thought shown in the report (the HTML view has them whole)
THOUGHT_CHARS = 240
#: documents in each iteration's HTML view (the first ones of the augmented file)
VIEW_DOCUMENTS = 200
#: records scanned for a teacher thought of the example documents
TEACHER_SCAN = 100_000


def _folder(run_dir: Path, arm: str, t: int) -> Path:
    return run_dir / arm / f"iter{t}"


def _thoughts(record: dict) -> list[str]:
    from ..records import is_latent_fixed

    return [str(c.get("latent") or "") for c in record.get("chunks") or [] if not is_latent_fixed(c) and c.get("latent") is not None]


def _short(text: str) -> str:
    return text if len(text) <= THOUGHT_CHARS else text[: THOUGHT_CHARS - 1] + "…"


def _find(path: Path, ids: list[str], scan: int | None = None) -> dict[str, dict]:
    """The records of ``path`` with these ids (reading stops once all are found)."""
    from ..io import read_records
    from ..records import document_id

    found: dict[str, dict] = {}
    if not path.exists():
        return found
    for n, record in enumerate(read_records(str(path))):
        if scan is not None and n >= scan:
            break
        key = document_id(record)
        if key in ids:
            found[key] = record
            if len(found) == len(ids):
                break
    return found


def example_thoughts(config, run_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"id", "text", "teacher", "thoughts": [{"arm", "iter", "thought"}]}]``: the first
    documents of the first finished iteration that have a thought to infer, followed through every
    arm and iteration (and their teacher thought when the run has one)."""
    from ..io import read_records
    from ..records import document_id, document_text

    done = [(row["arm"], row["iter"]) for row in rows if row.get("iter", 0) >= 1 and row.get("view")]
    if not done:
        return []
    first = _folder(run_dir, *done[0]) / "augmented.jsonl"
    if not first.exists():
        return []
    chosen: list[dict] = []
    for record in read_records(str(first)):
        if any(_thoughts(record)):
            chosen.append(record)
            if len(chosen) == N_EXAMPLES:
                break
    ids = [document_id(r) for r in chosen]
    teacher_path = run_dir / "data" / "teacher.jsonl" if config.demo else (Path(config.teacher_data) if config.teacher_data else None)
    teacher = _find(teacher_path, ids, TEACHER_SCAN) if teacher_path is not None else {}
    by_iteration = {(arm, t): _find(_folder(run_dir, arm, t) / "augmented.jsonl", ids) for arm, t in done}
    examples = []
    for record, key in zip(chosen, ids):
        thoughts = [{"arm": arm, "iter": t, "thought": _short(" | ".join(_thoughts(by_iteration[(arm, t)][key])))}
                    for arm, t in done if key in by_iteration[(arm, t)]]
        teacher_thought = " | ".join(_thoughts(teacher[key])) if key in teacher else None
        examples.append({"id": key, "text": _short(document_text(record)), "teacher": _short(teacher_thought) if teacher_thought is not None else None,
                         "thoughts": thoughts})
    return examples


def write_views(report: dict[str, Any], run_dir: Path) -> None:
    """``ARM/iterT/view.html`` for every finished iteration: its first documents with the thoughts
    lt select drew and, when the iteration sampled its own candidates, every candidate and weight."""
    from ..view import read_views, write_html

    for row in report.get("iterations", []):
        if not row.get("view"):
            continue
        folder = _folder(run_dir, row["arm"], row["iter"])
        augmented, candidates = folder / "augmented.jsonl", folder / "candidates.jsonl"
        if not augmented.exists():
            continue
        if candidates.exists():
            docs = read_views(str(candidates), selected=str(augmented), limit=VIEW_DOCUMENTS)
        else:  # a sweep's first iteration selects from shared samples: its thoughts only
            docs = read_views(str(augmented), limit=VIEW_DOCUMENTS)
        title = f"{report.get('name', '')} {row['arm']} iteration {row['iter']}"
        write_html(docs, str(run_dir / row["view"]), title, note=f"the first {VIEW_DOCUMENTS} documents of {augmented.name}")


def example_lines(report: dict[str, Any]) -> list[str]:
    """The examples as report.md lines (and, without the heading, the stderr summary's)."""
    def md(text: str) -> str:
        return text.replace("\n", " ").replace("`", "'")

    lines: list[str] = []
    for example in report.get("examples") or []:
        lines += [f"### {example['id']}", "", f"> {md(example['text'])}", ""]
        if example.get("teacher") is not None:
            lines.append(f"- teacher: `{md(example['teacher'])}`")
        for item in example["thoughts"]:
            lines.append(f"- {item['arm']} iteration {item['iter']}: " + (f"`{md(item['thought'])}`" if item["thought"] else "(empty)"))
        lines.append("")
    return lines
