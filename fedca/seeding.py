"""One seeded ``torch.Generator`` per purpose, so changing one step's randomness leaves the others alone."""

import hashlib

import torch

PURPOSES = ("eval_negatives", "train_negatives", "shuffle", "client_sampling", "agg_sampling", "init", "privacy",
            "holdout", "adapt")


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded from (seed, purpose) through sha256."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown randomness purpose {purpose!r}")
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen
