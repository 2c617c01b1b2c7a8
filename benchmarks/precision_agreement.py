"""Are attacks as strong in bf16 as in fp32? Robust accuracy of one trained model under every
attack family, with the gradient steps in fp32 and under bf16 autocast (the verdict is an fp32
forward pass either way), on the same samples with the same seeds, in one run.

This is why evaluation keeps minimum-norm attacks (C&W, DeepFool) in fp32 even with
``--precision bf16``: their small, carefully sized steps suffer most from bf16 rounding.

    .venv/bin/python benchmarks/precision_agreement.py RUN [--n 200] [--device auto]
"""

from __future__ import annotations

import argparse

import torch

from robustloss.attacks import create_attack
from robustloss.data import load_dataset
from robustloss.device import resolve_device
from robustloss.models.saved import load_model
from robustloss.train import load_config

ATTACKS = [("fgsm", 0.1, {}), ("pgd", 0.1, {"steps": 20, "step_size": 0.01}), ("mim", 0.1, {"steps": 20}),
           ("apgd-ce", 0.1, {"n_iter": 20}), ("pgd-l2", 1.0, {"steps": 20}), ("cw", None, {"steps": 100}),
           ("deepfool", None, {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a trained model's folder (robustloss train --out, or ROOT/models/HASH)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = load_model(f"{args.run}/model.pt")[0].to(device).eval()
    x, y = load_dataset(load_config(args.run).dataset).test.batch(slice(0, args.n))
    x, y = x.to(device), y.to(device)
    print(f"{args.run}: robust accuracy on {args.n} test samples, fp32 vs bf16 gradient steps (device {device})")
    print(f"  {'attack':<10} {'eps':>5} {'fp32':>7} {'bf16':>7}  same verdict")
    for name, eps, params in ATTACKS:
        results = {}
        for precision in ("fp32", "bf16"):
            attack = create_attack(name, eps=eps, **params)
            results[precision] = attack(model, x, y, generator=torch.Generator().manual_seed(0), precision=precision)
        robust = {p: 1 - float(r.success.float().mean()) for p, r in results.items()}
        same = float((results["fp32"].success == results["bf16"].success).float().mean())
        shown = "-" if eps is None else f"{eps:g}"
        print(f"  {name:<10} {shown:>5} {100 * robust['fp32']:6.1f}% {100 * robust['bf16']:6.1f}%  {100 * same:5.1f}%")


if __name__ == "__main__":
    main()
