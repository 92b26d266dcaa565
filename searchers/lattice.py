"""Geometric lattices of hyper-parameter values and their text form.

A searched parameter takes the values ``init * factor**k`` for ``k = 0, 1, 2, ...`` while the value
does not exceed ``cap`` (tfg-algorithm.md, section 5). Candidates are keyed by the integer exponent
``k``, never by the float value, so that equality of configurations is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["DEFAULT_SPACE", "Lattice", "parse_space"]

# Relative tolerance when deciding whether a lattice point still lies under the cap, so that a cap
# that is itself on the lattice (0.001 * 10**3 == 1.0000000000000002) is included.
_CAP_RTOL = 1e-9
# Most lattice points a parameter may have; a guard against factors barely above one.
_MAX_POINTS = 10_000
_FORM = "INIT:FACTOR:CAP, e.g. 0.25:2:8"


@dataclass(frozen=True)
class Lattice:
    """The values ``init * factor**k``, ``k = 0, 1, 2, ...``, up to and including ``cap``.

    Args:
        init: The first value (exponent 0). Must be positive.
        factor: The ratio between neighbouring values. Must be greater than one.
        cap: The largest value allowed. Must be at least ``init``; it is a lattice value itself
            when ``init * factor**k == cap`` for some ``k`` (up to float rounding).

    Example:

        .. testcode::

            from searchers import Lattice

            rho = Lattice(0.25, 2.0, 8.0)
            assert rho.values() == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
            assert Lattice.parse("0.001:10:1").values() == (0.001, 0.01, 0.1, 1.0)
    """

    init: float
    factor: float
    cap: float
    _size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("init", "factor", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Lattice {name} must be a number, got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"Lattice {name} must be finite, got {value!r}.")
            object.__setattr__(self, name, float(value))
        if self.init <= 0:
            raise ValueError(f"Lattice init must be > 0, got {self.init!r}.")
        if self.factor <= 1:
            raise ValueError(
                f"Lattice factor must be > 1 (each step multiplies the value), got {self.factor!r}."
            )
        if self.cap < self.init:
            raise ValueError(f"Lattice cap must be >= init, got init={self.init!r} and cap={self.cap!r}.")
        limit = self.cap * (1.0 + _CAP_RTOL)
        count = 1
        while self.init * self.factor**count <= limit:
            count += 1
            if count > _MAX_POINTS:
                raise ValueError(f"Lattice {self} has more than {_MAX_POINTS} points; use a larger factor.")
        object.__setattr__(self, "_size", count)

    @property
    def size(self) -> int:
        """The number of lattice values (exponents ``0 .. size - 1``)."""
        return self._size

    def value(self, exponent: int) -> float:
        """The value ``init * factor**exponent``, rounded to 12 significant digits.

        The rounding removes float noise (``0.001 * 10**2`` gives ``0.1``, and a cap on the
        lattice is returned exactly), so the value fits a distribution bounded by ``init`` and
        ``cap``.

        Raises:
            IndexError: If ``exponent`` is not in ``0 .. size - 1``.
        """
        if isinstance(exponent, bool) or not isinstance(exponent, int):
            raise TypeError(f"A lattice exponent must be an int, got {exponent!r}.")
        if not 0 <= exponent < self.size:
            raise IndexError(f"Exponent {exponent} is outside 0..{self.size - 1} of {self}.")
        return float(f"{self.init * self.factor**exponent:.12g}")

    def values(self) -> tuple[float, ...]:
        """All lattice values in increasing order."""
        return tuple(self.value(k) for k in range(self.size))

    @classmethod
    def parse(cls, text: str) -> Lattice:
        """Parse ``"INIT:FACTOR:CAP"`` (e.g. ``"0.25:2:8"``).

        Raises:
            ValueError: If the text is not three numbers separated by colons, or the numbers do
                not form a valid lattice. The message names the bad part.
        """
        parts = text.strip().split(":")
        if len(parts) != 3:
            raise ValueError(f"Bad lattice {text!r}: expected {_FORM}.")
        numbers = []
        for label, part in zip(("INIT", "FACTOR", "CAP"), parts, strict=True):
            try:
                numbers.append(float(part))
            except ValueError:
                raise ValueError(
                    f"Bad lattice {text!r}: {label} {part.strip()!r} is not a number; expected {_FORM}."
                ) from None
        try:
            return cls(*numbers)
        except ValueError as error:
            raise ValueError(f"Bad lattice {text!r}: {error}") from None

    def __str__(self) -> str:
        """The ``"INIT:FACTOR:CAP"`` text, exact: ``Lattice.parse(str(lattice)) == lattice``."""
        return ":".join(_number(x) for x in (self.init, self.factor, self.cap))


def _number(x: float) -> str:
    text = repr(x)
    return text[:-2] if text.endswith(".0") else text


def parse_space(text: str) -> dict[str, Lattice]:
    """Parse ``"NAME=INIT:FACTOR:CAP,NAME=..."`` into a search space.

    Example:

        .. testcode::

            from searchers import DEFAULT_SPACE, parse_space

            space = parse_space("rho=0.25:2:8,mu=0.25:2:8,gamma=0.001:10:1")
            assert space == dict(DEFAULT_SPACE)

    Raises:
        ValueError: If an entry is malformed, a name repeats, or the text is empty. The message
            names the bad entry and the expected form.
    """
    form = "NAME=INIT:FACTOR:CAP[,NAME=INIT:FACTOR:CAP...], e.g. rho=0.25:2:8,gamma=0.001:10:1"
    space: dict[str, Lattice] = {}
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip():
        raise ValueError(f"Empty search space: expected {form}.")
    for entry in entries:
        name, sep, lattice_text = entry.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"Bad search-space entry {entry!r}: expected {form}.")
        if name in space:
            raise ValueError(f"Parameter {name!r} appears twice in the search space {text!r}.")
        try:
            space[name] = Lattice.parse(lattice_text)
        except ValueError as error:
            raise ValueError(f"Bad search-space entry {entry!r}: {error}") from None
    return space


#: The reference search space (tfg-algorithm.md, section 5): rho and mu from 0.25 doubling up to
#: 8, gamma from 0.001 in decades up to 1.
DEFAULT_SPACE: Mapping[str, Lattice] = MappingProxyType(
    {
        "rho": Lattice(0.25, 2.0, 8.0),
        "mu": Lattice(0.25, 2.0, 8.0),
        "gamma": Lattice(0.001, 10.0, 1.0),
    }
)
