"""Money arithmetic shared by services: amounts are integers in minor units."""

from __future__ import annotations


def allocate(total: int, parts: int) -> list[int]:
    """Split ``total`` minor units into ``parts`` shares by largest remainder; they sum exactly.

    Equal weights: every share gets ``total // parts`` and the first ``total % parts`` shares
    (seat order) get one unit more.
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    if total < 0:
        raise ValueError("total must be >= 0")
    base, remainder = divmod(total, parts)
    return [base + (1 if i < remainder else 0) for i in range(parts)]
