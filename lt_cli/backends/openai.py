"""OpenAI-compatible HTTP backend (extra ``api``): hosted APIs, a remote ``vllm serve``, a local server.

Why a separate backend: the teacher in the paper (gpt-4o-mini) is only reachable over HTTP, and a
big student served elsewhere (``vllm serve``) is most easily used the same way. This module turns
the Backend interface into request bodies; the HTTP client it is built on (credentials, retries,
usage totals) is :class:`~lt_cli.backends.openai_client.APIClient`, and replies are read into
samples and scores by openai_parse.py.

Endpoints: :meth:`sample` uses ``/completions``, :meth:`chat` uses ``/chat/completions``,
:meth:`score` uses ``/completions`` with ``echo`` + ``logprobs`` (supported by vLLM's server and
older OpenAI models; a server that refuses it gets a clear :class:`LtError`). With
``options["batch"]`` the same request bodies go through the Batch API instead
(:class:`~lt_cli.backends.openai_batch.BatchRunner`), which is how the reference ran its teacher.
Each generation reply's billed tokens go into that reply's ``Sample`` and into the client's totals.

Differences from the local backends, documented in docs/backends.md: ``Sample.token_ids`` is empty
unless the server returns ids (vLLM's ``return_tokens_as_token_ids``); ``Sample.token_logprobs`` is
filled only when ``options["logprobs"]`` is true, and is whatever the server reports (vLLM reports
the raw model's log-probs unless it runs with ``--logprobs-mode processed_logprobs``); ``seed`` is
forwarded but hosted APIs treat it as best effort.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Sequence

from ..errors import LtError
from .base import Sample, SamplingParams, Score, chat_messages, check_sampling_params, check_seed_shape
from .openai_batch import BatchRunner
from .openai_client import APIClient, APIRequestError
from .openai_parse import chat_sample, completion_sample, score_from_echo


class OpenAIBackend(APIClient):
    """The Backend interface over HTTP: one request per (prompt, sample), sent by the client it extends."""

    name = "api"
    #: a hosted model's size is unknown: compute estimates in FLOPs are null for it
    n_parameters = None

    def _run_all(self, endpoint: str, bodies: list[dict]) -> list[dict]:
        """Send every body to ``endpoint`` (bounded concurrency or the Batch API); replies in order."""
        if not bodies:
            return []
        if self.options.batch:
            return BatchRunner(self, endpoint, sleep=self._sleep).run(bodies)
        if self.options.max_concurrency == 1 or len(bodies) == 1:
            return [self.generate(endpoint, body) for body in bodies]
        pool = ThreadPoolExecutor(max_workers=min(self.options.max_concurrency, len(bodies)))
        futures = [pool.submit(self.generate, endpoint, body) for body in bodies]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # one request failed for good: do not start (and retry) the queued rest
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

    # ------------------------------------------------------------------ request bodies
    def _sampling_fields(self, params: SamplingParams) -> dict:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": params.max_new_tokens,
            "temperature": float(params.temperature),
            "top_p": float(params.top_p),
        }
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _expand(self, n_prompts: int, params: SamplingParams, seeds) -> list[tuple[int, int | None]]:
        """(prompt index, seed) per request: one request per (prompt, sample), n=1, own seed."""
        check_sampling_params(params)
        check_seed_shape(n_prompts, params.n, seeds)
        return [(i, None if seeds is None else int(seeds[i][j])) for i in range(n_prompts) for j in range(params.n)]

    def _group(self, n_prompts: int, params: SamplingParams, samples: list[Sample]) -> list[list[Sample]]:
        return [samples[i * params.n : (i + 1) * params.n] for i in range(n_prompts)]

    # ------------------------------------------------------------------ Backend interface
    def sample(self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        plan = self._expand(len(prompts), params, seeds)
        bodies = []
        for i, seed in plan:
            body = {**self._sampling_fields(params), "prompt": prompts[i], "n": 1}
            if seed is not None and self.options.send_seed:
                body["seed"] = seed
            if self.options.logprobs:
                body["logprobs"] = 0
            bodies.append(body)
        replies = self._run_all("/completions", bodies)
        return self._group(len(prompts), params, [self._scrubbed(completion_sample(r, params, want_logprobs=self.options.logprobs)) for r in replies])

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        plan = self._expand(len(conversations), params, seeds)
        messages = [chat_messages(c) for c in conversations]
        bodies = []
        for i, seed in plan:
            body = {**self._sampling_fields(params), "messages": messages[i], "n": 1}
            if seed is not None and self.options.send_seed:
                body["seed"] = seed
            if self.options.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = 0
            bodies.append(body)
        replies = self._run_all("/chat/completions", bodies)
        return self._group(len(conversations), params, [self._scrubbed(chat_sample(r, params, want_logprobs=self.options.logprobs)) for r in replies])

    def _scrubbed(self, sample: Sample) -> Sample:
        """A reply that echoes the key (or the base URL's credentials) must not reach an output
        file or the cache: the text is redacted like every message."""
        text = self.redact(sample.text)
        return sample if text == sample.text else replace(sample, text=text)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """log p(continuation | context) from echoed prompt log-probs (``/completions``, echo=true).

        See :func:`lt_cli.backends.openai_parse.score_from_echo` for how the continuation's tokens
        are found in the echo.
        """
        bodies = []
        for context, continuation in pairs:
            if not continuation:
                raise LtError("score() needs a non-empty continuation")
            bodies.append({"model": self.model_id, "prompt": context + continuation, "echo": True, "logprobs": 0, "max_tokens": 1, "temperature": 1.0})
        try:
            replies = self._run_all("/completions", bodies)
        except APIRequestError as exc:
            raise LtError(f"scoring needs a server that supports echo+logprobs on /completions (vLLM does; most hosted chat models do not): {exc}") from None
        return [score_from_echo(context, continuation, r) for (context, continuation), r in zip(pairs, replies)]
