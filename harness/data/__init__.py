"""Data: where it lives (paths), tokenizers, pretraining corpora and their held-out split, packed
token streams for training, and the mirror of evaluation sets (lookup, import, `harness data`)."""
