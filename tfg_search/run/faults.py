"""Named points at which a search can be stopped on purpose: the tests of exactness under
interruption (a search stopped anywhere, then run again, ends with the trials and the answer of a
search never stopped) stop it there.

``TFG_SEARCH_FAULT=PHASE[:N[:HOW]]`` stops the search the ``N``-th time (default 1) it reaches
``PHASE``, as Ctrl-C does (``HOW`` = ``interrupt``, the default: a KeyboardInterrupt) or as
``kill -9`` does (``kill``: SIGKILL to this process). Unset, :func:`fault` costs one dictionary
read. The phases (:data:`PHASES`), in the order a search meets them:

* ``create``: the search study ``N:search`` is created, the answer study ``N`` not yet;
* ``ask``: a search trial is created, its parameters not suggested yet;
* ``result``: an evaluation's outcome arrived, nothing of it is stored;
* ``tell``: its record is stored, the trial is not told yet (a rung: not reported);
* ``finals``: the search is exhausted, its final re-runs not made yet;
* ``final-ask``, ``final-result``, ``final-tell``: the same three for a final re-run.

Example:
    >>> import os
    >>> os.environ[ENV] = "tell:2"
    >>> fault("tell")  # the first time: nothing
    >>> fault("tell")
    Traceback (most recent call last):
    ...
    KeyboardInterrupt: TFG_SEARCH_FAULT: stopped at tell (2)
    >>> del os.environ[ENV]
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "TFG_SEARCH_FAULT"
PHASES = ("create", "ask", "result", "tell", "finals", "final-ask", "final-result", "final-tell")

_reached: Counter[str] = Counter()


def fault(phase: str) -> None:
    """Stop here if ``$TFG_SEARCH_FAULT`` names this phase and this is its time (module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != phase:
        return
    count, _, how = rest.partition(":")
    _reached[phase] += 1
    if _reached[phase] != int(count or 1):
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt(f"{ENV}: stopped at {phase} ({_reached[phase]})")


def reset() -> None:
    """Forget how often each phase was reached (for a new search in the same process)."""
    _reached.clear()
