"""Digests of the reference's sentence units, for tests/test_chunking.py (no text is stored).

Runs the reference's own splitter (``get_text_splitter("sentence")`` in ``apps/main/gen_utils/
chunk_gen.py`` of a ``ryoungj/BoLT`` checkout; this script loads that file, it does not copy it) over
a JSONL corpus and writes, per document id, the number of units and a digest of their lengths:

    {"reference": "ryoungj/BoLT@024315f", "nltk": "3.9.1", "documents": {"id": [n_units, "sha256:..."]}}

Run it under the reference's pinned nltk, in a throwaway environment outside the repo:

    python -m venv /tmp/nltk391 && /tmp/nltk391/bin/pip install nltk==3.9.1 numpy
    /tmp/nltk391/bin/python scripts/reference_units.py BOLT_CHECKOUT \\
        ../shared/data/corpus/openstax_algebra.jsonl tests/fixtures/openstax_reference_units.json

The reference's module imports a logger helper and lingua's special tokens, which the splitter does
not use; both are replaced by stand-ins so nothing else of the reference's environment is needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import types
from pathlib import Path


def unit_digest(units: list[str]) -> str:
    """What the test compares: the units' lengths in characters (their text is the document's)."""
    return "sha256:" + hashlib.sha256(json.dumps([len(u) for u in units]).encode()).hexdigest()[:16]


def load_reference_splitter(checkout: Path):
    helpers = types.ModuleType("apps.main.gen_utils.misc_utils")
    helpers.get_logger = logging.getLogger
    tokenizer = types.ModuleType("lingua.tokenizer")
    tokenizer.SpecialTokens = None
    sys.modules.setdefault("apps.main.gen_utils.misc_utils", helpers)
    sys.modules.setdefault("lingua.tokenizer", tokenizer)
    spec = importlib.util.spec_from_file_location("reference_chunk_gen", checkout / "apps" / "main" / "gen_utils" / "chunk_gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_text_splitter("sentence")


def main(checkout: str, corpus: str, output: str) -> None:
    import nltk

    split = load_reference_splitter(Path(checkout))
    documents = {}
    with open(corpus, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            units = split(record["text"])
            documents[str(record["id"])] = [len(units), unit_digest(units)]
    try:
        commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    result = {"reference": f"ryoungj/BoLT@{commit}", "nltk": nltk.__version__, "corpus": Path(corpus).name, "documents": documents}
    header = json.dumps({k: v for k, v in result.items() if k != "documents"})[:-1]
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(documents.items()))
    Path(output).write_text(f'{header}, "documents": {{\n{rows}\n}}}}\n', encoding="utf-8")
    print(f"{len(documents)} documents, {sum(n for n, _ in documents.values())} units, nltk {nltk.__version__}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: reference_units.py BOLT_CHECKOUT CORPUS.jsonl OUTPUT.json")
    main(*sys.argv[1:])
