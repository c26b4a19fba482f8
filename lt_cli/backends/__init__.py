"""Inference backends behind one interface (see base.py). Import a backend with :func:`load_backend`."""
