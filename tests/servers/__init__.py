"""Real test servers started by the tests (see openai_server.py)."""
