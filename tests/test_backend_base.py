"""The token-level policy every backend shares (lt_cli/backends/base.py), on plain id lists."""

from __future__ import annotations

import pytest

from lt_cli.backends.base import (
    Usage,
    chat_messages,
    check_seed_shape,
    expand_seeds,
    fit_pair,
    fit_prompt,
    render_chat,
    resolve_max_model_len,
)
from lt_cli.errors import LtError
from lt_cli.seeding import derive_seed

BOS = 0


def test_fit_pair_leaves_fitting_pairs_alone():
    fitted = fit_pair([BOS, 1, 2], [3, 4], max_len=5, bos_id=BOS)  # exactly max_len
    assert (fitted.context, fitted.continuation, fitted.n_context_truncated, fitted.n_continuation_truncated) == ([BOS, 1, 2], [3, 4], 0, 0)
    assert not fitted.truncated


def test_fit_pair_cuts_the_front_of_the_context_after_bos():
    fitted = fit_pair([BOS, 1, 2, 3], [4, 5], max_len=5, bos_id=BOS)
    assert (fitted.context, fitted.continuation, fitted.n_context_truncated, fitted.n_continuation_truncated) == ([BOS, 2, 3], [4, 5], 1, 0)
    assert fitted.truncated


def test_fit_pair_keeps_one_context_token_then_cuts_the_continuation():
    with_bos = fit_pair([BOS, 1, 2], [3, 4, 5, 6, 7], max_len=4, bos_id=BOS)
    assert (with_bos.context, with_bos.continuation) == ([BOS], [3, 4, 5])
    assert (with_bos.n_context_truncated, with_bos.n_continuation_truncated) == (2, 2)
    no_bos = fit_pair([1, 2, 3], [4, 5, 6], max_len=3, bos_id=None)  # without BOS the last context token stays
    assert (no_bos.context, no_bos.continuation, no_bos.n_context_truncated, no_bos.n_continuation_truncated) == ([3], [4, 5], 2, 1)
    other_first = fit_pair([7, 1, 2], [3], max_len=2, bos_id=BOS)  # a first token that is not BOS is not kept
    assert (other_first.context, other_first.n_context_truncated) == ([2], 2)


def test_fit_pair_refuses_a_continuation_without_context():
    with pytest.raises(LtError, match="empty context and no BOS"):
        fit_pair([], [1], max_len=8, bos_id=None)
    assert fit_pair([], [], max_len=8, bos_id=None).context == []
    assert fit_pair([BOS], [], max_len=8, bos_id=BOS).continuation == []


def test_fit_prompt_room_and_bos():
    ids = [BOS] + list(range(1, 20))
    assert fit_prompt(ids, max_new_tokens=4, max_model_len=24, bos_id=BOS) == ids  # 20 + 4 fits
    cut = fit_prompt(ids, max_new_tokens=8, max_model_len=24, bos_id=BOS)  # room 6 (a quarter of 24)
    assert cut == [BOS] + list(range(3, 20)) and len(cut) == 24 - 6


def test_expand_seeds_defaults_masks_and_shapes():
    assert expand_seeds(2, 3, None, namespace="hf-default-sample") == [[derive_seed("hf-default-sample", i, j) for j in range(3)] for i in range(2)]
    assert expand_seeds(1, 2, [[-1, 5]], namespace="x", bits=63) == [[(1 << 63) - 1, 5]]
    assert expand_seeds(1, 1, [[(1 << 64) + 7]], namespace="x") == [[7]]
    with pytest.raises(LtError, match=r"seeds must be 2 lists of n=1 seeds each: got 1 seed lists for 2 prompts"):
        expand_seeds(2, 1, [[1]], namespace="x")
    with pytest.raises(LtError, match=r"prompt 1 needs 2 seeds, got 1"):
        check_seed_shape(2, 2, [[1, 2], [3]])
    check_seed_shape(3, 4, None)


def test_chat_messages_and_template():
    assert chat_messages([{"role": "user", "content": 4, "name": "x"}]) == [{"role": "user", "content": "4"}]
    for bad in ([{"content": "no role"}], ["just text"], [{"role": "user"}]):
        with pytest.raises(LtError, match="'role' and 'content'"):
            chat_messages(bad)

    class Tokenizer:
        def apply_chat_template(self, messages, *, chat_template, tokenize, add_generation_prompt):
            return chat_template + "|" + ";".join(f"{m['role']}={m['content']}" for m in messages) + ("|gen" if add_generation_prompt else "")

    assert render_chat(Tokenizer(), [{"role": "user", "content": "hi"}], chat_template="T", model_id="m") == "T|user=hi|gen"
    with pytest.raises(LtError, match="model m has no chat template"):
        render_chat(Tokenizer(), [{"role": "user", "content": "hi"}], chat_template=None, model_id="m")


def test_resolve_max_model_len(capsys):
    assert resolve_max_model_len(2048, None) == 2048
    assert resolve_max_model_len(None, None) == 2048
    assert resolve_max_model_len(2048, 64) == 64
    assert resolve_max_model_len(512, 4096) == 512
    assert "exceeds the model's 512 positions" in capsys.readouterr().err
    with pytest.raises(LtError, match="at least 2"):
        resolve_max_model_len(2048, 1)


def test_usage_sums():
    usage = Usage()
    usage.add(10, 3)
    usage.add(None, None)
    usage.add(5, 0)
    assert usage == Usage(requests=3, prompt_tokens=15, completion_tokens=3, requests_without_usage=1)
    assert usage.total_tokens == 18
