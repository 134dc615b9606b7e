"""Bad input records: skipped and counted with file:line and reason, or fatal in strict mode.

Never a bare traceback, never a silent drop: the first skip of each reason is logged as a
warning, every skip is counted, and `summary()` lists them at the end of a run.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

from arc_jax.errors import DataError  # noqa: F401  (raised here; imported from here by the rest of data/)

log = logging.getLogger("arc_jax.data")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    path: str
    line: int  # 1-based line (jsonl) or record index (ArrayRecord)
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class BadRecords:
    """Collects skipped records. With strict=True the first one raises DataError instead."""

    def __init__(self, strict: bool = False, keep: int = 1000):
        self.strict = strict
        self.keep = keep
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: list[BadRecord] = []

    def skip(self, path: str, line: int, reason: str) -> None:
        record = BadRecord(str(path), line, reason)
        if self.strict:
            raise DataError(f"{record} (strict mode: fix the record or set config.data.strict=False to skip it)")
        if not self.counts[reason]:
            log.warning("skipping bad record %s (further ones are counted; see the summary)", record)
        self.counts[reason] += 1
        if len(self.examples) < self.keep:
            self.examples.append(record)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no bad records"
        lines = [f"{self.total} bad record(s) skipped:"]
        lines += [f"  {n} x {reason}" for reason, n in self.counts.most_common()]
        lines += [f"  e.g. {r}" for r in self.examples[:10]]
        return "\n".join(lines)
