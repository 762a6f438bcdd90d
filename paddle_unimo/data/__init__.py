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

    def record_since(self, where: str, before: dict, now: dict):
        """``record`` of the counts a pass added to a running counter (``before`` -> ``now``); returns the
        non-zero ones when worth logging, else None."""
        cut = {k: now[k] - before[k] for k in before}
        return {k: n for k, n in cut.items() if n} if self.record(where, cut) else None

    def totals(self, keys) -> dict:
        return {k: sum(p.get(k, 0) for p in self.passes.values()) for k in keys}
