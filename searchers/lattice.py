"""Geometric lattices of hyper-parameter values and their text form.

A searched parameter takes the values ``init * factor**k`` for ``k = 0, 1, 2, ...`` while the value
does not exceed ``cap`` (docs/algorithm.md of the tfg-search repository, section 5). Candidates
are keyed by the integer exponent ``k``, never by the float value, so that equality of
configurations is exact.

A lattice may also include 0 ("off") as its lowest value, written ``0,INIT:FACTOR:CAP``: 0 is the
exponent ``-1``, so that the earlier methods, which switch mechanisms off (DPS has ``mu = 0`` and
``gamma = 0``), are points of the space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["DEFAULT_SPACE", "ZERO_EXPONENT", "Lattice", "format_space", "parse_space"]

# Relative tolerance when deciding whether a lattice point still lies under the cap, so that a cap
# that is itself on the lattice (0.001 * 10**3 == 1.0000000000000002) is included.
_CAP_RTOL = 1e-9
# Most lattice points a parameter may have; a guard against factors barely above one.
_MAX_POINTS = 10_000
_FORM = "INIT:FACTOR:CAP or 0,INIT:FACTOR:CAP, e.g. 0.25:2:8 or 0,0.02:2:0.64"
ZERO_EXPONENT = -1
"""The exponent of the value 0 in a lattice that includes it."""


@dataclass(frozen=True)
class Lattice:
    """The values ``init * factor**k``, ``k = 0, 1, 2, ...``, up to and including ``cap`` (and 0).

    Args:
        init: The first positive value (exponent 0). Must be positive.
        factor: The ratio between neighbouring values. Must be greater than one.
        cap: The largest value allowed. Must be at least ``init``; it is a lattice value itself
            when ``init * factor**k == cap`` for some ``k`` (up to float rounding).
        zero: Whether 0 ("off") is a value too, below ``init``, with exponent
            :data:`ZERO_EXPONENT` (-1).

    Example:

        .. testcode::

            from searchers import Lattice

            rho = Lattice(0.25, 2.0, 8.0)
            assert rho.values() == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
            assert Lattice.parse("0.001:10:1").values() == (0.001, 0.01, 0.1, 1.0)
            mu = Lattice.parse("0,0.02:2:0.08")
            assert mu.values() == (0.0, 0.02, 0.04, 0.08)
            assert mu.exponents() == (-1, 0, 1, 2) and mu.value(-1) == 0.0
    """

    init: float
    factor: float
    cap: float
    zero: bool = False
    _size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("init", "factor", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Lattice {name} must be a number, got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"Lattice {name} must be finite, got {value!r}.")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.zero, bool):
            raise TypeError(f"Lattice zero must be True or False, got {self.zero!r}.")
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
        """The number of positive lattice values (exponents ``0 .. size - 1``; 0 not counted)."""
        return self._size

    @property
    def lowest_exponent(self) -> int:
        """``-1`` when 0 is a value, else ``0``."""
        return ZERO_EXPONENT if self.zero else 0

    @property
    def low(self) -> float:
        """The smallest value: 0 or ``init`` (the lower bound of a ``suggest_float`` over it)."""
        return 0.0 if self.zero else self.init

    @property
    def high(self) -> float:
        """The largest value (on the lattice, so at most ``cap``)."""
        return self.value(self.size - 1)

    def exponents(self) -> tuple[int, ...]:
        """Every exponent in increasing order (``-1`` first when 0 is a value)."""
        return tuple(range(self.lowest_exponent, self.size))

    def value(self, exponent: int) -> float:
        """The value ``init * factor**exponent`` rounded to 12 significant digits (0 for ``-1``).

        The rounding removes float noise (``0.001 * 10**2`` gives ``0.1``, and a cap on the
        lattice is returned exactly), so the value fits a distribution bounded by ``init`` and
        ``cap``.

        Raises:
            IndexError: If ``exponent`` is not in ``lowest_exponent .. size - 1``.
        """
        if isinstance(exponent, bool) or not isinstance(exponent, int):
            raise TypeError(f"A lattice exponent must be an int, got {exponent!r}.")
        if not self.lowest_exponent <= exponent < self.size:
            raise IndexError(
                f"Exponent {exponent} is outside {self.lowest_exponent}..{self.size - 1} of {self}."
            )
        if exponent == ZERO_EXPONENT:
            return 0.0
        return float(f"{self.init * self.factor**exponent:.12g}")

    def values(self) -> tuple[float, ...]:
        """All lattice values in increasing order (0 first when it is a value)."""
        return tuple(self.value(k) for k in self.exponents())

    def nearest(self, value: float) -> int:
        """The exponent of the lattice value nearest to ``value`` on a log scale (0 -> ``-1`` or 0).

        Example:
            >>> Lattice(0.25, 2.0, 8.0).nearest(3.0), Lattice(0.25, 2.0, 8.0, zero=True).nearest(0.0)
            (4, -1)
        """
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Cannot place {value!r} on a lattice: need a finite number >= 0.")
        if value == 0:
            return self.lowest_exponent
        k = round(math.log(value / self.init) / math.log(self.factor))
        return min(max(k, 0), self.size - 1)

    def as_tuple(self) -> tuple[float, ...]:
        """``(init, factor, cap)``, or ``(0.0, init, factor, cap)`` with 0 (JSON-ready; see from_tuple)."""
        body = (self.init, self.factor, self.cap)
        return (0.0, *body) if self.zero else body

    @classmethod
    def from_tuple(cls, values: tuple[float, ...] | list[float]) -> Lattice:
        """The lattice of :meth:`as_tuple` (3 numbers, or 4 with a leading 0).

        Example:
            >>> Lattice.from_tuple([0, 0.02, 2, 0.64]) == Lattice(0.02, 2.0, 0.64, zero=True)
            True
        """
        values = list(values)
        if len(values) == 4 and values[0] == 0:
            return cls(*values[1:], zero=True)
        if len(values) != 3:
            raise ValueError(f"A lattice is (init, factor, cap) or (0, init, factor, cap), got {values!r}.")
        return cls(*values)

    @classmethod
    def parse(cls, text: str) -> Lattice:
        """Parse ``"INIT:FACTOR:CAP"`` (e.g. ``"0.25:2:8"``), or ``"0,INIT:FACTOR:CAP"`` with 0.

        Raises:
            ValueError: If the text is not three numbers separated by colons (after an optional
                ``0,``), or the numbers do not form a valid lattice. The message names the bad part.
        """
        body = text.strip()
        zero = False
        head, sep, rest = body.partition(",")
        if sep:
            try:
                is_zero = float(head) == 0.0
            except ValueError:
                is_zero = False
            if not is_zero:
                raise ValueError(f"Bad lattice {text!r}: only 0 may come before the comma; expected {_FORM}.")
            zero, body = True, rest.strip()
        parts = body.split(":")
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
            return cls(*numbers, zero=zero)
        except ValueError as error:
            raise ValueError(f"Bad lattice {text!r}: {error}") from None

    def __str__(self) -> str:
        """The ``"[0,]INIT:FACTOR:CAP"`` text, exact: ``Lattice.parse(str(lattice)) == lattice``."""
        body = ":".join(_number(x) for x in (self.init, self.factor, self.cap))
        return f"0,{body}" if self.zero else body


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
    form = (
        "NAME=INIT:FACTOR:CAP or NAME=0,INIT:FACTOR:CAP (with 0) separated by commas, "
        "e.g. rho=0.25:2:8,mu=0,0.25:2:8,gamma=0.001:10:1"
    )
    space: dict[str, Lattice] = {}
    if not text.strip():
        raise ValueError(f"Empty search space: expected {form}.")
    # A comma separates entries, except after "NAME=0" where it opens the lattice's "0,".
    entries: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if entries and "=" not in piece and entries[-1].partition("=")[2].strip() in ("0", "0.0"):
            entries[-1] = f"{entries[-1]},{piece}"
        else:
            entries.append(piece)
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


#: The reference search space (docs/algorithm.md of the tfg-search repository, section 5): rho and
#: mu from 0.25 doubling up to 8, gamma from 0.001 in decades up to 1.
DEFAULT_SPACE: Mapping[str, Lattice] = MappingProxyType(
    {
        "rho": Lattice(0.25, 2.0, 8.0),
        "mu": Lattice(0.25, 2.0, 8.0),
        "gamma": Lattice(0.001, 10.0, 1.0),
    }
)


def format_space(space: Mapping[str, Lattice]) -> str:
    """The text form of a search space; :func:`parse_space` inverts it exactly.

    Example:
        >>> format_space({"rho": Lattice(0.25, 2.0, 8.0), "mu": Lattice(0.25, 2.0, 8.0, zero=True)})
        'rho=0.25:2:8,mu=0,0.25:2:8'
    """
    return ",".join(f"{name}={lattice}" for name, lattice in space.items())
