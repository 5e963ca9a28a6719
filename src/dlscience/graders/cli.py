"""``dlscience graders grade | probe | attack | template-ablation``: hidden biases of LLM essay graders on the
bundled SmolLM2-135M-Instruct (issue 21). The job logic is in :mod:`dlscience.graders.jobs`."""

from __future__ import annotations

import argparse

from dlscience import cli_options as opt

TEMPLATE_NAMES = ("chatml", "renamed-roles", "delimited", "plain")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``graders`` subcommand group to the top-level parser."""
    cmds = opt.add_study(
        sub,
        "graders",
        help="hidden biases of LLM essay graders: probe, adversarial suffix, chat-template ablation",
        description="An LLM essay grader (SmolLM2-135M-Instruct offline, grade read from the next-token "
        "distribution over 1-6) on the bundled 40-essay set: agreement and bias against human-style scores, "
        "a residual-stream probe for inflated grades, a GCG suffix that raises grades, and which template "
        "tokens carry the effect.",
    )
    p = opt.add_command(
        cmds,
        "grade",
        help="grade the essay set; bias, QWK and correlation with the human scores",
        description="Grade every bundled essay and write OUT/grades.json: per essay the expected and argmax "
        "grade and the score distribution; overall mean(LLM - human) with a bootstrap 95% interval, the "
        "quadratic-weighted kappa and Pearson r.",
        func=_run_grade,
    )
    _template(p)
    opt.add_run_options(p, out="out/graders-grade", seed=False, progress=False)

    p = opt.add_command(
        cmds,
        "probe",
        help="residual-stream probe that predicts inflated grades (held-out AUC)",
        description="Read the residual stream at the last prompt position of every layer, label essays whose "
        "expected grade exceeds the human score by >= --threshold, and fit a difference-of-means or logistic "
        "direction per layer; the layer is chosen by leave-one-prompt-out AUC inside the training prompts and "
        "judged on the held-out prompt (nested). Writes OUT/probe.json, probe.npz, probe.png.",
        func=_run_probe,
    )
    _template(p)
    p.add_argument(
        "--method", choices=("mean-difference", "logistic"), default="mean-difference", help="probe direction"
    )
    p.add_argument(
        "--threshold",
        type=opt.positive_float,
        default=1.0,
        help="inflated: grade - human >= this many points",
    )
    opt.add_run_options(p, out="out/graders-probe", seed=False, progress=False)

    p = opt.add_command(
        cmds,
        "attack",
        help="GCG suffix that raises grades; shift vs no suffix and vs random suffixes",
        description="Search a universal suffix (greedy coordinate gradient over one-hot suffix tokens, top-k "
        "candidates, exact batch evaluation, best-so-far) on a few essays of the training prompts, then grade "
        "the held-out prompt's essays with it, without it and with random suffixes of equal length. Writes "
        "OUT/attack.json and attack.png; the search resumes step by step.",
        func=_run_attack,
    )
    _template(p)
    p.add_argument("--objective", choices=("grade", "direction", "both"), default="grade",
                   help="maximise the expected grade, the probe projection, or both (standardised)")  # fmt: skip
    p.add_argument("--probe", default=None, help="folder of `graders probe` (for direction objectives)")
    p.add_argument("--suffix-length", type=opt.positive_int, default=10, help="suffix tokens")
    p.add_argument("--steps", type=opt.positive_int, default=20, help="GCG steps")
    p.add_argument("--search-width", type=opt.positive_int, default=32, help="candidates per step")
    p.add_argument("--topk", type=opt.positive_int, default=64, help="tokens kept per position")
    p.add_argument(
        "--attack-essays", type=opt.positive_int, default=4, help="essays the suffix is optimised on"
    )
    p.add_argument("--heldout-prompt", default="reading", help="prompt whose essays measure the effect")
    p.add_argument("--n-random", type=opt.positive_int, default=8, help="random suffixes in the baseline")
    opt.add_run_options(p, out="out/graders-attack", seed_help="seed of the candidate sampling")

    p = opt.add_command(
        cmds,
        "template-ablation",
        help="the suffix's effect under other chat templates; token ablation; magic words",
        description="For each chat template (chatml = SmolLM2's own, renamed-roles, delimited, plain): the grade "
        "bias on all essays and the attack suffix's shift on the held-out essays; which suffix tokens carry the "
        "shift; and whether role/template strings used as a suffix act as 'magic words' next to random words. "
        "Writes OUT/template_ablation.json.",
        func=_run_ablation,
    )
    p.add_argument("--attack", required=True, help="folder of a finished `graders attack`")
    opt.add_run_options(p, out="out/graders-template", seed=False, progress=False)


def _template(p):
    p.add_argument("--template", choices=TEMPLATE_NAMES, default="chatml", help="chat template of the prompt")


def _run_grade(args):
    from dlscience.graders.jobs import run_grade

    s = run_grade(args.out, template=args.template, overwrite=args.overwrite)["summary"]
    lo, hi = s["bias_ci95"]
    print(f"mean(LLM - human) = {s['bias_mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]; QWK {s['qwk_argmax']:.2f}; "
          f"Pearson r {s['pearson_r_expected']:.2f}; argmax grades {s['argmax_counts']}")  # fmt: skip
    print(f"wrote {args.out}/grades.json")


def _run_probe(args):
    from dlscience.graders.jobs import run_probe

    s = run_probe(args.out, template=args.template, method=args.method, threshold=args.threshold,
                  overwrite=args.overwrite)  # fmt: skip
    print(f"{s['n_inflated']}/{s['n_essays']} essays inflated; layer {s['layer']}; held-out AUC "
          f"{s['heldout_auc']:.2f} (per held-out prompt {', '.join(f'{a:.2f}' for a in s['heldout_auc_per_fold'])})")  # fmt: skip
    print(f"wrote {args.out}/probe.json, probe.npz, probe.png")


def _run_attack(args):
    from dlscience.graders.gcg import GCGConfig
    from dlscience.graders.jobs import run_attack

    cfg = GCGConfig(suffix_length=args.suffix_length, steps=args.steps, search_width=args.search_width,
                    topk=args.topk, seed=args.seed)  # fmt: skip
    s = run_attack(args.out, objective=args.objective, probe=args.probe, cfg=cfg, attack_essays=args.attack_essays,
                   heldout_prompt=args.heldout_prompt, n_random=args.n_random, template=args.template,
                   **opt.job_options(args))  # fmt: skip
    for key, name in (("shift_optimised", "optimised suffix"), ("shift_random", "random suffixes"),
                      ("optimised_minus_random", "optimised - random")):  # fmt: skip
        r = s[key]
        print(f"{name:>20}: grade shift {r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
    print(f"suffix {s['suffix']!r}; wrote {args.out}/attack.json, attack.png")


def _run_ablation(args):
    from dlscience.graders.jobs import run_template_ablation

    s = run_template_ablation(args.out, attack=args.attack, overwrite=args.overwrite)
    for name, row in s["templates"].items():
        b, sh = row["bias"], row["suffix_shift"]
        print(
            f"{name:>14}: bias {b['bias_mean']:+.2f}, suffix shift {sh['mean']:+.3f} [{sh['lo']:+.3f}, {sh['hi']:+.3f}]"
        )
    print(f"wrote {args.out}/template_ablation.json")
