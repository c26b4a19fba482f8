"""The thought format, byte for byte (the reference's strings, lingua/data.py and lingua/tokenizer.py)."""

import pytest

from lt_cli import formats as f


def test_special_token_strings_are_the_reference_ones():
    assert f.SPECIAL_TOKENS == (
        "<|START_OF_LATENT|>",
        "<|END_OF_LATENT|>",
        "<|PRIOR_PREFIX|>",
        "<|POSTERIOR_PREFIX|>",
    )


def test_layouts():
    assert f.prior_chunk("Z", "X") == "<|START_OF_LATENT|><|PRIOR_PREFIX|>Z<|END_OF_LATENT|>X"
    assert f.posterior_chunk("Z", "X") == "<|START_OF_LATENT|><|END_OF_LATENT|>X<|START_OF_LATENT|><|POSTERIOR_PREFIX|>Z<|END_OF_LATENT|>"
    chunks = [{"text": "A.", "latent": "a"}, {"text": " B."}]
    assert f.render_chunks(chunks, ["prior", "posterior"]) == (
        "<|START_OF_LATENT|><|PRIOR_PREFIX|>a<|END_OF_LATENT|>A."
        "<|START_OF_LATENT|><|END_OF_LATENT|> B.<|START_OF_LATENT|><|POSTERIOR_PREFIX|><|END_OF_LATENT|>"
    )


def test_ablation_layouts_are_the_reference_untagged_strings():
    """The reference's prior_only is <SoL>z<EoL>x and posterior_only x<SoL>z<EoL>: no tag, no boundary pair."""
    assert f.prior_only_chunk("Z", "X") == "<|START_OF_LATENT|>Z<|END_OF_LATENT|>X"
    assert f.posterior_only_chunk("Z", "X") == "X<|START_OF_LATENT|>Z<|END_OF_LATENT|>"
    chunks = [{"text": "A.", "latent": "a"}, {"text": " B.", "latent": "b"}]
    assert f.render_chunks(chunks, ["prior-only"] * 2) == "<|START_OF_LATENT|>a<|END_OF_LATENT|>A.<|START_OF_LATENT|>b<|END_OF_LATENT|> B."
    assert f.render_chunks(chunks, ["posterior-only"] * 2) == "A.<|START_OF_LATENT|>a<|END_OF_LATENT|> B.<|START_OF_LATENT|>b<|END_OF_LATENT|>"
    assert set(f.LAYOUTS) == {"random", "prior", "posterior", "prior-tagged", "posterior-tagged", "pure", "raw", "completion"}
    with pytest.raises(ValueError, match="unknown chunk layout"):
        f.render_chunks(chunks, ["prior", "sideways"])


@pytest.mark.parametrize("layout", ["prior", "posterior", "prior-only", "posterior-only"])
def test_observed_spans_cut_out_exactly_the_chunk_texts(layout):
    chunks = [{"text": "One. ", "latent": "l1"}, {"text": "Two.", "latent": ""}, {"text": " Three", "latent": "l3"}]
    rendered = f.render_chunks(chunks, [layout] * 3)
    spans = f.observed_spans(chunks, [layout] * 3)
    assert [rendered[a:b] for a, b in spans] == ["One. ", "Two.", " Three"]
    outside = "".join(rendered[b:a] for (_, b), (a, _) in zip([(0, 0)] + spans, spans + [(len(rendered), 0)]))
    assert f.strip_special_tokens(outside) == "l1l3"  # only latents and special tokens lie outside


def test_posterior_prompt_fixed_and_reference():
    assert f.posterior_prompt("", "X.") == "<|START_OF_LATENT|><|END_OF_LATENT|>X.<|START_OF_LATENT|><|POSTERIOR_PREFIX|>"
    assert f.posterior_prompt("", "X.", reference_quirks=True) == "X.<|START_OF_LATENT|><|POSTERIOR_PREFIX|>"
    expected = "P.<|START_OF_LATENT|><|END_OF_LATENT|>X.<|START_OF_LATENT|><|POSTERIOR_PREFIX|>"
    assert f.posterior_prompt("P.", "X.") == expected
    assert f.posterior_prompt("P.", "X.", reference_quirks=True) == expected


def test_joint_scoring_pair_fixed_and_reference():
    fixed = f.joint_scoring_pair("P.", "Z", "X.")
    assert fixed.context == "P."
    assert fixed.continuation == "<|START_OF_LATENT|><|PRIOR_PREFIX|>Z<|END_OF_LATENT|>X."
    quirk = f.joint_scoring_pair("P.", "Z", "X.", reference_quirks=True)
    assert quirk.context == "P.<|START_OF_LATENT|>"
    assert quirk.continuation == "<|PRIOR_PREFIX|>Z<|END_OF_LATENT|>X."
    assert fixed.context + fixed.continuation == quirk.context + quirk.continuation


def test_eval_suffix_and_strip():
    assert f.latent_eval_suffix() == "<|START_OF_LATENT|><|PRIOR_PREFIX|>"
    assert f.strip_special_tokens("a<|END_OF_LATENT|>b") == "ab"
