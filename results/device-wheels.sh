#!/usr/bin/env bash
# Builds `.whl/`, the wheels the device scripts install (results/device-setup.sh): fla 0.6.0, lm-eval
# 0.4.13 and the parts of its datasets stack the device image lacks. Run it from the repository root,
# in the project's venv, on a machine that reaches the package registries (the device cannot):
#   bash results/device-wheels.sh
# A device call carries the working tree and what it names in `carry`, 64 MiB at most, and lm-eval's
# wheel (8.8 MB) is mostly the YAML of its thousands of tasks. The wheel carried keeps only the task
# folders that the harness's lm-eval tasks include (tasks/*.py, `LmEvalTask.builtin`; about 1 MB), and
# is checked here: every one of those tasks loads from it through the harness's overlays.
# Not built here: mamba-ssm's source for the device's sm_90 build (.whl/mamba_ssm-*-sm90-src.tar.gz),
# which only calls that run mamba or mamba2 need (without it their background build fails, in mamba_build.log).
set -euo pipefail
mkdir -p .whl
python -m pip download -q --no-deps -d .whl fla-core==0.6.0 flash-linear-attention==0.6.0 lm_eval==0.4.13 \
  datasets==5.2.0 dill
python -m pip download -q --no-deps -d .whl --python-version 3.12 --only-binary=:all: multiprocess==0.70.19
python -m pip wheel -q --no-deps -w .whl sqlitedict
python - <<'EOF'
"""Rewrite .whl/lm_eval-*.whl with only the task folders the harness's lm-eval tasks include."""
import glob
import os
import zipfile

from harness.evaluation.lm_eval_tasks import lm_eval_tasks

[wheel] = glob.glob(".whl/lm_eval-*.whl")
keep = sorted({os.path.dirname(task.builtin) + "/" for task in lm_eval_tasks().values()})
slim = wheel + ".slim"
with zipfile.ZipFile(wheel) as whole, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
    for item in whole.infolist():
        inside = item.filename.removeprefix("lm_eval/tasks/")
        if item.filename.startswith("lm_eval/tasks/") and "/" in inside and not inside.startswith(tuple(keep)):
            continue  # another task's folder
        out.writestr(item, whole.read(item.filename))
os.replace(slim, wheel)
print(f"{wheel}: lm_eval/tasks/ keeps {', '.join(keep)} ({os.path.getsize(wheel) / 1e6:.1f} MB)")
EOF
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
python -m pip install -q --no-index --no-deps --no-compile --target "$check" .whl/lm_eval-*.whl
PYTHONPATH="$check" HF_DATASETS_OFFLINE=1 python - <<'EOF'
"""Every lm-eval task of the harness finds its YAML, and what that includes, in the slimmed wheel; those
with mirrored data load from it through the harness's overlays."""
import os
from pathlib import Path

import lm_eval
import yaml

from harness.evaluation import lm_eval_tasks as t

assert lm_eval.__file__.startswith(os.environ["PYTHONPATH"]), "lm_eval did not come from the slimmed wheel"
root = Path(lm_eval.__file__).parent / "tasks"
for task in t.lm_eval_tasks().values():
    todo = [root / task.builtin]
    while todo:
        path = todo.pop()
        assert path.is_file(), f"{task.name}: {path.relative_to(root)} is not in the slimmed wheel"
        include = yaml.load(path.read_text(), Loader=yaml.BaseLoader).get("include")  # tags left as text
        todo += [path.parent / name for name in ([include] if isinstance(include, str) else include or [])]
files = t.mirrored_files()
loaded = t.task_manager(t.render_overlays(files)).load(sorted(files))["tasks"]
assert set(loaded) == set(files), f"not loadable from the slimmed wheel: {sorted(set(files) - set(loaded))}"
print(f"lm-eval tasks whose YAML is in the carried wheel: {', '.join(sorted(t.lm_eval_tasks()))}; "
      f"loaded on the mirror's data: {', '.join(sorted(loaded))}")
EOF
du -sh .whl
