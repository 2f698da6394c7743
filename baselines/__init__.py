"""Built-in baselines, one module per architecture; importing this package registers them."""

from baselines import (  # noqa: F401  # noqa: F401
    deltanet,
    gated_deltanet,
    gla,
    hgrn2,
    mamba,
    mamba2,
    ngram,  # noqa: F401  (count-based reference rows)
    retnet,
    sliding_softmax,
    swat,
    transformer,
)
