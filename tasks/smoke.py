"""`smoke`: held-out perplexity on the run's own corpus, the cheapest check that a model learned."""

import math

import torch

from harness.data import prepare_streams
from harness.registry import register_task
from harness.train import autocast_for, heldout_loss


@register_task("smoke", group=("smoke",), description="held-out loss and perplexity on the training corpus")
def run(model, tokenizer, ctx):
    tcfg = ctx.cfg.train
    _, held = prepare_streams(tcfg.corpus, tokenizer, seed=tcfg.seed)
    max_tokens = tcfg.eval_tokens if ctx.limit is None else ctx.limit * tcfg.seq_len
    device = torch.device(ctx.device)
    loss, n = heldout_loss(model, held, tcfg.seq_len, max_tokens, tcfg.micro_batch, device,
                           autocast_for(device, tcfg.dtype))
    return [ctx.row("smoke", "loss", loss, n=n, split="heldout", corpus=tcfg.corpus),
            ctx.row("smoke", "ppl", math.exp(loss), n=n, split="heldout", corpus=tcfg.corpus)]
