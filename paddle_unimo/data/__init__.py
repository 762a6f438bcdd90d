"""Readers, encoders and collators: raw files -> examples -> batches."""


class PassCounts:
    """Truncations per input set. ``record(where, counts)`` keeps one encoding pass's counts for a set (the
    training data, the inputs decoded), replacing that set's previous pass -- the dev set is encoded again at
    every evaluation -- and says whether they changed (worth logging); ``totals(keys)`` sums the sets' last
    passes, what metrics.json reports."""

    def __init__(self):
        self.passes = {}

    def record(self, where: str, counts: dict) -> bool:
        previous, self.passes[where] = self.passes.get(where), dict(counts)
        return counts != previous and any(counts.values())

    def totals(self, keys) -> dict:
        return {k: sum(p.get(k, 0) for p in self.passes.values()) for k in keys}
