"""Scoring for the transformers backend (hf.py): log p(continuation | context), contexts shared.

Pairs are grouped by context: a context's KV cache is computed once and expanded to its
continuations; pairs are bucketed by length so padding stays small; logits are materialised only at
continuation positions, a chunk at a time (a full [tokens x vocab] tensor is a memory trap).
Truncation follows :func:`lt_cli.backends.base.fit_pair` and is reported in each ``Score``.

:class:`HFScoring` is a mixin: it uses the model calls and tokens of :class:`~lt_cli.backends.hf.HFBackend`.
"""

from __future__ import annotations

from typing import Sequence

from .base import Score, fit_pair, warn_truncated_pairs

#: rows of [positions x vocab] logits materialised at once when scoring
SCORE_LOGIT_CHUNK = 512
#: padded tokens (context + continuation) per scoring forward pass, unless options override it
DEFAULT_SCORE_BATCH_TOKENS = 16384
#: a scoring batch closes when padded positions would exceed this multiple of the real tokens
MAX_PADDING_FACTOR = 1.2
#: ... unless the batch computes fewer positions than this (small passes are weight-read-bound)
MIN_SCORE_BATCH_POSITIONS = 1024


class HFScoring:
    """``score`` of the transformers backend (mixed into HFBackend)."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """log p(continuation | context) per pair, contexts shared between pairs computed once."""
        encoded = [
            fit_pair(self.encode(c), self.encode(x, add_bos=False), max_len=self.max_model_len, bos_id=self.bos_id, empty_context_id=self.empty_context_id)
            for c, x in pairs
        ]
        self.n_truncated_pairs += warn_truncated_pairs(encoded, self.max_model_len)
        results: list[Score | None] = [None] * len(encoded)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, e in enumerate(encoded):
            if not e.continuation:
                results[index] = Score(0.0, [], e.n_context_truncated, e.n_continuation_truncated, len(e.context))
                continue
            groups.setdefault(tuple(e.context), []).append(index)
        # work units: (context, member indices); a group bigger than a batch is split
        rows_per_batch = max(1, self.config.batch_size)
        units: list[tuple[list[int], list[int]]] = []
        for context, members in groups.items():
            members.sort(key=lambda k: len(encoded[k].continuation))
            for start in range(0, len(members), rows_per_batch):
                units.append((list(context), members[start : start + rows_per_batch]))
        units.sort(key=lambda u: (len(u[0]), max(len(encoded[k].continuation) for k in u[1])))
        batch: list[tuple[list[int], list[int]]] = []
        for unit in units:
            candidate = batch + [unit]
            if batch and not self._fits(candidate, encoded, rows_per_batch):
                self._run_score_batch(batch, encoded, results)
                candidate = [unit]
            batch = candidate
        if batch:
            self._run_score_batch(batch, encoded, results)
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"internal error: {missing} pairs were not scored")
        return results  # type: ignore[return-value]

    def _fits(self, units, encoded, rows_per_batch: int) -> bool:
        """Row and memory limits; padding above ~20% of the computed positions only in small batches.

        Small batches are worth some padding: every forward pass streams all weights from memory, so
        a pass over a few dozen positions is memory-bound and costs nearly as much as a bigger one.
        """
        rows = sum(len(m) for _, m in units)
        ctx_width = max(len(c) for c, _ in units)
        cont_width = max(len(encoded[k].continuation) for _, m in units for k in m)
        memory_tokens = len(units) * ctx_width + rows * (ctx_width + cont_width)
        computed = len(units) * ctx_width + rows * cont_width
        real = sum(len(c) for c, _ in units) + sum(len(encoded[k].continuation) for _, m in units for k in m)
        wasteful = computed > MAX_PADDING_FACTOR * real and computed > MIN_SCORE_BATCH_POSITIONS
        return rows <= rows_per_batch and memory_tokens <= self.score_batch_tokens and not wasteful

    def _run_score_batch(self, units, encoded, results) -> None:
        torch = self._torch
        with torch.inference_mode():
            ids, ctx_mask, positions = self._left_pad([c for c, _ in units])
            cache = self._new_cache()
            first_logits = self._call_model(ids, ctx_mask, positions, cache)[:, -1].float()
            first_lp = torch.log_softmax(first_logits, dim=-1)
            counts = torch.tensor([len(m) for _, m in units], device=self.device)
            expand = torch.repeat_interleave(torch.arange(len(units), device=self.device), counts)
            members = [k for _, m in units for k in m]
            conts = [encoded[k].continuation for k in members]
            first_targets = torch.tensor([c[0] for c in conts], device=self.device)
            first = first_lp[expand].gather(-1, first_targets.unsqueeze(-1)).squeeze(-1).tolist()
            per_token: list[list[float]] = [[first[r]] for r in range(len(members))]
            width = max(len(c) for c in conts) - 1  # inputs: every continuation token but the last
            if width > 0:
                if len(expand) != len(units) or bool((counts != 1).any()):
                    cache.batch_select_indices(expand)
                inputs = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
                cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
                for r, c in enumerate(conts):
                    inputs[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                    cont_mask[r, : len(c) - 1] = 1
                inputs, cont_mask = inputs.to(self.device), cont_mask.to(self.device)
                ctx_lens = ctx_mask.sum(-1)[expand]
                cont_positions = ctx_lens.unsqueeze(-1) + torch.arange(width, device=self.device).unsqueeze(0)
                mask = torch.cat([ctx_mask[expand], cont_mask], dim=-1)
                hidden = self._hidden_states(inputs, mask, cont_positions, cache)
                targets = torch.full((len(conts), width), 0, dtype=torch.long)
                for r, c in enumerate(conts):
                    targets[r, : len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
                targets = targets.to(self.device)
                valid = cont_mask.bool()
                if hidden is None:  # no separate decoder: full forward (logits for every position)
                    logits = self._call_model(inputs, mask, cont_positions, cache, logits_to_keep=0).float()
                    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)[valid]
                else:
                    selected = hidden[valid]
                    flat_targets = targets[valid]
                    parts = []
                    for start in range(0, selected.shape[0], SCORE_LOGIT_CHUNK):
                        logits = self._logits_from_hidden(selected[start : start + SCORE_LOGIT_CHUNK])
                        lp = torch.log_softmax(logits, dim=-1)
                        parts.append(lp.gather(-1, flat_targets[start : start + SCORE_LOGIT_CHUNK].unsqueeze(-1)).squeeze(-1))
                    token_lp = torch.cat(parts)
                values = token_lp.tolist()
                offset = 0
                for r, c in enumerate(conts):
                    n = len(c) - 1
                    per_token[r].extend(values[offset : offset + n])
                    offset += n
        for r, k in enumerate(members):
            e = encoded[k]
            results[k] = Score(float(sum(per_token[r])), per_token[r], e.n_context_truncated, e.n_continuation_truncated, len(e.context))
