"""Teacher synthesis (``lt synthesize``): latent thoughts per chunk, and the WRAP rephrasing baselines.

* :mod:`.prompts`: the teacher's prompts (lt's own, written to the paper's brief);
* :mod:`.config`: :class:`SynthesizeConfig` and the command config :class:`SynthesizeRun`;
* :mod:`.synthesize`: requests per document, cached teacher calls, output records;
* :mod:`.runs`: ``run_synthesize``, the command's runner.
"""

from __future__ import annotations

from .config import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEACHER, METHODS, ApiArgs, SynthesizeConfig, SynthesizeRun
from .prompts import LATENT_SYSTEM, LATENT_USER, NO_PREFIX, WRAP_STYLES, latent_messages, wrap_cot_messages, wrap_messages, wrap_style
from .runs import run_synthesize
from .requests import TeacherRequest, requests_for
from .synthesize import SynthesisStats, synthesize

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_TEACHER",
    "LATENT_SYSTEM",
    "LATENT_USER",
    "METHODS",
    "NO_PREFIX",
    "WRAP_STYLES",
    "ApiArgs",
    "SynthesisStats",
    "SynthesizeConfig",
    "SynthesizeRun",
    "TeacherRequest",
    "latent_messages",
    "requests_for",
    "run_synthesize",
    "synthesize",
    "wrap_cot_messages",
    "wrap_messages",
    "wrap_style",
]
