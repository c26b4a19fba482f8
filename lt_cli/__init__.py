"""lt: Reasoning to Learn from Latent Thoughts (BoLT) as a Unix command-line toolkit."""

__version__ = "0.1.0"
