"""Exceptions of tfg-search.

Every error a user can cause is a :class:`TFGSearchError`; the CLI prints its message as one line and
exits with code 2. Messages say what is wrong and how to fix it.
"""

from __future__ import annotations


class TFGSearchError(Exception):
    """A problem the user can fix (bad input, missing study, unreachable storage, ...)."""


class UserCodeError(TFGSearchError):
    """A user's function (a custom task's predictor or evaluator) raised; ``__cause__`` is its
    exception. A search stops at the first (its trial is re-run when the same command runs again
    after the fix).

    Attributes:
        role: ``predictor`` or ``evaluator``.
        spec: the ``module:function`` it was given as.

    Example:
        >>> err = UserCodeError("predictor", "my_mod:log_f", ValueError("bad shape"))
        >>> str(err)
        'predictor my_mod:log_f raised ValueError: bad shape'
    """

    def __init__(self, role: str, spec: str, error: BaseException) -> None:
        self.role = role
        self.spec = spec
        text = str(error).strip()
        super().__init__(
            f"{role} {spec} raised {type(error).__name__}: {text.splitlines()[0] if text else ''}"
        )


class TrialUserError(TFGSearchError):
    """A search stopped because an evaluation failed for the user's reason (their predictor,
    evaluator or model raised; a :class:`TFGSearchError` inside a trial).

    Attributes:
        details: the evaluation's traceback as text (it may have run in another process);
            the CLI shows it with ``--debug`` or ``TFG_SEARCH_DEBUG=1``.
    """

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


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
