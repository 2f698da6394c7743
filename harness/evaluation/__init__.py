"""Evaluation: the loop that scores model sources (trained, checkpoints, Hugging Face folders) on
registered tasks into rows, and lm-eval behind it: the adapter, the offline task overlays, and
lm-eval's own command line with both."""
