"""The paper's eight zero-shot benchmarks through lm-eval (its prompts, scoring and task versions).

Each benchmark is a harness task of the same name as lm-eval's task; its rows hold every metric
lm-eval reports (acc and acc_norm where both exist, LAMBADA's perplexity), with `paper_metric`
marking the one the paper's table uses. Data comes from the local mirror (`harness data list`);
a missing dataset fails before the model is touched, naming the path and the fetch command.
`lm_eval/` holds the lm-eval group YAMLs over them (`harness-lm-eval --tasks commonsense`).
"""

from pathlib import Path

from harness.evaluation.lm_eval_tasks import (
    LmEvalTask,
    register_lm_eval_group_folder,
    register_lm_eval_task,
)


def _two(record: dict) -> int:
    return 2


BENCHMARKS = (
    LmEvalTask("lambada_openai", "lambada/lambada_openai.yaml", "lambada_openai", ("acc", "perplexity")),
    LmEvalTask("piqa", "piqa/piqa.yaml", "piqa", ("acc",), choices=_two),
    LmEvalTask("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", ("acc_norm",),
               choices=lambda r: len(r["endings"])),
    LmEvalTask("winogrande", "winogrande/default.yaml", "winogrande", ("acc",), choices=_two),
    LmEvalTask("arc_easy", "arc/arc_easy.yaml", "arc_easy", ("acc",), choices=lambda r: len(r["choices"]["text"])),
    LmEvalTask("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", ("acc_norm",),
               choices=lambda r: len(r["choices"]["text"])),
    LmEvalTask("social_iqa", "siqa/siqa.yaml", "social_iqa", ("acc",), choices=lambda r: 3),
    LmEvalTask("boolq", "super_glue/boolq/default.yaml", "boolq", ("acc",), choices=_two),
)

for _task in BENCHMARKS:
    register_lm_eval_task(_task, group=("commonsense", "perplexity", "all") if _task.name == "lambada_openai"
                          else ("commonsense", "all"),
                          description=f"lm-eval {_task.name} (zero-shot) on the local mirror")
register_lm_eval_group_folder(Path(__file__).parent / "lm_eval")
