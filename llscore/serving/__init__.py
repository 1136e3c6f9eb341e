"""LL-Score as a reward where image RL runs: the wire protocols, a Ray Serve service, in-process adapters and a
client (docs/serving.md)."""
