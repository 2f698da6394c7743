"""Built-in baselines, one module per architecture; importing this package registers them."""

from baselines import mamba, sliding_softmax, swat, transformer  # noqa: F401
from baselines import deltanet, gated_deltanet, gla, hgrn2, mamba2, retnet  # noqa: F401
from baselines import ngram  # noqa: F401  (count-based reference rows)
from baselines import llama_hf  # noqa: F401  (Hugging Face's Llama at the Transformer's shape: the speed peer)
