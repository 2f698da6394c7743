"""Studies (`harness study FILE`): the study file and its runs (spec), running them (runner), and
their tables, fits and plots (report)."""
