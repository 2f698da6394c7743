"""WikiText perplexity through lm-eval's `wikitext` task (word perplexity, rolling windows).

The adapter's rolling windows are the training length long and disjoint (lm-eval's convention);
LAMBADA's perplexity comes with the `lambada_openai` task (tasks/commonsense.py), which is also in
this group. `wikitext_2_v1` runs the same task on the tokenized WikiText-2 v1 text, the copy the
mirror holds when the raw text is absent; its rows carry its own name, so the two never mix.
"""

from harness.evaluation.lm_eval_tasks import LmEvalTask, register_lm_eval_task

register_lm_eval_task(LmEvalTask("wikitext", "wikitext/wikitext.yaml", "wikitext", ("word_perplexity",)),
                      group=("perplexity", "all"),
                      description="lm-eval wikitext (WikiText-2 raw, document level): word perplexity")
register_lm_eval_task(LmEvalTask("wikitext_2_v1", "wikitext/wikitext.yaml", "wikitext_2_v1", ("word_perplexity",),
                                 hub_config="wikitext-2-v1"),
                      group=("perplexity", "all"),
                      description="lm-eval's wikitext task on the tokenized WikiText-2 v1 text")
