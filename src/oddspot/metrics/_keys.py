"""Order-preserving integer keys for floats: a < b as floats  <=>  key(a) < key(b) as unsigned ints.

A float's bit pattern is made sortable by flipping every bit of a negative number and only the
sign bit of a positive one. -0.0 is folded onto +0.0 first (they are equal scores) and NaN is
never keyed (callers reject it). Keys are 64-bit: float32 scores map through their exact float64
value, so one key space serves every input dtype.
"""

from __future__ import annotations

import numpy as np

SIGN64 = np.uint64(1 << 63)
SIGN32 = np.uint32(1 << 31)
TOP_BITS = 16
"""The key's top 16 bits (sign, exponent, 4 mantissa bits) select a bucket of the binned table."""
LOW_BITS = 64 - TOP_BITS
F32_SHIFT = 29
"""A float32 value seen as float64 has 29 trailing zero mantissa bits: aligned runs of 2**29
consecutive 64-bit keys hold at most one float32 value."""


def keys64(x: np.ndarray) -> np.ndarray:
    """Sortable uint64 keys of a float64 array without NaN."""
    bits = (np.asarray(x, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits >> np.uint64(63), ~bits, bits | SIGN64)


def keys32(x: np.ndarray) -> np.ndarray:
    """Sortable uint32 keys of a float32 array without NaN (cheaper to sort than 64-bit keys)."""
    bits = (np.asarray(x, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | SIGN32)


def keys32_to_keys64(k: np.ndarray) -> np.ndarray:
    """Map float32 keys to the float64 key of the same value (monotone, exact)."""
    bits = np.where(k & SIGN32, k ^ SIGN32, ~k).astype(np.uint32)
    return keys64(bits.view(np.float32).astype(np.float64))


def values64(k: np.ndarray) -> np.ndarray:
    """Inverse of `keys64`: the float64 value of each key."""
    k = np.asarray(k, dtype=np.uint64)
    bits = np.where(k & SIGN64, k ^ SIGN64, ~k)
    return bits.view(np.float64)


def float32_exact(x: np.ndarray) -> bool:
    """True when every value of a float64 array (no NaN) is exactly a float32 number."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(x.astype(np.float32).astype(np.float64), x))
