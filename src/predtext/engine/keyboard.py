"""The QWERTY keyboard's neighbouring keys: what a slipping finger types instead of a letter.

Shared by the typo corrector (a slip to a neighbouring key is the likeliest typo) and the
keystroke simulator's mistyping typist (who makes those slips).
"""

from __future__ import annotations

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# How far each row is shifted right of the one above, in keys (a staggered keyboard).
_OFFSETS = (0.0, 0.25, 0.75)


def _neighbours() -> dict[str, frozenset[str]]:
    places = {}
    for row, (keys, offset) in enumerate(zip(_ROWS, _OFFSETS)):
        for column, key in enumerate(keys):
            places[key] = (row, column + offset)
    near = {}
    for key, (row, x) in places.items():
        near[key] = frozenset(other for other, (r, ox) in places.items()
                              if other != key and abs(r - row) <= 1 and abs(ox - x) <= 1.0)
    return near


NEIGHBOURS: dict[str, frozenset[str]] = _neighbours()


def adjacent(a: str, b: str) -> bool:
    """Whether letters ``a`` and ``b`` are neighbouring keys (case aside)."""
    return b.lower() in NEIGHBOURS.get(a.lower(), ())
