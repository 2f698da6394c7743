"""Built-in tasks; importing this package registers them."""

from tasks import (  # noqa: F401
    commonsense,
    length,
    perplexity,
    retrieval,
    smoke,  # noqa: F401
    speed,  # noqa: F401
)
