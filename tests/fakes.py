"""Shared test fakes: deterministic stand-ins for backends, fast enough for unit tests.

Real backends are tested against real models and the loopback server; these fakes are for the
logic around them (E-step rounds, statistics, accounting), where a distribution with known
log-probabilities makes exact assertions possible.
"""

from __future__ import annotations

import math
import random

from lt_cli import formats
import hashlib

from lt_cli.backends.base import FINISH_LENGTH, FINISH_STOP, Sample, SamplingParams, Score

EOL = formats.END_OF_LATENT


class CharBackend:
    """A deterministic stand-in with a real distribution over characters, for fast unit tests.

    Each generated token is one of "ab " or the stop string, with fixed probabilities, drawn from
    ``random.Random(seed)``; scoring gives every continuation character log(1/4) and applies the
    base.py truncation policy with a character budget ``max_len``. It records its calls. Token
    counts are characters: a prompt costs ``len(prompt)``, a scored pair its kept characters.
    """

    name = "char"
    model_id = "char-model"
    alphabet = ["a", "b", " ", EOL]
    probs = [0.4, 0.3, 0.2, 0.1]

    def __init__(self, max_len: int = 10_000):
        self.max_len = max_len
        self.sample_calls: list[int] = []
        self.score_calls: list[int] = []

    def sample(self, prompts, params: SamplingParams, seeds=None):
        self.sample_calls.append(len(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            row = []
            for j in range(params.n):
                rng = random.Random(seeds[i][j])
                text, lps, ids = "", [], []
                reason = FINISH_LENGTH
                for _ in range(params.max_new_tokens):
                    k = rng.choices(range(4), weights=self.probs)[0]
                    lps.append(math.log(self.probs[k]))
                    ids.append(k)
                    if self.alphabet[k] == EOL:
                        reason = FINISH_STOP
                        break
                    text += self.alphabet[k]
                row.append(Sample(text=text, token_ids=ids, token_logprobs=lps, finish_reason=reason, prompt_tokens=len(prompt), completion_tokens=len(ids)))
            out.append(row)
        return out

    def score(self, pairs):
        self.score_calls.append(len(pairs))
        scores = []
        for context, continuation in pairs:
            overflow = max(0, len(context) + len(continuation) - self.max_len)
            cut_context = min(overflow, len(context))
            cut_cont = overflow - cut_context
            kept = len(continuation) - cut_cont
            lps = [math.log(0.25)] * kept
            scores.append(Score(
                logprob=math.fsum(lps), token_logprobs=lps, n_context_truncated=cut_context, n_continuation_truncated=cut_cont,
                n_context_tokens=len(context) - cut_context,
            ))
        return scores

    def chat(self, conversations, params, seeds=None):
        raise NotImplementedError

    def close(self):
        pass


class ChoiceBackend:
    """Latents drawn from a small menu with known probabilities, scored from a table.

    Sample j of a prompt picks ``menu`` item by ``random.Random(seed)``: its text is the latent and
    log q its menu probability (one "token" per character, plus the stop token carrying all of
    log q). Scoring reads the latent back out of the joint string and gives it ``joint[latent]``
    (default ``missing``) as log p, all on the first continuation token. Token counts are
    characters. It records the number of prompts and pairs of every call.
    """

    name = "choice"
    model_id = "choice-model"
    n_parameters = 1000

    def __init__(self, menu: dict[str, float] | None = None, joint: dict[str, float] | None = None, missing: float = -20.0):
        self.menu = menu or {"right": 0.3, "wrong-a": 0.5, "wrong-b": 0.2}
        self.joint = joint if joint is not None else {"right": math.log(0.4)}
        self.missing = missing
        self.sample_calls: list[int] = []
        self.score_calls: list[int] = []

    def draw(self, seed: int) -> str:
        """The latent sample ``seed`` gives (what ``sample`` returns for it)."""
        return random.Random(seed).choices(list(self.menu), weights=list(self.menu.values()))[0]

    def sample(self, prompts, params: SamplingParams, seeds=None):
        self.sample_calls.append(len(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            row = []
            for j in range(params.n):
                latent = self.draw(seeds[i][j])
                lps = [0.0] * len(latent) + [math.log(self.menu[latent])]
                row.append(Sample(
                    text=latent, token_ids=list(range(len(lps))), token_logprobs=lps, finish_reason=FINISH_STOP,
                    prompt_tokens=len(prompt), completion_tokens=len(lps),
                ))
            out.append(row)
        return out

    def score(self, pairs):
        from lt_cli import formats

        self.score_calls.append(len(pairs))
        scores = []
        for context, continuation in pairs:
            latent = continuation.split(formats.PRIOR_PREFIX, 1)[1].split(EOL, 1)[0]
            log_p = self.joint.get(latent, self.missing)
            lps = [log_p] + [0.0] * (len(continuation) - 1)
            scores.append(Score(logprob=log_p, token_logprobs=lps, n_context_tokens=len(context)))
        return scores

    def chat(self, conversations, params, seeds=None):
        raise NotImplementedError

    def close(self):
        pass


class ScriptedBackend:
    """A Backend that answers ``reply(prompt, sample_index)``; counts tokens as UTF-8 bytes + BOS.

    ``calls`` records (prompts, params, seeds) of every ``sample`` call."""

    name = "scripted"
    model_id = "scripted-model"

    def __init__(self, reply, max_model_len: int = 100_000):
        self.reply = reply
        self.max_model_len = max_model_len
        self.calls: list[tuple[list[str], SamplingParams, list[list[int]]]] = []
        self.closed = False

    def encode(self, text: str, *, bos: bool) -> list[int]:
        return [0] * (len(text.encode("utf-8")) + (1 if bos else 0))

    def sample(self, prompts, params, seeds=None):
        self.calls.append((list(prompts), params, [list(s) for s in seeds] if seeds is not None else None))
        return [
            [Sample(self.reply(prompt, j), [7] * 3, [-0.5] * 3, "stop") for j in range(params.n)]
            for prompt in prompts
        ]

    def score(self, pairs):  # pragma: no cover - generation tasks never score
        raise AssertionError("score() is not used by generation tasks")

    def chat(self, conversations, params, seeds=None):  # pragma: no cover
        raise AssertionError("chat() is not used by eval")

    def close(self) -> None:
        self.closed = True


class FakeTeacher:
    """Replies ``"<seed>:<md5 of the last message>"`` so tests can check what was asked, and how."""

    name = "fake"
    model_id = "fake-teacher"

    def __init__(self, truncate_every: int = 0):
        self.calls: list[list] = []
        self.truncate_every = truncate_every
        self.n = 0

    def chat(self, conversations, params, seeds=None):
        self.calls.append([list(c) for c in conversations])
        out = []
        for conv, seed_row in zip(conversations, seeds):
            self.n += 1
            digest = hashlib.md5(conv[-1]["content"].encode()).hexdigest()[:8]
            reason = FINISH_LENGTH if self.truncate_every and self.n % self.truncate_every == 0 else FINISH_STOP
            text = f"{seed_row[0]}:{digest} T={params.temperature} max={params.max_new_tokens}"
            out.append([Sample(text=text, token_ids=[], token_logprobs=[], finish_reason=reason)])
        return out

    def close(self):
        pass


class FakeWandB:
    """Stands in for the ``wandb`` module in ``sys.modules`` (lt_cli.tracking's W&B sink): records
    each ``init``, hands out run ids (the id asked for, else ``run-N``) and calls ``during_init``
    inside ``init``, to change the folder while W&B starts (a link planted meanwhile)."""

    def __init__(self, during_init=None):
        import importlib.machinery

        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # importlib.util.find_spec reads it
        self.inits: list[dict] = []
        self.during_init = during_init

    @staticmethod
    def Settings(**kwargs):
        return kwargs

    def init(self, **kwargs):
        self.inits.append(kwargs)
        if self.during_init is not None:
            self.during_init()
        return _FakeWandBRun(kwargs.get("id") or f"run-{len(self.inits)}")


class _FakeWandBRun:
    def __init__(self, run_id: str):
        self.id = run_id
        self.logged: list[dict] = []

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, row: dict) -> None:
        self.logged.append(row)

    def finish(self) -> None:
        pass
