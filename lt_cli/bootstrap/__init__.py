"""`lt bootstrap`: the BoLT EM loop as a resumable pipeline of stages in one run folder.

* :mod:`.config`: :class:`BootstrapConfig` (the stage configs nested) and :func:`resolve_config`;
* :mod:`.plan`: the stages in order (docs/bootstrap.md has the folder layout);
* :mod:`.stages`: each stage as an ``lt`` command and its config, and its result;
* :mod:`.runner`: checks, then runs every stage here or through a launcher;
* :mod:`.manifest`: stage status and results in ``manifest.json``;
* :mod:`.report`: ``report.json``, ``report.md``, ``report.png`` and the claims.

Every stage's status and result live in ``manifest.json``; rerunning the same command skips the
finished stages and redoes the first unfinished one, so an interrupted run (even ``kill -9``) ends
with the same report as an uninterrupted one.
"""

from __future__ import annotations

from .config import BootstrapConfig, resolve_config
from .plan import build_plan
from .runner import check_config, dry_run, run_bootstrap

__all__ = ["BootstrapConfig", "build_plan", "check_config", "dry_run", "resolve_config", "run_bootstrap"]
