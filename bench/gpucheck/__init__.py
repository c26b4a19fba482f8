"""The parts of ``bench/gpu_check.py``: one GPU session's whole check, in pieces that fail alone.

``profile`` holds the sizes (full: one H200; smoke: a CPU in under two minutes), ``shapes`` the model
shapes and the tokenizer, ``part`` the per-part context (results, null reasons, sub-steps) and
``runner`` the orchestration (one subprocess per part, each with its time budget). The measuring
parts are ``ceilings``, ``contract``, ``training``, ``estep`` and ``demo``; ``report`` writes the
markdown summary. Nothing here imports torch at module level, so the orchestrator stays light.
"""
