"""Exact dedup on normalised text and near-duplicate detection with MinHash over word shingles."""

from __future__ import annotations

import hashlib

import numpy as np

from alignloop.warehouse.ids import normalise

_PRIME = np.uint64((1 << 61) - 1)


def shingles(text: str, n: int = 3) -> set[str]:
    words = normalise(text).split()
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash LSH: finds earlier texts whose shingle Jaccard similarity is at least ``threshold``.

    Candidates come from LSH buckets (bands x rows = permutations) and are confirmed with the exact
    Jaccard similarity, so the answer has no false positives.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = 64, bands: int = 16, seed: int = 1):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.bands, self.rows = threshold, bands, num_perm // bands
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self._sets: list[set[str]] = []

    def _signature(self, sh: set[str]) -> np.ndarray:
        hashes = np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 3
                              for s in sh), dtype=np.uint64, count=len(sh))
        # (P, S): (a * x + b) mod p, overflow-wrapping uint64 arithmetic is fine for hashing
        return ((self._a[:, None] * hashes[None, :] + self._b[:, None]) % _PRIME).min(axis=1)

    def add(self, text: str) -> int | None:
        """Add ``text``; return the index of an earlier near-duplicate (not added then), else None."""
        sh = shingles(text)
        sig = self._signature(sh)
        keys = [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
        seen: set[int] = set()
        for band, key in enumerate(keys):
            for j in self._buckets[band].get(key, ()):
                if j not in seen:
                    seen.add(j)
                    if jaccard(sh, self._sets[j]) >= self.threshold:
                        return j
        idx = len(self._sets)
        self._sets.append(sh)
        for band, key in enumerate(keys):
            self._buckets[band].setdefault(key, []).append(idx)
        return None
