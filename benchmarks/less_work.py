"""The "less work" table: what the active set saves where samples fall early and where they do not.

Two real models on mnist-5k (4,000 / 1,000 real MNIST digits), LeNet-5:
* ``CE``: trained with cross-entropy; at eps 0.3 almost every digit falls within a few steps;
* ``PGD-AT``: 2 clean epochs, then 8 of PGD adversarial training (eps 0.3, 10 steps, half of each batch
  adversarial), where many digits survive every step.
Each attack runs three ways on the same 1,000 test digits (batches of 500, as in an evaluation):
ours (the active set, the default: fooled samples leave the batch), ours with ``active_set=False``
(every step on the whole batch, the loop before the active set) and torchattacks with the same settings
(PGD, BIM, MI-FGSM, APGD-CE; torchattacks computes every step on every sample and keeps the final
iterate). Timings are interleaved over rounds; medians. Robust accuracies are printed beside them: the
active set must agree with the full batch exactly. C&W-100 (the PC paper's setting: 9 binary-search
steps x 100 iterations) has no full-batch switch (its abort_early drops stalled samples from the
forward and backward passes since it was written), so its row gives the share of the full
(1 + 9 x 100) passes per digit that it actually computes, counted by a forward hook.

    .venv/bin/python benchmarks/attack_speed.py --less-work [--rounds 2] [--models-dir runs/bench/models]
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch

from robustloss.attacks import create_attack
from robustloss.data import load_dataset
from robustloss.evaluate.config import AttackSpec
from robustloss.models.saved import load_model
from robustloss.train import AdversarialConfig, Phase, TrainConfig, train

RECIPES = {
    "CE": TrainConfig(recipe=[Phase("ce", 5)], seed=0),
    # 2 clean epochs first: PGD-AT at eps 0.3 from scratch on 4,000 digits collapses to one class
    "PGD-AT": TrainConfig(recipe=[Phase("ce", 2), Phase("ce", 8)], seed=0,
                          adversarial=AdversarialConfig(method="pgd", eps=0.3, steps=10, ratio=0.5, objective="ce",
                                                        phases=[1])),
}
# (label, ours, torchattacks factory): the PC paper's settings at eps 0.3, and APGD-CE at 100 steps
ATTACKS = [
    ("PGD-40", ("pgd", {"steps": 40, "step_size": 0.01}),
     lambda ta, m: ta.PGD(m, eps=0.3, alpha=0.01, steps=40, random_start=True)),
    ("MIM-40", ("mim", {"steps": 40, "step_size": 0.01}),
     lambda ta, m: ta.MIFGSM(m, eps=0.3, alpha=0.01, steps=40, decay=1.0)),
    ("BIM-10", ("bim", {"steps": 10, "step_size": 0.01}),
     lambda ta, m: ta.BIM(m, eps=0.3, alpha=0.01, steps=10)),
    ("APGD-CE-100", ("apgd-ce", {"n_iter": 100}),
     lambda ta, m: ta.APGD(m, eps=0.3, steps=100, loss="ce", n_restarts=1)),
]


def trained_models(folder: Path, data) -> dict[str, torch.nn.Module]:
    models = {}
    for name, config in RECIPES.items():
        run = folder / name
        if not (run / "model.pt").exists():
            print(f"training {name} ({sum(p.epochs for p in config.recipe)} epochs on mnist-5k)...", flush=True)
            train(config, run, data=data, progress=False, log=lambda _: None, device="cpu")
        models[name] = load_model(run / "model.pt")[0].eval()
    return models


def in_batches(fn, x, y, batch=500):
    return torch.cat([fn(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])


def runners(model, attack, torchattacks):
    name, params = attack[1]
    ours = create_attack(name, eps=0.3, **params)
    full = create_attack(name, eps=0.3, **params)
    full.active_set = False

    def ours_fn(a):
        def run(x, y):
            return a(model, x, y, generator=torch.Generator().manual_seed(0)).pred
        return run

    out = {"ours": ours_fn(ours), "full batch": ours_fn(full)}
    if torchattacks is not None:
        reference = attack[2](torchattacks, model)

        def theirs(x, y):
            x_adv = reference(x, y)  # torchattacks needs gradients: outside no_grad
            with torch.no_grad():
                return model(x_adv).argmax(1)
        out["torchattacks"] = theirs
    return out


def cw_work_share(model, x, y) -> tuple[float, float, float]:
    """(seconds, robust accuracy, rows forwarded / rows of the full algorithm) for C&W-100."""
    rows = [0]
    handle = model.register_forward_hook(lambda m, inp, out: rows.__setitem__(0, rows[0] + len(inp[0])))
    try:
        cw = AttackSpec("cw-pc-100").build(None)  # a preset: built through the evaluation's spec
        started = time.perf_counter()
        pred = in_batches(lambda a, b: cw(model, a, b).pred, x, y)
        seconds = time.perf_counter() - started
    finally:
        handle.remove()
    verdict_rows = len(x)  # the final classification pass
    full = len(x) * (1 + cw.binary_search_steps * cw.steps)
    return seconds, (pred == y).float().mean().item(), (rows[0] - verdict_rows) / full


def less_work_table(rounds: int, models_dir: Path) -> None:
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    data = load_dataset("mnist-5k")
    x, y = data.test.batch(slice(0, 1000))
    models = trained_models(models_dir, data)
    print(f"\nLess work: 1,000 mnist-5k test digits, batches of 500, eps 0.3, median of {rounds} interleaved rounds")
    print(f"{'model':<7} {'attack':<12} {'robust % (ours/full/ta)':>24} {'ours s':>7} {'full s':>7} {'ta s':>7} "
          f"{'ours/full':>9} {'ours/ta':>8}")
    for model_name, model in models.items():
        for attack in ATTACKS:
            fns = runners(model, attack, torchattacks)
            times = {k: [] for k in fns}
            robust = {}
            order = random.Random(0)
            for round_index in range(rounds + 1):  # round 0 warms up
                names = list(fns)
                order.shuffle(names)
                for k in names:
                    started = time.perf_counter()
                    pred = in_batches(fns[k], x, y)
                    if round_index:
                        times[k].append(time.perf_counter() - started)
                    robust[k] = 100 * (pred == y).float().mean().item()
            med = {k: statistics.median(v) for k, v in times.items()}
            ta = med.get("torchattacks")
            accs = "/".join(f"{robust[k]:.1f}" for k in fns)
            print(f"{model_name:<7} {attack[0]:<12} {accs:>24} {med['ours']:7.2f} {med['full batch']:7.2f} "
                  f"{ta if ta is not None else float('nan'):7.2f} {med['ours'] / med['full batch']:9.3f} "
                  f"{(med['ours'] / ta) if ta else float('nan'):8.3f}", flush=True)
        seconds, robust_cw, share = cw_work_share(model, x, y)
        print(f"{model_name:<7} {'C&W-100':<12} {100 * robust_cw:>24.1f} {seconds:7.2f} "
              f"{'':>7} {'':>7}  computes {100 * share:.1f}% of the full 1 + 9 x 100 passes per digit", flush=True)
