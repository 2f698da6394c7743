"""Built-in tasks; importing this package registers them."""

from tasks import smoke  # noqa: F401
from tasks import commonsense, length, perplexity, retrieval  # noqa: F401
from tasks import speed  # noqa: F401
