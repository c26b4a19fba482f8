"""Stop strings checked incrementally: the stop rule both transformers sampling engines use.

Why not search the whole decoded text at every step: that is one decode of the whole sample per row
and step, which dominated a 256-row GPU step (docs/performance.md). :class:`StopWatch` gives the same
answer at the cost of a dictionary lookup per row and step.
"""

from __future__ import annotations

from typing import Callable


class StopWatch:
    """Stop strings checked incrementally, with the same answer as searching the whole decoded text.

    A stop string can only newly appear where the latest token changed the text, so it must end
    inside the latest token's text ``t``: ``t`` holds the whole stop, or ``t`` begins with the stop's
    last few characters. Only then (or when ``t`` is empty or a partial character, U+FFFD, whose text
    depends on its neighbours) is a window of the last tokens decoded (4 per character of the longest
    stop, plus margin) and searched, and a hit confirmed on the whole text, as the dynamic loop
    decides it. A stop ending in whitespace is always checked: a SentencePiece token carries its
    leading space only in context. Whether a token can complete a stop is cached per token id, so a
    step costs a dictionary lookup per row unless a stop may have just been written.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: tuple[str, ...]):
        self.decode = decode
        self.stops = tuple(stops)
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 8
        self.always = any(s[-1].isspace() for s in self.stops)
        self._triggers: dict[int, bool] = {}

    def _may_complete(self, token: int) -> bool:
        hit = self._triggers.get(token)
        if hit is None:
            text = self.decode([token])
            hit = (not text) or "\ufffd" in text or any(
                s in text or any(text.startswith(s[-n:]) for n in range(1, min(len(s), len(text) + 1))) for s in self.stops
            )
            self._triggers[token] = hit
        return hit

    def hit(self, tokens: list[int]) -> bool:
        if not self.stops or not (self.always or self._may_complete(tokens[-1])):
            return False
        tail = self.decode(tokens[-self.window :])
        if not any(s in tail for s in self.stops):
            return False
        text = self.decode(tokens)
        return any(s in text for s in self.stops)
