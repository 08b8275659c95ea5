"""Which cameras of a shared `streams.yaml` this instance runs: rendezvous hashing.

Every instance reads the same file and keeps the cameras whose id hashes to its shard.
Rendezvous (highest random weight) hashing scores each (camera, shard) pair and gives
the camera to the highest-scoring shard, so:

- every camera lives in exactly one of N instances, decided by the id alone: no
  coordination, no state, nothing to agree on but the file and N;
- going from N to N+1 instances moves only the cameras the new shard wins (about 1/(N+1)
  of them), and going from N to N-1 moves only the last shard's cameras: the others keep
  their winner, because the scores of the shards that remain do not change.

This is what Prometheus does for scrape targets with `hashmod`, minus the reshuffle a
plain modulo causes when N changes. The hash is BLAKE2b, not Python's `hash()`, which is
salted per process and would put a camera in a different shard in each instance.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 1024


def _weight(camera_id: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\0{camera_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(camera_id: str, count: int) -> int:
    """The shard (0..count-1) that runs `camera_id` among `count` instances."""
    return max(range(count), key=lambda shard: _weight(camera_id, shard))


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the shard count must be from 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"the shard index must be from 0 to {self.count - 1}, got {self.index}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N': shard I of N (I from 0)."""
        match = _SHARD.match(text)
        if match is None:
            raise ValueError(f"'{text}' is not a shard: write I/N, e.g. 0/3 for the first of three instances")
        return cls(int(match[1]), int(match[2]))

    def owns(self, camera_id: str) -> bool:
        return self.count == 1 or shard_of(camera_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
