"""The simulators behind LL-Score's embedded default, apart from the library (docs/architecture.md):
LL-Bench-mini (`mini_bench`: scenes, degradations, restorers, simulated annotators), dead-leaves scenes, tiny
random Qwen-VL checkpoints (`tiny`) and the tiny base's low-level pretraining (`pretraining`). They import
`llscore`; `llscore` never imports them."""
