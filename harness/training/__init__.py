"""Training: the loop (train), its recipe (optimizer, schedule, loss, options), the data order
(batches), checkpoints, the held-out loss, fitting by counting, parallelism (distributed), the
per-step log (trainlog) and the multi-GPU comparison of runs (scaling)."""
