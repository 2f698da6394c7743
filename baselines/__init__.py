"""Built-in baselines, one module per architecture; importing this package registers them."""

from baselines import mamba, sliding_softmax, swat, transformer  # noqa: F401
