"""The n-gram reference rows: Kneser-Ney and Laplace values against hand computation, the model
contract on fitted models, checkpoints, and fitting on exactly the tokens a neural run sees."""

import json
import math
from collections import Counter
from fractions import Fraction as Fr
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.config import ConfigError, load_config
from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.model.ngram import DISCOUNT_WITHOUT_SINGLETONS, NGramLM
from harness.training.checkpoint import (
    CHECKPOINT_DIR,
    META_FILE,
    TRAINER_FILE,
    load_checkpoint,
)
from harness.training.counting import fit_by_counting
from harness.training.train import train

# 8 steps of 4 sequences x 64 tokens
SHORT = ["train.tokens=2048", "train.batch_tokens=256", "train.seq_len=64", "train.micro_batch=2",
         "train.eval_tokens=1024"]


def fitted(order: int, tokens: torch.Tensor, vocab: int) -> NGramLM:
    model = NGramLM(vocab, order)
    model.count(tokens[:, :-1], tokens[:, 1:])
    model.finish()
    return model


def probs(model: NGramLM, contexts: list[int]) -> torch.Tensor:
    """p(. | u) [len(contexts), V] in float64."""
    return model(torch.tensor([contexts])).double().exp()[0]


# ---------------------------------------------------------------- the estimates

def test_kneser_ney_against_hand_computation():
    # pairs of 0 1 0 1 2 0 2: (0,1) twice, (1,0), (1,2), (2,0), (0,2) once; token 3 never seen
    model = fitted(2, torch.tensor([[0, 1, 0, 1, 2, 0, 2]]), vocab=4)
    D = Fr(4, 4 + 2 * 1)  # n1 = 4, n2 = 1
    assert float(model.discount) == pytest.approx(float(D))
    # N1+(. w) = 2, 1, 2, 0 over 5 distinct pairs; 3 tokens follow something
    p_cont = [(max(n - D, 0) + D * 3 / 4) / 5 for n in (2, 1, 2, 0)]
    assert p_cont == [Fr(11, 30), Fr(1, 6), Fr(11, 30), Fr(1, 10)]
    # context 0: c(0) = 3, two distinct successors, back-off weight D * 2 / 3 = 4/9
    after_0 = [Fr(4, 9) * p_cont[0], (2 - D) / 3 + Fr(4, 9) * p_cont[1], (1 - D) / 3 + Fr(4, 9) * p_cont[2],
               Fr(4, 9) * p_cont[3]]
    assert after_0 == [Fr(22, 135), Fr(14, 27), Fr(37, 135), Fr(2, 45)]
    # context 1: c(1) = 2, successors 0 and 2, back-off weight D * 2 / 2 = 2/3
    after_1 = [(1 - D) / 2 + Fr(2, 3) * p_cont[0], Fr(2, 3) * p_cont[1], (1 - D) / 2 + Fr(2, 3) * p_cont[2],
               Fr(2, 3) * p_cont[3]]
    got = probs(model, [0, 1, 3])
    for row, expected in zip(got, (after_0, after_1, p_cont)):  # 3 was never a context: p_cont itself
        torch.testing.assert_close(row, torch.tensor([float(x) for x in expected], dtype=torch.float64),
                                   rtol=1e-6, atol=0)


def test_unigram_is_add_one_smoothed_and_ignores_the_context():
    model = fitted(1, torch.tensor([[4, 0, 0, 1, 3]]), vocab=5)  # targets 0 0 1 3: N = 4
    expected = torch.tensor([3, 2, 1, 2, 1], dtype=torch.float64) / 9  # (c + 1) / (N + V)
    got = probs(model, [0, 2, 4])
    for row in got:
        torch.testing.assert_close(row, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("repeats", [1, 2])  # 2: every pair occurs twice, no singletons to estimate D from
def test_kneser_ney_rows_sum_to_one_for_seen_and_unseen_contexts(repeats):
    g = torch.Generator().manual_seed(0)
    V = 23
    tokens = torch.randint(0, V - 5, (3, 40), generator=g).repeat(repeats, 1)  # the last 5 never occur
    model = fitted(2, tokens, V)
    if repeats == 2:
        assert float(model.discount) == DISCOUNT_WITHOUT_SINGLETONS
    rows = probs(model, list(range(V)))
    assert torch.all(rows > 0)
    torch.testing.assert_close(rows.sum(-1), torch.ones(V, dtype=torch.float64), rtol=0, atol=1e-5)
    unseen = probs(model, [V - 1, V - 2])
    torch.testing.assert_close(unseen[0], unseen[1])  # an unseen context falls back to p_cont


@pytest.mark.parametrize("order", [1, 2])
def test_counting_in_batches_equals_counting_everything_at_once(order):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 17, (6, 33), generator=g)
    once = fitted(order, tokens, 17)
    parts = NGramLM(17, order)
    for rows in (tokens[:1], tokens[1:4], tokens[4:]):
        parts.count(rows[:, :-1], rows[:, 1:])
    parts.finish()
    for name, buffer in once.state_dict().items():
        assert torch.equal(parts.state_dict()[name], buffer), name
    assert torch.equal(parts(tokens), once(tokens))
    expected = len(Counter(zip(tokens[:, :-1].flatten().tolist(), tokens[:, 1:].flatten().tolist()))) \
        if order == 2 else len(set(tokens[:, 1:].flatten().tolist()))
    assert once.num_counts() == expected


def test_out_of_vocabulary_ids_are_refused():
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        NGramLM(5, 2).count(torch.tensor([[1, 2]]), torch.tensor([[3, 5]]))


# ---------------------------------------------------------------- the model contract, fitted

@pytest.mark.parametrize("order", [1, 2])
def test_fitted_models_keep_the_model_contract(order):
    g = torch.Generator().manual_seed(2)
    V = 257
    model = fitted(order, torch.randint(0, V, (8, 200), generator=g), V).eval()
    x = torch.randint(0, V, (2, 45), generator=g)
    full = model(x)
    assert full.shape == (2, 45, V)
    # the loss through `targets` is the cross-entropy of the logits
    loss = model(x[:, :-1], targets=x[:, 1:])
    assert float(loss) == pytest.approx(float(F.cross_entropy(full[:, :-1].flatten(0, 1), x[:, 1:].flatten())),
                                        rel=1e-5)
    # decoding: step and prefill equal the forward, generate is its argmax
    state = model.init_state(2)
    stepped = []
    for t in range(45):
        logits, state = model.step(x[:, t], state)
        stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), full)
    prefill, state = model.prefill(x[:, :30])
    torch.testing.assert_close(prefill, full[:, :30])
    torch.testing.assert_close(model.step(x[:, 30], state)[0], full[:, 30])
    seq = x[:, :6]
    for _ in range(5):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(model.generate(x[:, :6], 5), seq[:, 6:])
    # causality: the future never changes the past; the bigram reads the current token
    y = x.clone()
    y[:, 25:] = (x[:, 25:] + 1) % V
    torch.testing.assert_close(model(y)[:, :25], full[:, :25])
    assert torch.allclose(model(y)[:, 25:], full[:, 25:]) == (order == 1)


# ---------------------------------------------------------------- fitting inside `harness train`

@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """A bigram fitted by `train` on the short run's 2048 tokens."""
    run_dir = tmp_path_factory.mktemp("bigram")
    cfg = load_config("tiny", overrides=SHORT)
    return run_dir, cfg, train("bigram", cfg, run_dir, "cpu")


def test_checkpoint_round_trip_and_meta_keys(counted, tmp_path):
    run_dir, cfg, result = counted
    ckpt = run_dir / CHECKPOINT_DIR
    model, _, name, meta = load_checkpoint(ckpt)
    x = torch.randint(0, cfg.model.vocab_size, (3, 50))
    assert name == "bigram" and torch.equal(model(x), result.model(x))
    assert meta["params"] == result.model.num_counts() > 0 and meta["tokens"] == 2048
    assert meta["heldout_loss"] == result.heldout_loss
    neural = train("transformer", cfg, tmp_path, "cpu")  # the same files and meta keys as a gradient run
    neural_meta = json.loads((neural.checkpoint / META_FILE).read_text())
    assert set(meta) == set(neural_meta)
    trainer = torch.load(ckpt / TRAINER_FILE, weights_only=True)
    assert set(trainer) == set(torch.load(neural.checkpoint / TRAINER_FILE, weights_only=True))
    assert (trainer["step"], trainer["position"]) == (8, 32)


def test_a_finished_fit_is_reused_and_a_longer_one_counts_on(counted, tmp_path):
    run_dir, cfg, result = counted
    again = train("bigram", cfg, run_dir, "cpu")
    assert again.seconds == 0.0 and again.heldout_loss == result.heldout_loss
    half = load_config("tiny", overrides=SHORT + ["train.tokens=1024"])
    train("bigram", half, tmp_path, "cpu")
    longer = train("bigram", cfg, tmp_path, "cpu")  # 4 more steps counted onto the first 4
    for key, value in result.model.state_dict().items():
        assert torch.equal(longer.model.state_dict()[key], value), key
    assert longer.heldout_loss == result.heldout_loss
    with pytest.raises(ConfigError, match="train.tokens"):  # fewer tokens than it counted: not a resumption
        train("bigram", half, run_dir, "cpu")


def test_fitting_is_one_process():
    """Also refused by the checks before any work: `torchrun ... harness run --models swat,bigram`
    trained and scored swat, then stopped at bigram."""
    from harness.evaluation.sources import check_trainable
    cfg = load_config("tiny", overrides=SHORT)
    with pytest.raises(ConfigError, match="fitted by counting, in one process"):
        fit_by_counting(NGramLM(257, 2), "bigram", cfg, None, None, None, 2, SimpleNamespace(world_size=2), "bytes")
    check_trainable("bigram", cfg, "cpu", 1)
    with pytest.raises(ConfigError, match="bigram is fitted by counting, in one process; run it without torchrun"):
        check_trainable("bigram", cfg, "cpu", 2)


def test_counts_are_those_of_the_runs_training_sequences(tmp_path):
    """An independent count over the sequences the gradient loop visits, more than one epoch of
    them: the seeded permutation of each epoch, window by window, from the token file."""
    cfg = load_config("tiny", overrides=["train.seq_len=128", "train.batch_tokens=1024", "train.micro_batch=8",
                                         "train.tokens=344064", "train.eval_tokens=1024"])  # 336 steps x 8
    tcfg = cfg.train
    result = train("bigram", cfg, tmp_path, "cpu")
    stream, _ = prepare_streams(tcfg.corpus, get_tokenizer(tcfg.tokenizer))
    n, total = stream.num_sequences(tcfg.seq_len), tcfg.tokens // tcfg.seq_len
    assert total > n  # the run repeats sequences: a second epoch in another order
    pairs = Counter()
    for k in range(total):
        epoch, i = divmod(k, n)
        lo = int(np.random.default_rng([tcfg.seed, epoch]).permutation(n)[i]) * tcfg.seq_len
        window = stream.tokens[lo:lo + tcfg.seq_len + 1].tolist()
        pairs.update(zip(window[:-1], window[1:]))
    V = cfg.model.vocab_size
    got = dict(zip(result.model.pair_keys.tolist(), result.model.pair_counts.tolist()))
    assert got == {u * V + w: c for (u, w), c in pairs.items()}
    assert sum(got.values()) == tcfg.tokens


# ---------------------------------------------------------------- end to end through the CLI

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    from harness.cli import main
    root = tmp_path_factory.mktemp("cli")
    dirs = ["--results", str(root / "results"), "--runs", str(root / "runs"), "--device", "cpu"]
    assert main(["run", "--models", "unigram,bigram", "--tasks", "smoke", "--preset", "tiny", *dirs]) == 0
    return main, root, dirs


def rows_of(root):
    return [json.loads(line) for line in (root / "results" / "tiny" / "rows.jsonl").read_text().splitlines()]


def test_harness_run_gives_bigram_below_unigram_below_uniform(cli_run):
    _, root, _ = cli_run
    loss = {r["model"]: r["value"] for r in rows_of(root) if r["task"] == "smoke" and r["metric"] == "loss"}
    assert loss["bigram"] < loss["unigram"] < math.log(257)
    for name in ("unigram", "bigram"):
        meta = json.loads((root / "results" / "tiny" / "train" / f"{name}_meta.json").read_text())
        assert meta["heldout_loss"] == pytest.approx(loss[name]) and meta["tokens"] == 65536


def test_harness_eval_runs_lm_eval_tasks_on_the_checkpoints(cli_run):
    pytest.importorskip("lm_eval")
    main, root, dirs = cli_run
    assert main(["eval", "--run", "tiny", "--tasks", "wikitext_2_v1,lambada_openai", "--limit", "4",
                 "--bootstrap-iters", "20", *dirs]) == 0
    rows = {(r["model"], r["task"], r["metric"]): r for r in rows_of(root)}
    for name in ("unigram", "bigram"):
        assert rows[(name, "lambada_openai", "acc")]["n"] == 4
        assert math.isfinite(rows[(name, "lambada_openai", "perplexity")]["value"])
    bits = {name: rows[(name, "wikitext_2_v1", "bits_per_byte")]["value"] for name in ("unigram", "bigram")}
    assert bits["bigram"] < bits["unigram"] < 8


# ---------------------------------------------------------------- against a plain reference

def reference_rows(tokens: torch.Tensor, V: int, order: int) -> np.ndarray:
    """p(w | u) [V, V] in float64, the formulas of harness/model/ngram.py written out with Counters."""
    targets = tokens[:, 1:].flatten().tolist()
    if order == 1:
        seen = Counter(targets)
        return np.tile([(seen[w] + 1) / (len(targets) + V) for w in range(V)], (V, 1))
    pairs = Counter(zip(tokens[:, :-1].flatten().tolist(), targets))
    n1, n2 = (sum(c == k for c in pairs.values()) for k in (1, 2))
    D = n1 / (n1 + 2 * n2) if n1 else DISCOUNT_WITHOUT_SINGLETONS
    before = Counter(w for _, w in pairs)
    p_cont = np.array([(max(before[w] - D, 0) + D * len(before) / V) / len(pairs) for w in range(V)])
    rows = np.tile(p_cont, (V, 1))
    for u in range(V):
        total = sum(c for (a, _), c in pairs.items() if a == u)
        if total:
            rows[u] *= D * sum(a == u for a, _ in pairs) / total
            for (a, w), c in pairs.items():
                if a == u:
                    rows[u, w] += (c - D) / total
    return rows


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_every_row_equals_a_plain_reference_and_sums_to_one(order, seed):
    """Skewed text over part of the vocabulary (contexts and tokens never seen), on odd seeds
    counted twice as a two-epoch run counts it (no pair seen once: the fallback discount)."""
    g = np.random.default_rng(seed)
    V = int(g.integers(5, 40))
    tokens = torch.from_numpy(np.minimum(g.zipf(1.5, size=(3, 30)) - 1, V - 1))
    if seed % 2:
        tokens = tokens.repeat(2, 1)
    expected = reference_rows(tokens, V, order)
    np.testing.assert_allclose(expected.sum(1), 1, rtol=0, atol=1e-12)
    model = fitted(order, tokens, V)
    np.testing.assert_allclose(probs(model, list(range(V))).numpy(), expected, rtol=1e-5, atol=0)
    # the scoring path without the [B, T, V] table gives the same values, unseen pairs included
    x = torch.from_numpy(g.integers(0, V, size=(2, 25)))
    np.testing.assert_allclose(model.target_log_probs(x[:, :-1], x[:, 1:]).double().exp().numpy(),
                               expected[x[:, :-1], x[:, 1:]], rtol=1e-5, atol=0)


def test_lm_eval_scores_the_first_token_after_the_end_of_document_token():
    """WikiText-2's rolling windows through the adapter, as for the neural rows: every token scored
    once, the first from the end-of-document token (as a packed training document's first token)."""
    pytest.importorskip("lm_eval")
    from harness.evaluation.lm_eval_adapter import HarnessLM
    tokenizer = get_tokenizer("bytes")
    V = tokenizer.vocab_size
    text = tokenizer.encode("the cat sat on the mat; the dog sat on the log. " * 3)
    model = fitted(2, torch.tensor([[tokenizer.eos_id] + text]), V)
    lm = HarnessLM(model=model, tokenizer=tokenizer, device="cpu", max_length=16, progress=False)
    windows = [(None, context, continuation) for context, continuation in lm.rolling_windows(text)]
    total = sum(score for score, _ in lm._loglikelihood_tokens(windows, share_contexts=False))
    ids = torch.tensor([[tokenizer.eos_id] + text])
    assert total == pytest.approx(float(model.target_log_probs(ids[:, :-1], ids[:, 1:]).double().sum()), rel=1e-5)
