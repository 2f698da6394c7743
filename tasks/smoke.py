"""`smoke`: held-out loss and perplexity on the run's own corpus, the cheapest check that a model
learned; also per corpus source (rows with a `corpus_source` key), since one number over a mix of
dictionary entries, technical documentation and books says little about any of them."""

import torch

from harness.data.streams import prepare_streams
from harness.registry import register_task
from harness.training.heldout import heldout_score, perplexity, scored_sequences
from harness.training.recipe import autocast_for


@register_task("smoke", group=("smoke",), description="held-out loss and perplexity on the training corpus")
def run(model, tokenizer, ctx):
    tcfg = ctx.cfg.train
    _, held = prepare_streams(tcfg.corpus, tokenizer)
    full = scored_sequences(held, tcfg.seq_len, tcfg.eval_tokens)  # what a complete evaluation scores
    device = torch.device(ctx.device)
    score = heldout_score(model, held, tcfg.seq_len, ctx.take(full) * tcfg.seq_len, tcfg.micro_batch, device,
                          autocast_for(device, tcfg.dtype))
    where = {"split": "heldout", "corpus": tcfg.corpus, "limit": ctx.limit_if_cut(full)}
    rows = [ctx.row("smoke", "loss", score.loss, n=score.tokens, **where),
            ctx.row("smoke", "ppl", perplexity(score.loss), n=score.tokens, **where)]
    if len(score.by_source) > 1:
        rows += [ctx.row("smoke", "loss", loss, n=n, **where, corpus_source=source)
                 for source, (loss, n) in sorted(score.by_source.items())]
    return rows

