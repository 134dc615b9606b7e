"""The pooling schedule, decided on the host from text lengths (the device only sees its result).

A text of n tokens pooled by factor k is cut into consecutive groups:
- n < k: one group of n;
- n % k == 0: n / k groups of k;
- otherwise m = n // k + 1 groups whose sizes differ by at most one, the larger ones first
  (n=37, k=8 -> 8, 8, 7, 7, 7).
"""

from __future__ import annotations


def pool_groups(n: int, k: int) -> list[int]:
    """Sizes of the consecutive groups a text of n tokens is pooled into at factor k."""
    if n <= 0:
        raise ValueError(f"cannot pool an empty text (n={n})")
    if k <= 0:
        raise ValueError(f"pooling factor must be positive, got {k}")
    if n < k:
        return [n]
    if n % k == 0:
        return [k] * (n // k)
    m = n // k + 1
    base, extra = divmod(n, m)
    return [base + 1] * extra + [base] * (m - extra)


def pooled_row_lengths(row_len: int, factors: tuple[int, ...] | list[int], texts_per_row: int) -> list[int]:
    """Upper bounds of a packed row's length after each pooling stage: a row of row_len tokens
    holding at most texts_per_row texts, each adding at most one partial group per stage."""
    lengths, n = [], row_len
    for k in factors:
        n = min(n, -(-n // k) + texts_per_row)
        lengths.append(n)
    return lengths


def pooled_length(n: int, factors: tuple[int, ...] | list[int]) -> int:
    """Number of vectors a text of n tokens becomes after every pooling layer."""
    for k in factors:
        n = len(pool_groups(n, k))
    return n
