"""`harness-lm-eval`: lm-eval's own command line with the `swat-harness` model registered and the
mirror's task overlays (plus the harness's groups) on its include path.

    harness-lm-eval --model swat-harness --model_args checkpoint=runs/small/swat/checkpoint --tasks piqa

(lm-eval 0.4 loads no third-party model plugins by itself.)
"""

from __future__ import annotations

import sys

import harness.evaluation.lm_eval_adapter  # noqa: F401  (registers the swat-harness model with lm-eval)
from harness.evaluation.lm_eval_tasks import mirrored_files, render_overlays


def lm_eval_cli() -> None:
    """lm-eval's own command line with `swat-harness` registered and the overlays of every mirrored
    task (plus our groups) as the include path: `harness-lm-eval --model swat-harness ...`."""
    args = sys.argv[1:]
    command = [args.pop(0)] if args and args[0] in ("run", "ls", "validate") else ["run"]
    if "--include_path" not in args and command[0] != "validate":
        args = ["--include_path", str(render_overlays(mirrored_files())), *args]
    sys.argv = [sys.argv[0], *command, *args]
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    lm_eval_cli()
