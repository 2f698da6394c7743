"""Count-based reference language models: an add-one unigram and an interpolated Kneser-Ney bigram.

They answer "how much of a neural model's score does context beyond the current token buy?": a
row of each beside the neural rows of a run, estimated on exactly the tokens those models were
trained on (`harness.training.counting.fit_by_counting` visits the same batches) and scored by the same task
code. So they are modules with the shared model contract: `forward(input_ids)` gives logits
[B, T, V], here log-probabilities (log_softmax leaves them unchanged), and `init_state`, `step`,
`prefill`, `generate` let the decoding tasks run them.

    unigram   p(w) = (c(w) + 1) / (N + V)
    bigram    p(w | u) = max(c(u, w) - D, 0) / c(u) + D N1+(u .) / c(u) * p_cont(w)     (c(u) > 0)
              p(w | u) = p_cont(w)                                                        (c(u) = 0)
              p_cont(w) = max(N1+(. w) - D, 0) / N1+(. .) + D |{w : N1+(. w) > 0}| / N1+(. .) / V

c(u, w) counts the pair (u, w), c(u) = sum_w c(u, w), N1+(u .) the distinct tokens seen after u,
N1+(. w) the distinct tokens seen before w, N1+(. .) the distinct pairs. D = n1 / (n1 + 2 n2)
(Ney, Essen and Kneser 1994), n_k the number of pairs seen exactly k times, in the counts as the
run's batches give them (past one epoch, repeats included: the same tokens as the neural rows, at
the price of a discount estimated from repeated text). Nothing is tuned, so no held-out text is
read before the held-out loss. The continuation distribution p_cont rewards tokens that follow
many contexts rather than many times, and its uniform share leaves no token with probability 0
(held-out and benchmark text contain pairs and tokens that the training text lacks; one zero
would make a perplexity infinite).

Storage: the counts are buffers, so `model.safetensors` holds them like weights: the unigram's
[V] counts, the bigram's distinct pairs as sorted flat keys u * V + w with their counts (a
CSR matrix whose row pointers are recomputed). The number of pairs is known only after fitting,
so loading resizes the buffers to the stored ones; the probability tables are rebuilt from the
counts (`finish`) and never saved.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from harness.model.backbone import DecoderLM

# D when no pair occurs exactly once (a toy corpus, or a run of two epochs or more, which counts
# every pair of the split once per epoch): the formula then gives 0, which would leave unseen pairs
# no probability; 1/2 is the middle of the range (0, 1] the formula can give
DISCOUNT_WITHOUT_SINGLETONS = 0.5
# the largest V whose pair keys u * V + w (and the sentinel V * V above them) stay below 2^63
MAX_BIGRAM_VOCAB = math.isqrt(2 ** 63 - 1)


def _tally(index: torch.Tensor, size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [size]: how often each value occurs in `index` (weighted). index_add_ rather than
    bincount because it also runs on the meta device, where `harness list` builds models."""
    out = torch.zeros(size, dtype=torch.float64, device=index.device)
    return out.index_add_(0, index, torch.ones_like(index, dtype=torch.float64) if weights is None else weights)


class NGramLM(nn.Module):
    """Unigram (order 1) or interpolated Kneser-Ney bigram (order 2) over a vocabulary of V tokens;
    built empty (the uniform distribution), filled by `count` per batch and `finish`.

    The unigram is add-one (Laplace) smoothed: it has no lower order to back off to, and adding one
    to every count is the simplest estimate that gives each token a nonzero probability; its bias,
    V / (N + V) of the mass, vanishes at the token counts of a training run."""

    fitted_by_counting = True  # harness.training.counting counts the run's batches instead of running an optimizer

    def __init__(self, vocab_size: int, order: int):
        super().__init__()
        if order not in (1, 2):
            raise ValueError(f"NGramLM has orders 1 (unigram) and 2 (bigram), not {order}")
        if order == 2 and vocab_size > MAX_BIGRAM_VOCAB:
            raise ValueError(f"the bigram keys a pair as u * V + w in int64, so model.vocab_size must be at most "
                             f"{MAX_BIGRAM_VOCAB:,}, got {vocab_size}")
        self.vocab_size, self.order = vocab_size, order
        if order == 1:
            self.register_buffer("token_counts", torch.zeros(vocab_size, dtype=torch.long))
        else:
            self.register_buffer("pair_keys", torch.zeros(0, dtype=torch.long))  # sorted u * V + w
            self.register_buffer("pair_counts", torch.zeros(0, dtype=torch.long))
        self.finish()

    def _count_names(self) -> tuple[str, ...]:
        return ("token_counts",) if self.order == 1 else ("pair_keys", "pair_counts")

    def num_counts(self) -> int:
        """Nonzero counts held (distinct tokens seen, or distinct pairs): the numbers the estimate
        is made of, the count model's analogue of a parameter count."""
        return int((self.token_counts > 0).sum()) if self.order == 1 else len(self.pair_keys)

    @torch.no_grad()
    def count(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: the bigram counts its pairs (inputs[b, t], targets[b, t]), exactly the
        next-token predictions a neural model is trained on in that batch (the end-of-document
        token is an ordinary token: it is the context of the next packed document's first token, as
        it is for them); the unigram counts the targets. Call `finish` after the last batch."""
        V = self.vocab_size
        inputs, targets = inputs.reshape(-1).long(), targets.reshape(-1).long()
        for ids in (inputs, targets):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
                raise ValueError(f"token ids must lie in [0, {V}) (model.vocab_size); got {int(ids.min())}.."
                                 f"{int(ids.max())}")
        if self.order == 1:
            self.token_counts += _tally(targets, V).long()
            return
        new_keys, new_counts = torch.unique(inputs * V + targets, return_counts=True)
        keys, where = torch.unique(torch.cat([self.pair_keys, new_keys]), return_inverse=True)
        self.pair_counts = torch.zeros_like(keys).index_add_(0, where, torch.cat([self.pair_counts, new_counts]))
        self.pair_keys = keys

    @torch.no_grad()
    def finish(self) -> None:
        """Build the probability tables from the counts (non-persistent buffers: they move with the
        model, and the checkpoint holds only the counts they are computed from)."""
        V = self.vocab_size
        if self.order == 1:
            counts = self.token_counts.double()
            self.register_buffer("log_probs", ((counts + 1) / (counts.sum() + V)).log().float(), persistent=False)
            return
        if self.pair_keys.is_meta:  # built only to be looked at (`harness list`, checks): no counts to make tables
            return                  # of, and meta's floor division alone imports torch._dynamo (~1.5 s)
        context, following = self.pair_keys // V, self.pair_keys % V
        counts = self.pair_counts.double()
        n1, n2 = (self.pair_counts == 1).sum().double(), (self.pair_counts == 2).sum().double()
        discount = torch.where(n1 > 0, n1 / (n1 + 2 * n2), DISCOUNT_WITHOUT_SINGLETONS)
        pairs = len(self.pair_keys)
        before = _tally(following, V)  # N1+(. w)
        if pairs:
            p_cont = ((before - discount).clamp_min(0) + discount * (before > 0).sum() / V) / pairs
        else:
            p_cont = torch.full_like(before, 1.0 / V)
        total, after = _tally(context, V, counts), _tally(context, V)  # c(u), N1+(u .)
        backoff = torch.where(total > 0, discount * after / total, 1.0)
        row_ptr = torch.cat([torch.zeros(1, dtype=torch.long, device=context.device), after.long().cumsum(0)])
        sentinel = torch.full((1,), V * V, dtype=torch.long, device=context.device)  # above every key
        tables = {"discount": discount.float(), "p_cont": p_cont.float(), "backoff": backoff.float(),
                  "row_ptr": row_ptr, "following": following,
                  # the keys and discounted probabilities, each closed by an entry that no key
                  # matches, so that a search for any pair lands on an entry
                  "lookup_keys": torch.cat([self.pair_keys, sentinel]),
                  "discounted": torch.cat([(counts - discount) / total[context], torch.zeros(1, dtype=counts.dtype,
                                           device=counts.device)]).float()}
        for name, table in tables.items():
            self.register_buffer(name, table, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        """Resize the count buffers to the stored ones first (a freshly built model is empty, and
        the number of pairs is known only after fitting), then rebuild the tables."""
        names = [prefix + name for name in self._count_names()]
        for name, key in zip(self._count_names(), names):
            if key in state_dict:
                setattr(self, name, getattr(self, name).new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args)
        if all(key in state_dict for key in names):
            self.finish()

    def _rows(self, contexts: torch.Tensor) -> torch.Tensor:
        """p(. | u) [U, V] for distinct contexts u [U]: the continuation distribution times each
        context's back-off weight, plus its discounted pair counts (its CSR row), scattered."""
        rows = self.backoff[contexts, None] * self.p_cont[None, :]
        start = self.row_ptr[contexts]
        length = self.row_ptr[contexts + 1] - start
        n = int(length.sum())
        row = torch.repeat_interleave(torch.arange(len(contexts), device=contexts.device), length, output_size=n)
        first = torch.repeat_interleave(start - (length.cumsum(0) - length), length, output_size=n)
        entry = first + torch.arange(n, device=contexts.device)
        return rows.index_put_((row, self.following[entry]), self.discounted[entry], accumulate=True)

    def target_log_probs(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(targets[b, t] | input_ids[b, t]) [B, T], without the [B, T, V] table: each pair is
        looked up in the sorted keys."""
        if self.order == 1:
            return self.log_probs[targets]
        keys = input_ids * self.vocab_size + targets
        entry = torch.searchsorted(self.lookup_keys, keys)
        seen = torch.where(self.lookup_keys[entry] == keys, self.discounted[entry], 0.0)
        return (self.backoff[input_ids] * self.p_cont[targets] + seen).log()

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities [B, T, V] of the next token as logits; with `targets` [B, T] their mean
        cross-entropy instead, as DecoderLM.forward. cu_seqlens (packed documents) changes nothing:
        a prediction depends on the current token alone, and every model predicts a document's
        first token from the end-of-document token before it."""
        if targets is not None:
            return -self.target_log_probs(input_ids, targets.reshape(input_ids.shape)).mean()
        if self.order == 1:
            return self.log_probs.expand(*input_ids.shape, self.vocab_size)
        contexts, where = torch.unique(input_ids, return_inverse=True)
        return self._rows(contexts).log()[where]

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The decode state: each sequence's last token (-1 before the first). The next token's
        distribution depends on the token fed to `step` alone, so the state is only returned."""
        return torch.full((batch_size,), -1, dtype=torch.long, device=device or next(self.buffers()).device)

    def step(self, input_ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [B, V] after input_ids [B] (or [B, 1]), and the new state."""
        tokens = input_ids.reshape(-1, 1)
        return self(tokens)[:, -1], tokens[:, 0]

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(input_ids), input_ids[:, -1]

    generate = DecoderLM.generate  # the same greedy / sampling loop over prefill and step
