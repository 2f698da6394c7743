"""WikiText perplexity through lm-eval's `wikitext` task (word perplexity, rolling windows).

The adapter's rolling windows are the training length long and disjoint (lm-eval's convention);
LAMBADA's perplexity comes with the `lambada_openai` task (tasks/commonsense.py), which is also in
this group. `wikitext_2_v1` runs the same task on the tokenized WikiText-2 v1 text, the copy the
mirror holds when the raw text is absent; its rows carry its own name, so the two never mix.
"""

from harness.registry import register_task
from tasks.commonsense import lm_eval_task

register_task("wikitext", group=("perplexity", "all"), data_parallel=True,
              description="lm-eval wikitext (WikiText-2 raw, document level): word perplexity")(
    lm_eval_task("wikitext"))
register_task("wikitext_2_v1", group=("perplexity", "all"), data_parallel=True,
              description="lm-eval's wikitext task on the tokenized WikiText-2 v1 text")(
    lm_eval_task("wikitext_2_v1"))
