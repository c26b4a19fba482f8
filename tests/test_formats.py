"""The thought format, byte for byte (bolt-spec section 3)."""

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
