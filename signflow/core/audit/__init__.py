"""The tamper-evident audit log (Merkle tree, signed checkpoints, proofs) and the
evidence report built from it."""
