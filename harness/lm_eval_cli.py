"""`harness-lm-eval`: lm-eval's own command line with the `swat-harness` model registered and the
mirror's task overlays (plus the harness's groups) on its include path.

    harness-lm-eval --model swat-harness --model_args checkpoint=runs/small/swat/checkpoint --tasks piqa

(lm-eval 0.4 loads no third-party model plugins by itself.) Without --device the model runs where
the harness's own commands do (cuda when available, else cpu), not on lm-eval's default cuda:0; the
harness's errors are one `error:` line, as in `harness`.
"""

from __future__ import annotations

import sys

from harness.cli import failure
from harness.evaluation.lm_eval_adapter import import_lm_eval  # (registers the swat-harness model with lm-eval)
from harness.evaluation.lm_eval_tasks import mirrored_files, render_overlays
from harness.evaluation.loop import default_device


def lm_eval_cli() -> None:
    """lm-eval's own command line with `swat-harness` registered and the overlays of every mirrored
    task (plus our groups) as the include path: `harness-lm-eval --model swat-harness ...`."""
    parsed = None
    try:
        import_lm_eval()
        args = sys.argv[1:]
        command = [args.pop(0)] if args and args[0] in ("run", "ls", "validate") else ["run"]
        if "--include_path" not in args and command[0] != "validate":
            args = ["--include_path", str(render_overlays(mirrored_files())), *args]
        sys.argv = [sys.argv[0], *command, *args]
        # lm_eval.__main__.cli_evaluate, with the device default set between parsing and running
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging
        setup_logging()
        parser = HarnessCLI()
        parsed = parser.parse_args()
        if parsed.command == "run" and parsed.device is None and not parsed.config:  # a --config may name one
            parsed.device = default_device()
        parser.execute(parsed)
    except Exception as err:
        sys.exit(failure(err, parsed, "harness-lm-eval"))


if __name__ == "__main__":
    lm_eval_cli()
