"""Built-in tasks; importing this package registers them."""

from tasks import smoke  # noqa: F401
