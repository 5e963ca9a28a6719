"""The context window: does a prompt fit, and cutting it when it does not (HELM's ``WindowService``).

The adapter drops in-context examples one at a time until the prompt plus the expected completion fits
(:meth:`WindowService.fits_within_context_window`); with none left it cuts the prompt from the right
(:meth:`WindowService.truncate_from_right`), as HELM does (Liang et al. 2022, App. J).
"""

from __future__ import annotations

from collections.abc import Callable

from dlscience.errors import InputValidationError

__all__ = ["WindowService"]


class WindowService:
    """Token counting against a context length.

    Parameters
    ----------
    tokenize : callable
        ``tokenize(text) -> list[str]`` token strings whose concatenation is the text.
    max_sequence_length : int
        Tokens the model can attend to (prompt + completion).
    """

    def __init__(self, tokenize: Callable[[str], list[str]], max_sequence_length: int):
        if max_sequence_length < 1:
            raise InputValidationError(f"max_sequence_length must be >= 1, got {max_sequence_length}")
        self.tokenize = tokenize
        self.max_sequence_length = max_sequence_length

    def num_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def fits_within_context_window(self, text: str, expected_completion_token_length: int = 0) -> bool:
        """True when ``text`` plus the completion fits in ``max_sequence_length`` tokens."""
        return self.num_tokens(text) + expected_completion_token_length <= self.max_sequence_length

    def truncate_from_right(self, text: str, expected_completion_token_length: int = 0) -> str:
        """``text`` cut to its first ``max_sequence_length - expected_completion_token_length`` tokens."""
        budget = max(0, self.max_sequence_length - expected_completion_token_length)
        tokens = self.tokenize(text)
        return text if len(tokens) <= budget else "".join(tokens[:budget])
