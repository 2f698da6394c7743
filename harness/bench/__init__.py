"""Benchmarks: `harness bench kernels` (the SWAT kernel against its peers) and whole-model sweeps.

Every number is measured side by side with what it is compared to, in one process on the same
inputs, and written with its command, device, date and commit.
"""

from harness.config import ConfigError

# The sequence lengths `harness bench kernels` times by default (issue 24's), which the tuning sweeps
# that feed its configs time too
KERNEL_BENCH_LENGTHS = (4096, 16384, 32768)


def parse_ints(text: str, flag: str) -> list[int]:
    """'2048,4096' -> [2048, 4096]: a command-line list of positive integers (`flag` names it in the error),
    each once: a value named twice would be measured twice, into two rows at one point of a table."""
    try:
        values = list(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} takes positive integers, got {text!r}")
    return values
