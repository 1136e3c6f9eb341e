"""bench/gpu_check.py's parts by concern (docs/performance.md): `common` (paths, the checked models and recipes,
what one run measures), `guard` (each part run, skipped, stopped or recorded as failed; resident memory),
`models` (the random models at real shapes), `training` and `scoring` (the measurements), `budget` (a real-size
CPU run's time estimates), `plan` (the parts of one model, in order) and `report` (gpu_check.md, and whether a
results file holds a measured run). gpu_check.py is the command line."""
