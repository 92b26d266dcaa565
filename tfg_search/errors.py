"""Exceptions of tfg-search.

Every error a user can cause is a :class:`TFGSearchError`; the CLI prints its message as one line and
exits with code 2. Messages say what is wrong and how to fix it.
"""

from __future__ import annotations


class TFGSearchError(Exception):
    """A problem the user can fix (bad input, missing study, unreachable storage, ...)."""


class NonFiniteSampleError(TFGSearchError, FloatingPointError):
    """Guided sampling produced NaN or infinite values.

    Attributes:
        step: index of the inference step (0 = noisiest) at which the values became non-finite.
        n_bad: how many samples of the batch are non-finite.
        n_total: batch size.
    """

    def __init__(self, step: int, n_bad: int, n_total: int) -> None:
        self.step = step
        self.n_bad = n_bad
        self.n_total = n_total
        super().__init__(
            f"guided sampling became non-finite at step {step}: {n_bad} of {n_total} samples "
            "contain NaN/inf (the guidance strengths are probably too large for this task)"
        )


class SettingError(TFGSearchError):
    """A bad value of one named setting (a parameter of the library; the CLI names its flag).

    Example:
        >>> err = SettingError("final_top", "must be an integer >= 1, got 0")
        >>> str(err), err.param
        ('final_top must be an integer >= 1, got 0', 'final_top')
    """

    def __init__(self, param: str, detail: str) -> None:
        self.param = param
        self.detail = detail
        super().__init__(f"{param} {detail}")
