"""LL-Bench reading, validation, splitting and sample building."""
