"""``robustloss train``: one training run from flags (and an optional ``--config`` YAML of TrainConfig keys)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustloss.cli.common import add_common, numbers
from robustloss.config import read_yaml_value
from robustloss.errors import ConfigError, RobustlossError
from robustloss.experiments.overrides import parse_assignment, set_dotted


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model with a recipe of (loss, epochs) phases")
    train.add_argument("--config", help="YAML file with TrainConfig keys; flags below override it")
    train.add_argument("--dataset", help="dataset name (see `robustloss data list`)")
    train.add_argument("--model", help="model name, e.g. lenet5, cnn3, vgg13, resnet56")
    train.add_argument("--recipe", help="phases as LOSS:EPOCHS,..., e.g. ce:50,pc:50 (an empty phase is refused)")
    train.add_argument("--loss", help="single-phase shortcut: train with LOSS for --epochs epochs")
    train.add_argument("--epochs", type=int, help="epochs for --loss")
    train.add_argument("--loss-param", action="append", default=[], metavar="LOSS.KEY=VALUE",
                       help="loss hyper-parameter, e.g. pc.xi=0.99 (repeatable)")
    train.add_argument("--optimizer", choices=["adam", "sgd"])
    train.add_argument("--lr", type=float)
    train.add_argument("--milestones", help="comma-separated epochs where lr *= gamma")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--max-train-samples", type=int, help="train on a class-stratified subset of this size")
    train.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                       help="model option, e.g. feature_dim=2 (repeatable)")
    _add_adversarial_flags(train)
    _add_speed_flags(train)
    train.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                       help="set any TrainConfig value, e.g. adversarial.guard.drop=0.3 (repeatable; applied last)")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_common(train)
    train.set_defaults(handler=_cmd_train)



def _add_adversarial_flags(p: argparse.ArgumentParser) -> None:
    at = p.add_argument_group(
        "adversarial training",
        "Each flag sets a key of the config's `adversarial:` block (see configs/README.md). Examples: "
        "PC Table 5 gray: --adversarial fgsm --adv-eps 0.1,0.3; PC Table 5 CIFAR: --adversarial pgd --adv-steps 5 "
        "--adv-eps 0,0.1; MMC Table 1: --adversarial pgd --adv-eps 0.0314 --adv-step-size 0.00784 --adv-ratio 1; "
        "fast AT: --adversarial fgsm-rs --guard rollback; TRADES: --adversarial trades --trades-beta 6")
    at.add_argument("--adversarial", choices=["fgsm", "fgsm-rs", "pgd", "trades"], help="AT method")
    at.add_argument("--adv-eps", metavar="EPS|LO,HI",
                    help="L-inf budget on [0, 1] images (0.3, 3e-1, 8/255; above 1 is refused), or a range each "
                         "example draws its eps from")
    at.add_argument("--adv-steps", type=int, help="attack steps (pgd, trades; default 10)")
    at.add_argument("--adv-step-size", type=float, help="step size (default: method's rule, per example)")
    at.add_argument("--adv-random-start", action=argparse.BooleanOptionalAction, default=None,
                    help="start from a random point of the ball (default: off for fgsm, on otherwise)")
    at.add_argument("--adv-ratio", type=float, help="adversarial share of each batch (default 0.5 = 1:1; 1 = all)")
    at.add_argument("--adv-objective", help="attack objective: loss (the phase's training loss; default), ce, adaptive, ...")
    at.add_argument("--adv-targeted", action="store_true", help="random wrong-class targets")
    at.add_argument("--adv-phases", metavar="I,J", help="recipe phase indices (from 0) trained adversarially; default all")
    at.add_argument("--trades-beta", type=float, help="TRADES weight of the KL term (default 6)")
    at.add_argument("--guard", choices=["stop", "rollback"],
                    help="catastrophic-overfitting guard: held-out PGD after every epoch, stop or roll back on collapse")
    at.add_argument("--guard-drop", type=float, help="accuracy drop that counts as a collapse (default 0.2)")
    at.add_argument("--guard-held-out", type=int, help="training samples held out for the guard (default 512)")


def _add_speed_flags(p: argparse.ArgumentParser) -> None:
    speed = p.add_argument_group(
        "speed", "Opt-in settings for a faster run on one device; each sets the TrainConfig key of the same name.")
    speed.add_argument("--precision", choices=["fp32", "bf16"],
                       help="bf16: forward passes under bfloat16 autocast, losses in float32 (default fp32)")
    speed.add_argument("--channels-last", action="store_true", help="NHWC memory format for the model and batches")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model for the training steps")
    speed.add_argument("--data-on-device", choices=["auto", "always", "never"],
                       help="keep the training split on the GPU: auto (when it fits in half the free memory; "
                            "default), always, never")


# Every flag of `train` is a named shortcut for one TrainConfig key: the flags are turned into the
# same dotted assignments as --set and applied by the same function, in one place and one order
# (--config, then the flags, then --loss-param, then --set), before the config is built and validated.
FLAG_KEYS = {
    "dataset": "dataset", "model": "model", "batch_size": "batch_size", "seed": "seed",
    "max_train_samples": "max_train_samples", "precision": "precision", "data_on_device": "data_on_device",
    "optimizer": "optimizer.name", "lr": "optimizer.lr",
    "adversarial": "adversarial.method", "adv_steps": "adversarial.steps", "adv_step_size": "adversarial.step_size",
    "adv_random_start": "adversarial.random_start", "adv_ratio": "adversarial.ratio",
    "adv_objective": "adversarial.objective", "trades_beta": "adversarial.beta",
    "guard": "adversarial.guard.action", "guard_drop": "adversarial.guard.drop",
    "guard_held_out": "adversarial.guard.held_out",
}
SWITCH_KEYS = {"channels_last": "channels_last", "compile": "compile", "adv_targeted": "adversarial.targeted"}
LIST_KEYS = {  # flag -> (key, number type, keep a one-element list as a list)
    "milestones": ("optimizer.milestones", int, True), "adv_eps": ("adversarial.eps", float, False),
    "adv_phases": ("adversarial.phases", int, True),
}


def flag_assignments(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(dotted key, value) for every flag given; switches only ever turn a setting on."""
    assignments = [(key, getattr(args, flag)) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    assignments += [(key, True) for flag, key in SWITCH_KEYS.items() if getattr(args, flag)]
    for flag, (key, kind, keep_list) in LIST_KEYS.items():
        if getattr(args, flag):
            assignments.append((key, numbers("--" + flag.replace("_", "-"), getattr(args, flag), kind, keep_list)))
    for item in args.model_param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-param expects KEY=VALUE, e.g. feature_dim=2; got {item!r}")
        assignments.append((f"model_params.{key.strip()}", read_yaml_value(value)))
    return assignments


def _check_block_flags(assignments: list[tuple[str, Any]], raw: dict[str, Any]) -> None:
    """A flag inside the adversarial block (or its guard) must not create that block by itself: an
    --adv-steps alone would otherwise switch on PGD training, the block's default method."""
    keys = {key for key, _ in assignments}
    if any(k.startswith("adversarial.") for k in keys) and "adversarial.method" not in keys \
            and not isinstance(raw.get("adversarial"), dict):
        raise ConfigError("the --adv-*, --trades-* and --guard* flags need --adversarial METHOD "
                          "(or an `adversarial:` block in --config)")
    guard = raw.get("adversarial", {}).get("guard") if isinstance(raw.get("adversarial"), dict) else None
    if any(k.startswith("adversarial.guard.") and k != "adversarial.guard.action" for k in keys) \
            and "adversarial.guard.action" not in keys and not isinstance(guard, dict):
        raise ConfigError("--guard-drop and --guard-held-out need --guard stop|rollback")


def _cmd_train(args: argparse.Namespace) -> int:
    from robustloss.config import from_dict, load_yaml
    from robustloss.train import TrainConfig, train

    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if args.config:
        from_dict(TrainConfig, raw)  # report errors against the file before applying flags
    assignments = flag_assignments(args)
    _check_block_flags(assignments, raw)
    _recipe_from_flags(args, raw)
    for key, value in assignments:
        set_dotted(raw, key, value)
    _apply_loss_params(raw, args.loss_param)  # before the config is built, so it validates them too
    for item in args.overrides:
        set_dotted(raw, *parse_assignment(item))
    config = from_dict(TrainConfig, raw)
    _check_names(config)
    result = train(config, args.out, data_dir=args.data_dir, resume=args.resume, device=args.device,
                   progress=args.progress)
    last = result.history[-1]
    print(f"final (epoch {last['epoch']}, {last['phase']}): train loss {last['train_loss']:.4f}, "
          f"train acc {100 * last['train_acc']:.1f}%, test acc {100 * last['test_acc']:.1f}%")
    print(f"model written to {Path(args.out) / 'model.pt'}; attack it with: robustloss eval {args.out}")
    return 0


def _recipe_from_flags(args: argparse.Namespace, raw: dict[str, Any]) -> None:
    """``raw["recipe"]`` from --recipe, or from --loss and --epochs."""
    from robustloss.config import to_dict
    from robustloss.train import parse_recipe

    if args.recipe and args.loss:
        raise ConfigError("give either --recipe or --loss/--epochs, not both")
    if args.epochs is not None and not args.loss:
        raise ConfigError(f"--epochs {args.epochs} goes with --loss (or write LOSS:EPOCHS in --recipe)")
    if args.recipe:
        raw["recipe"] = to_dict(parse_recipe(args.recipe, where="--recipe"))
    elif args.loss:
        if args.epochs is None:
            raise ConfigError("--loss needs --epochs")
        raw["recipe"] = [{"loss": args.loss, "epochs": args.epochs}]


def _apply_loss_params(raw: dict[str, Any], assignments: list[str]) -> None:
    """Set --loss-param LOSS.KEY=VALUE on every phase of ``raw["recipe"]`` that trains with LOSS."""
    from robustloss.config import to_dict
    from robustloss.train import TrainConfig

    if not assignments:
        return
    recipe = raw.get("recipe")
    if not isinstance(recipe, list):  # the default recipe, or a malformed one that from_dict will report
        if recipe is not None:
            return
        recipe = raw["recipe"] = to_dict(TrainConfig())["recipe"]
    for item in assignments:
        target, sep, text = item.partition("=")
        loss, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--loss-param expects LOSS.KEY=VALUE, e.g. pc.xi=0.99; got {item!r}")
        phases = [p for p in recipe if isinstance(p, dict) and p.get("loss") == loss]
        if not phases:
            raise ConfigError(f"--loss-param {item!r}: no phase of the recipe uses loss {loss!r}")
        for phase in phases:
            phase.setdefault("params", {})[key] = read_yaml_value(text)


def _check_names(config) -> None:
    """Fail before loading data when a name, a loss parameter or an adversarial budget is wrong."""
    from robustloss.config import check_numeric_parameters
    from robustloss.data import DATASETS
    from robustloss.evaluate.config import check_linf_budget
    from robustloss.experiments.schema import check_model_params
    from robustloss.losses import LOSSES, create_loss
    from robustloss.models import MODELS

    DATASETS.get(config.dataset)
    MODELS.get(config.model)
    check_model_params(config)
    for i, phase in enumerate(config.recipe):
        check_numeric_parameters(LOSSES.get(phase.loss), phase.params, f"loss {phase.loss!r} (recipe[{i}])")
        try:
            create_loss(phase.loss, **phase.params)
        except (TypeError, ValueError) as err:
            if isinstance(err, RobustlossError):
                raise
            raise ConfigError(f"recipe[{i}] ({phase.loss}, params {phase.params}): {err}") from None
    if config.adversarial is not None:  # every adversarial-training method attacks in L-inf
        at = config.adversarial
        for eps in (at.eps if isinstance(at.eps, list) else [at.eps]):
            check_linf_budget(eps, "adversarial.eps")
        if at.guard is not None and at.guard.eps is not None:
            check_linf_budget(at.guard.eps, "adversarial.guard.eps")
