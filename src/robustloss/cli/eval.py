"""``robustloss eval``: attack a model, a run robustloss trained or any other, through ``run_evaluation``.

The flags become an ``EvaluateConfig`` exactly as an experiment file's ``evaluate:`` block does (and are
validated the same way, before any data is loaded): ``--config FILE`` gives the base (a YAML mapping of
``EvaluateConfig`` keys, or a file with an ``evaluate:`` block), and every flag given on the command line
overrides it. ``--standard`` replaces the attack list with the standard ensemble
(``robustloss.evaluate.standard``) in worst-case mode.

The model is a run folder of ``robustloss train``, or ``--model package.module:factory --weights FILE
--dataset NAME`` for a model robustloss did not train.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any

from robustloss.cli.common import add_common
from robustloss.config import parse_number, read_yaml_value
from robustloss.errors import ConfigError

DEFAULT_ATTACKS = "fgsm,bim,pgd,mim"
DEFAULT_EPS = "0.1,0.2,0.3"
# The field's budget conventions (documented in the README): the PC paper's 0.1/0.2/0.3 on gray digits,
# 8/255 (CIFAR-10, RobustBench) on colour images; for L2, 2.0 on gray digits and 0.5 on colour.
CONVENTIONAL_EPS = {("linf", 1): DEFAULT_EPS, ("linf", 3): "8/255", ("l2", 1): "2.0", ("l2", 3): "0.5"}


def conventional_eps(dataset: str | None, norm: str = "linf") -> str:
    """The default --eps for ``dataset``: by its number of colour channels (gray or RGB)."""
    from robustloss.data import DATASETS

    channels = DATASETS.get(dataset).image_shape[0] if dataset and dataset in DATASETS else 1
    return CONVENTIONAL_EPS.get((norm, channels), DEFAULT_EPS)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="attack a trained run or any model: paper table, worst case, standard "
                                     "ensemble, gradient-masking diagnostics")
    ev.add_argument("run", nargs="?", help="run directory written by `robustloss train` (or use --model)")
    ev.add_argument("--model", metavar="MODULE:FACTORY",
                    help="a model robustloss did not train: a callable returning an nn.Module ([0, 1] images -> "
                         "logits); needs --dataset, and --weights unless the factory loads its own")
    ev.add_argument("--weights", help="weights for --model: a .safetensors file or a state dict (weights_only)")
    ev.add_argument("--dataset", help="dataset to evaluate --model on (see `robustloss data list`)")
    ev.add_argument("--config", help="YAML file of evaluate settings (EvaluateConfig keys); flags override it. "
                                     "Without an attacks: key the default attacks run; an empty attacks: [] is "
                                     "refused (nothing to evaluate)")
    ev.add_argument("--standard", action="store_true",
                    help="the standard ensemble (APGD-CE, APGD-T, FAB-T, Square; AutoAttack's order, worst case)")
    ev.add_argument("--version", choices=["standard", "plus", "rand"],
                    help="with --standard: plus (more restarts) or rand (EOT, for randomised models); default: "
                         "rand for a stochastic model, else standard")
    ev.add_argument("--norm", choices=["linf", "l2"], default="linf", help="with --standard: the threat model")
    ev.add_argument("--attacks", help=f"comma-separated attack or preset names (default {DEFAULT_ATTACKS}; see "
                                      "`robustloss attacks`)")
    ev.add_argument("--compare", metavar="TABLE", choices=["pc-table1"],
                    help="print a paper's numbers beside ours (pc-table1: the PC paper's Table 1). Without it, "
                         "only a run trained exactly like one of the paper's models gets them")
    ev.add_argument("--eps", help="comma-separated budgets on [0, 1] images (default: the dataset's convention: "
                                  "0.1,0.2,0.3 on gray digits, 8/255 on colour images; with --norm l2, 2.0 and "
                                  "0.5), written "
                                  "0.03, 3e-2 or 8/255; 'none' or 'inf' runs minimum-norm attacks unbounded. "
                                  "L-inf budgets above 1 are refused (they allow any image: most likely 0-255 "
                                  "units); L2 budgets above 1 are fine")
    ev.add_argument("--steps", type=int, help="override the iterative attacks' step count")
    ev.add_argument("--step-size", type=float, help="override the iterative attacks' step size")
    ev.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                    help="attack parameter, e.g. cw.confidence=10 or pgd.restarts=5 (repeatable)")
    ev.add_argument("--objective",
                    help="attack objective: adaptive (the one that fits the model's training loss; default), "
                         "ce, cw, dlr, mmc")
    ev.add_argument("--targeted", action="store_true", help="targeted attacks with random wrong-class targets")
    ev.add_argument("--mode", choices=["protocol", "worst-case"],
                    help="protocol: every attack on every sample (the papers' tables; default); worst-case: later "
                         "attacks only on samples still standing (faster, same worst case)")
    ev.add_argument("--diagnostics", action="store_true",
                    help="add probe attacks and a gradient probe, then print the gradient-masking checks")
    ev.add_argument("--save-adv", action="store_true", help="save successful adversarial examples under OUT/adversarial")
    ev.add_argument("--no-cache", action="store_true", help="do not keep finished chunks (no resume)")
    ev.add_argument("--n-test", type=int, help="evaluate only the first N test samples (N >= 1)")
    ev.add_argument("--defense", help="attack the model behind an inference-time defence, e.g. random-resize-pad")
    ev.add_argument("--defense-param", action="append", default=[], metavar="KEY=VALUE",
                    help="defence parameter, e.g. draws=5 (repeatable)")
    ev.add_argument("--redraws", type=int, metavar="K",
                    help="if the model is stochastic (e.g. behind --defense), repeat every final prediction K "
                         "more times and report the accuracy's mean and spread over draws (0 = off; default 10)")
    ev.add_argument("--precision", choices=["fp32", "bf16"],
                    help="bf16: budgeted attacks take their gradient steps under bf16 autocast (faster on "
                         "GPUs); every verdict is still an fp32 forward pass, and C&W/DeepFool stay fp32")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--seed", type=int)
    ev.add_argument("--out", help="where to write results (default: RUN/eval, or eval-<dataset> for --model)")
    add_common(ev)
    ev.set_defaults(handler=cmd_eval)


def eval_config(args: argparse.Namespace, num_classes: int = 10, adaptive: str | None = None,
                version: str | None = None):
    """The ``EvaluateConfig`` that ``robustloss eval``'s flags describe (validated, nothing loaded yet)."""
    from robustloss.config import from_dict, load_yaml
    from robustloss.evaluate.config import EvaluateConfig

    raw: dict[str, Any] = {}
    if args.config:
        raw = load_yaml(args.config)
        if isinstance(raw, dict) and isinstance(raw.get("evaluate"), dict):
            raw = raw["evaluate"]
        if not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: expected a mapping of evaluate settings")
    if raw.get("attacks") == [] and not (args.attacks or args.standard):
        raise ConfigError(f"{args.config}: attacks: is an empty list: nothing to evaluate; list at least one "
                          "attack, leave the key out for the defaults, or pass --attacks")
    raw = dict(raw)
    from_flags = {}
    for key, value in (("n_test", args.n_test), ("batch_size", args.batch_size), ("seed", args.seed),
                       ("mode", args.mode), ("precision", args.precision), ("redraws", args.redraws),
                       ("objective", args.objective)):
        if value is not None:
            raw[key] = from_flags[key] = value
    if args.diagnostics or args.standard:  # the standard evaluation always reports its diagnostics
        raw["diagnostics"] = True
    elif not args.config:  # from flags alone, probes run only when asked for (they cost attack time)
        raw["diagnostics"] = False
    if args.defense:
        raw["defense"] = {"name": args.defense, "params": _key_values("--defense-param", args.defense_param)}
    elif args.defense_param:
        raise ConfigError("--defense-param needs --defense NAME")
    try:
        config = from_dict(EvaluateConfig, raw, path="evaluate")
    except ConfigError as err:  # name the flag the user typed, not the config key it became
        message = str(err)
        for key in from_flags:
            message = message.replace(f"evaluate.{key}", "--" + key.replace("_", "-"))
        if args.config and not message.startswith("--"):  # the rest came from the file: say which
            message = f"{args.config}: {message}"
        raise ConfigError(message) from None
    if args.standard:
        attacks = _standard_attacks(args, num_classes, adaptive, version or args.version or "standard")
        overrides = dict(config.overrides)
        for attack, params in _attack_params(args.param).items():  # --param square.n_queries=1000
            overrides[attack] = {**overrides.get(attack, {}), **params}
        config = dataclasses.replace(config, attacks=attacks, mode="worst-case", objective=None, overrides=overrides)
    elif args.attacks or args.eps or not config.attacks:
        config = dataclasses.replace(config, attacks=_flag_attacks(args))
    _check_plan(config)
    return config


def _check_plan(config) -> None:
    """Build every attack of the plan at every budget, refuse L-inf budgets above 1, and refuse
    overrides that name no attack of the plan."""
    if not config.attacks:
        raise ConfigError("the plan has no attack: nothing to evaluate (see `robustloss attacks`)")
    names = {n for spec in config.attacks for n in (spec.attack, spec.name, spec.resolved()[0])}
    stray = sorted(set(config.overrides) - names)
    if stray:
        raise ConfigError(f"parameters given for {', '.join(stray)}, which the plan does not run; it runs "
                          f"{', '.join(sorted({spec.name for spec in config.attacks}))}")
    for spec in config.plan():
        spec.validate("evaluate.attacks")


def _standard_attacks(args: argparse.Namespace, num_classes: int, adaptive: str | None, version: str) -> list:
    from robustloss.evaluate.standard import standard_plan

    if args.attacks:
        raise ConfigError("--standard runs its own ensemble: drop --attacks (or drop --standard)")
    eps = _eps_list(_budgets(args))
    if None in eps:
        raise ConfigError("--standard needs numeric --eps budgets")
    return standard_plan(args.norm, eps, version, num_classes=num_classes, adaptive_objective=adaptive)


def _budgets(args: argparse.Namespace) -> str:
    """--eps as given, else the dataset's conventional budgets (``cmd_eval`` sets them), else 0.1,0.2,0.3."""
    return args.eps or getattr(args, "default_eps", None) or DEFAULT_EPS


def _eps_list(text: str) -> list[float | None]:
    """--eps as budgets: numbers in any spelling (0.03, 3e-2, .03, 8/255 - the field writes budgets as
    fractions of the 8-bit range), and None for 'none' or 'inf' (unbounded)."""
    values = []
    for item in (e.strip() for e in text.split(",")):
        if item.lower() in ("none", "null"):
            values.append(None)
            continue
        try:
            value = float(parse_number(item))
        except ValueError:
            raise ConfigError(f"--eps: expected comma-separated numbers (0.03, 1e-3, 8/255) or 'none', got {item!r}"
                              f"{' (an empty budget)' if not item else ''}") from None
        if value < 0:
            raise ConfigError(f"--eps: budgets must be numbers >= 0, got {item}")
        values.append(None if math.isinf(value) else value)
    return values


def _key_values(flag: str, items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} expects KEY=VALUE, e.g. draws=5; got {item!r}")
        if not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, e.g. draws=5; got {item!r}")
        params[key.strip()] = read_yaml_value(value)
    return params


def _attack_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """--param ATTACK.KEY=VALUE flags as {attack: {key: value}} (values read as YAML scalars)."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        attack, dot, key = target.partition(".")
        if not sep or not dot or not attack or not key:
            raise ConfigError(f"--param expects ATTACK.KEY=VALUE, e.g. pgd.restarts=5; got {item!r}")
        params.setdefault(attack, {})[key] = read_yaml_value(value)
    return params


def _flag_attacks(args: argparse.Namespace) -> list:
    """The attack plan from eval's flags, validated before any data is loaded."""
    from robustloss.attacks import ATTACKS
    from robustloss.evaluate.config import AttackSpec

    eps = _eps_list(_budgets(args))
    extra = _attack_params(args.param)
    plan = []
    for name in filter(None, (a.strip() for a in (args.attacks or DEFAULT_ATTACKS).split(","))):
        spec = AttackSpec(name, eps, {})
        accepted = ATTACKS.parameters(spec.resolved()[0])
        # An explicit --objective goes to every attack that takes one; the default (adaptive, or the
        # --config file's) is applied by the plan to the attacks whose own default is CE.
        params = {"objective": args.objective} if args.objective and "objective" in accepted else {}
        if args.targeted and "targeted" in accepted:
            params["targeted"] = True
        for key, value in (("steps", args.steps), ("step_size", args.step_size)):
            if value is not None and key in accepted:
                params[key] = value
        spec.params = params | extra.pop(name, {})
        spec.validate("--attacks")  # names, parameters and budgets, before the long part
        plan.append(spec)
    if not plan:
        raise ConfigError(f"--attacks {args.attacks!r}: names no attack (see `robustloss attacks`)")
    if extra:
        raise ConfigError(f"--param names attacks not in --attacks: {', '.join(extra)}")
    return plan


def _load(args: argparse.Namespace):
    """(model, dataset name, title, loss name, output folder) from a run folder or --model."""
    from robustloss.models.external import load_external_model

    if args.model:
        if args.run:
            raise ConfigError("give a run folder or --model, not both")
        if not args.dataset:
            raise ConfigError("--model needs --dataset NAME (see `robustloss data list`)")
        model = load_external_model(args.model, args.weights)
        out = Path(args.out) if args.out else Path(f"eval-{args.dataset}")
        return model, args.dataset, f"{args.model} on {args.dataset}", "model", out
    if not args.run:
        raise ConfigError("name a run folder written by `robustloss train`, or --model MODULE:FACTORY")
    if args.weights or args.dataset:
        raise ConfigError("--weights and --dataset go with --model; a run folder knows its own")
    from robustloss.models.saved import load_model
    from robustloss.train import load_config
    from robustloss.train.run_folder import MODEL_FILE

    run = Path(args.run)
    config = load_config(run)
    model = load_model(run / MODEL_FILE)[0]
    recipe = " -> ".join(f"{p.loss} x{p.epochs}" for p in config.recipe)
    title = f"{run.name}: {config.model} on {config.dataset}, recipe {recipe}"
    return model, config.dataset, title, config.recipe[-1].loss, Path(args.out) if args.out else run / "eval"


def cmd_eval(args: argparse.Namespace) -> int:
    from robustloss import distributed
    from robustloss.attacks.objectives import resolve_objective
    from robustloss.data import load_dataset
    from robustloss.evaluate.diagnostics import format_diagnostics
    from robustloss.evaluate.run import diagnostics_of, run_evaluation

    args.default_eps = conventional_eps(_dataset_of(args), args.norm)  # used where --eps is not given
    first = eval_config(args)  # every flag checked before a model or data is loaded
    model, dataset, title, method, out = _load(args)
    data = load_dataset(dataset, args.data_dir)
    out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now, not after the attacks ran
    with _exclusive(out):  # two evals into one folder would share its chunks: the second waits
        version = args.version
        if args.standard and version is None:  # AutoAttack's rule: the rand version for a randomised model
            version = "rand" if _stochastic(model, first, data.test) else "standard"
        adaptive = resolve_objective("adaptive", model) if getattr(model, "trained_with", None) else None
        config = eval_config(args, int(getattr(model, "num_classes", 10) or 10), adaptive, version)
        evaluation = run_evaluation(
            model, data.test, config, device=args.device, cache_dir=None if args.no_cache else out / "chunks",
            save_adversarial=out / "adversarial" if args.save_adv else None, progress=args.progress,
            log=print, meta={"run": str(args.run or args.model), "dataset": dataset}
            | ({"standard": version} if args.standard else {}),
        )
        if not distributed.is_main():  # under torchrun every rank holds the whole evaluation; rank 0 writes it
            return 0
        evaluation.save(out / "records.npz")
        if args.standard:
            _print_standard(evaluation, args, out)
        else:
            from robustloss.report import write_comparison

            print()
            print(write_comparison({method: evaluation}, {method: method.upper()}, dataset, out, title=title,
                                   published=args.compare or _paper_table_of(args)))
        diagnostics = diagnostics_of(evaluation)
        if diagnostics:
            table = format_diagnostics(diagnostics)
            (out / "diagnostics.md").write_text("### Gradient-masking diagnostics\n\n" + table)
            print("### Gradient-masking diagnostics\n")
            print(table)
        print(f"Wrote per-sample records {out / 'records.npz'}" + ("" if args.standard else
                                                                 f", {out / 'results.md'} and {out / 'results.csv'}"))
    return 0


@contextlib.contextmanager
def _exclusive(out: Path):
    """Hold ``out`` for this eval; if another eval holds it, say so and wait (its chunks are then reused)."""
    from robustloss.experiments.runner import Busy, locked

    try:
        with locked(out, wait=False):
            yield
        return
    except Busy:
        pass
    print(f"another robustloss eval is writing to {out}; waiting for it to finish (its finished chunks are reused)",
          flush=True)
    with locked(out, wait=True):
        yield


# The paper tables `eval` can print beside ours, and the experiment whose training configs they came from.
COMPARABLE_TABLES = {"pc-table1": "pc-table1"}


def paper_table_of(config) -> str | None:
    """The paper table whose training recipe ``config`` (a TrainConfig) is exactly, at paper scale:
    a run trained like the paper's model gets the paper's numbers beside ours without --compare."""
    from robustloss.experiments.schema import config_hash, load_experiment

    wanted = config_hash(config)
    for table, experiment in COMPARABLE_TABLES.items():
        if any(config_hash(cell.train) == wanted for cell in load_experiment(experiment, "paper").cells):
            return table
    return None


def _paper_table_of(args: argparse.Namespace) -> str | None:
    if args.model or not args.run:
        return None
    from robustloss.train import load_config

    return paper_table_of(load_config(Path(args.run)))


def _dataset_of(args: argparse.Namespace) -> str | None:
    """The dataset eval will load, known before the model is (None when the run folder cannot say)."""
    if args.model or not args.run:
        return args.dataset
    from robustloss.train import load_config

    try:
        return load_config(Path(args.run)).dataset
    except Exception:  # a missing or damaged run folder: _load reports it properly just after
        return None


def _stochastic(model, config, split) -> bool:
    """Whether the model as it will be attacked (behind ``config.defense``) gives random outputs."""
    from robustloss.defenses import apply_defense
    from robustloss.evaluate.stochastic import is_stochastic

    if config.defense is not None:
        model = apply_defense(model, config.defense.name, **config.defense.params)
    return is_stochastic(model, split.batch(slice(0, 32))[0])


def _print_standard(evaluation, args: argparse.Namespace, out: Path) -> None:
    from robustloss.evaluate.standard import report_from_evaluation

    report = report_from_evaluation(evaluation, args.norm, _eps_list(_budgets(args)),
                                    evaluation.meta.get("standard", args.version or "standard"))
    lines = ["| attack | eps | attacked | broken first | robust after | seconds |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['attack']} | {r['eps']:g} | {r['attacked']} | {r['newly_broken']} | "
              f"{100 * r['robust_after']:.1f}% | {r['seconds']:.1f} |" for r in report.per_attack]
    text = "### Standard evaluation\n\n" + report.verdict + "\n\n" + "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "standard.md").write_text(text)
    print()
    print(text)
