"""examples/reward_finetune.py's pieces by concern: `data` (a bench's sources by the prepared split, and its own
restorers' utilities), `restorer` (the restoration network and its supervised pretraining), `finetune` (the two
reward fine-tuning loops) and `judging` (the held-out readings and the reward-hacking verdicts). reward_finetune.py
is the command line and the report."""
