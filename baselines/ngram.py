"""Count-based reference rows: an add-one unigram and an interpolated Kneser-Ney bigram
(harness/model/ngram.py), fitted by counting the run's training batches instead of by gradients.

Not parameter-matched (no `match`): their size is the number of distinct n-grams in the
training tokens, which is what a reference row of this kind reports as its `params`.
"""

from harness.model.ngram import NGramLM
from harness.registry import register_model


@register_model("unigram", family="n-gram",
                description="add-one unigram counted on the same training tokens")
def build_unigram(cfg):
    return NGramLM(cfg.vocab_size, order=1)


@register_model("bigram", family="n-gram",
                description="interpolated Kneser-Ney bigram counted on the same training tokens")
def build_bigram(cfg):
    return NGramLM(cfg.vocab_size, order=2)
