"""The E-step: what ``lt sample-thoughts`` and ``lt select`` do, as a library.

``from lt_cli.estep import SampleConfig, sample_candidates, select_document`` is to the E-step what
``from lt_cli.training import train`` is to the M-step:

* :mod:`.config`: :class:`SampleConfig`, :class:`SelectConfig` and the two command configs;
* :mod:`.propose`: prompts, posterior samples (log q) and joint scores (log p, log w);
* :mod:`.select`: importance weights, ELBO_n, ESS and the one draw per chunk;
* :mod:`.adaptive`: sampling in rounds until a stopping rule holds (``--k-max``);
* :mod:`.stats`: the statistics every table, sidecar and report reads;
* :mod:`.runs`: ``run_sample_thoughts`` and ``run_select``, the commands' runners.

Importing this package is cheap (no torch).
"""

from __future__ import annotations

from .adaptive import round_sizes, should_stop
from .config import SELECT_METHODS, STOP_RULES, SampleConfig, SampleThoughtsRun, SelectConfig, SelectRun
from .propose import candidate_from_sample, chunk_log_p, chunk_prompt, chunk_scoring_pair, fixed_candidate, sample_candidates, score_candidates
from .runs import read_stats, run_sample_thoughts, run_select
from .select import (
    choose_index,
    chunk_log_w,
    elbo_sample_counts,
    first_candidates,
    is_adaptive,
    select_document,
    validate_candidates_document,
)
from .stats import ComputeStats, SampleStats, SelectionStats
from .weights import effective_sample_size, elbo_n, logsumexp, softmax

__all__ = [
    "SELECT_METHODS",
    "STOP_RULES",
    "ComputeStats",
    "SampleConfig",
    "SampleStats",
    "SampleThoughtsRun",
    "SelectConfig",
    "SelectRun",
    "SelectionStats",
    "candidate_from_sample",
    "choose_index",
    "chunk_log_p",
    "chunk_log_w",
    "chunk_prompt",
    "chunk_scoring_pair",
    "effective_sample_size",
    "elbo_n",
    "elbo_sample_counts",
    "first_candidates",
    "fixed_candidate",
    "is_adaptive",
    "logsumexp",
    "read_stats",
    "round_sizes",
    "run_sample_thoughts",
    "run_select",
    "sample_candidates",
    "score_candidates",
    "select_document",
    "should_stop",
    "softmax",
    "validate_candidates_document",
]
