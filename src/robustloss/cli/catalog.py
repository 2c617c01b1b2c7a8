"""What robustloss has: ``robustloss attacks``, ``configs``, ``data list|fetch``; and ``robustloss demo``."""

from __future__ import annotations

import argparse

from robustloss.cli.common import add_common


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the PC paper's core claim on embedded MNIST: tables, plots, HTML report")
    demo.add_argument("--root", default="runs", help="results folder (default: runs)")
    demo.add_argument("--scale", choices=["smoke", "demo", "paper"], default="demo",
                      help="configs/pc_demo.yaml preset (default: demo, a few minutes on 2 CPU cores)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                      help="override a value of configs/pc_demo.yaml")
    add_common(demo, data=False)
    demo.set_defaults(handler=_cmd_demo)



def add_catalog_parsers(sub: argparse._SubParsersAction) -> None:
    configs = sub.add_parser("configs", help="list the shipped experiments (the papers' tables, the demo, sweeps): "
                                             "run any of them by name, e.g. robustloss run pc-table1")
    configs.set_defaults(handler=_cmd_configs)

    attacks = sub.add_parser("attacks", help="list attacks, their parameters and the papers' presets")
    attacks.set_defaults(handler=_cmd_attacks)

    data = sub.add_parser("data", help="list datasets or download one")
    data_sub = data.add_subparsers(metavar="ACTION")
    listing = data_sub.add_parser("list", help="list datasets and whether they are on disk")
    listing.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
    listing.set_defaults(handler=_cmd_data_list)
    fetch = data_sub.add_parser("fetch", help="download a dataset's canonical files and verify checksums")
    fetch.add_argument("name")
    fetch.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
    fetch.set_defaults(handler=_cmd_data_fetch)


def _cmd_demo(args: argparse.Namespace) -> int:
    from robustloss.demo import run_demo

    run_demo(args.root, scale=args.scale, overrides=args.overrides, device=args.device,
             progress=args.progress)
    return 0


def _cmd_attacks(args: argparse.Namespace) -> int:
    from robustloss.attacks import ATTACKS, OBJECTIVES, PRESETS

    print("attacks (parameter=default; 'required' has none; eps is the budget, set per evaluation):")
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        params = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                           for k, v in ATTACKS.defaults(name).items() if k != "eps")
        print(f"  {name:<16} norm={cls.norm}  {params}")
    print("\npresets (usable wherever an attack name is; the values they set):")
    for name in PRESETS.names():
        p = PRESETS.get(name)
        shown = ", ".join(f"{k}={v}" for k, v in p.params.items())
        print(f"  {name:<22} {p.attack}: {shown}   [{p.source}]")
    print(f"\nobjectives: adaptive (default: the one fitting the model's training loss), {', '.join(OBJECTIVES.names())}")
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from robustloss.data import DATASETS, check_dataset_files, data_root
    from robustloss.errors import DatasetNotFoundError

    root = data_root(args.data_dir)
    print(f"data root: {root}")
    print(f"{'name':<15} {'classes':>7} {'shape':<9} status")
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if spec.embedded:
            status = "embedded (no download needed)"
        else:
            try:
                status = f"on disk: {check_dataset_files(name, root)}"  # looks without reading
            except DatasetNotFoundError:
                status = f"missing: robustloss data fetch {name}"
        shape = "x".join(map(str, spec.image_shape))
        print(f"{name:<15} {spec.num_classes:>7} {shape:<9} {status}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from robustloss.data import fetch_dataset

    path = fetch_dataset(args.name, args.data_dir)
    print(f"{args.name} is ready in {path}")
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from robustloss.experiments.shipped import configs_folder, shipped_configs

    shipped = shipped_configs()
    width = max(len(c.name) for c in shipped)
    print(f"shipped experiments (in {configs_folder()}); run one with `robustloss run NAME [--scale smoke|demo|paper]`:")
    for config in shipped:
        print(f"  {config.name:<{width}}  {config.title}")
    return 0
