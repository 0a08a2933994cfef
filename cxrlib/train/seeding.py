"""Independent random streams derived from (seed, purpose, epoch, ...): no global seeding anywhere else."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from (seed, purpose, epoch, ...) via numpy's SeedSequence (independent streams)."""
    words = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:8].ljust(8, b"\0"), "little")
             for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
