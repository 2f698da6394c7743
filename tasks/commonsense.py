"""The paper's eight zero-shot benchmarks through lm-eval (its prompts, scoring and task versions).

Each benchmark is a harness task of the same name as lm-eval's task; its rows hold every metric
lm-eval reports (acc and acc_norm where both exist, LAMBADA's perplexity), with `paper_metric`
marking the one the paper's table uses. Data comes from the local mirror (`harness data list`);
a missing dataset fails before the model is touched, naming the path and the fetch command.
"""

from harness.registry import register_task

COMMONSENSE = ("lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "social_iqa", "boolq")


def lm_eval_task(name: str):
    """The runner of lm-eval task `name`; lm-eval is imported only when a task runs (it is an
    optional dependency, and slow to import). Under torchrun lm-eval shards the requests over the
    ranks (registered with data_parallel=True)."""
    def run(model, tokenizer, ctx):
        from harness.evaluate import lm_eval_task_rows
        return lm_eval_task_rows(name, model, tokenizer, ctx)
    return run


for _name in COMMONSENSE:
    _groups = ("commonsense", "perplexity", "all") if _name == "lambada_openai" else ("commonsense", "all")
    register_task(_name, group=_groups, data_parallel=True,
                  description=f"lm-eval {_name} (zero-shot) on the local mirror")(lm_eval_task(_name))
