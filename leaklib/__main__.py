"""``python -m leaklib reproduce {idlg,labels,defenses} ...`` and ``python -m leaklib bench idlg ...``: the numbers.

Examples::

    python -m leaklib reproduce idlg --dataset mnist --trials 100 --json idlg_mnist.json --figure idlg_mnist.png
    python -m leaklib reproduce labels --methods idlg,yin,llg,geng,ilrg --dataset cifar100 --batch-sizes 1,8,32,128
    python -m leaklib reproduce defenses --dataset mnist --attack idlg --defenses none,prune:0.3,fp16 --utility
    python -m leaklib bench idlg --dataset mnist --trials 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import DATASETS
from .experiments import BENCH_ENGINES
from .labels import LABEL_METHODS


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return n


def _non_negative(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {value!r}")
    return n


def _choices(valid: tuple[str, ...], option: str):
    def parse(value: str) -> list[str]:
        items = [m.strip().lower() for m in value.split(",") if m.strip()]
        bad = [m for m in items if m not in valid]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{option} takes a comma-separated subset of {','.join(valid)}; "
                                             f"got {value!r}")
        return items

    return parse


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--batch-sizes takes comma-separated positive integers; got {value!r}")
    return sizes


def _defense_list(value: str) -> list[str]:
    from .defenses import parse_defenses

    specs = [v.strip() for v in value.split(",") if v.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"--defenses takes comma-separated defenses such as none,prune:0.3,fp16; "
                                         f"got {value!r}")
    for spec in specs:
        try:
            parse_defenses(spec)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return specs


def _common(p: argparse.ArgumentParser, trials: int) -> None:
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    p.add_argument("--trials", type=_positive, default=trials)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leaklib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    rep = commands.add_parser("reproduce", help="a paper's table or figure").add_subparsers(dest="experiment",
                                                                                            required=True)
    idlg = rep.add_parser("idlg", help="iDLG's Table 1 and Figure 1 (label accuracy, fidelity)")
    _common(idlg, 100)
    idlg.add_argument("--iterations", type=_positive, default=300, help="L-BFGS steps per attack (papers: 300)")
    idlg.add_argument("--methods", type=_choices(("dlg", "idlg"), "--methods"), default=["dlg", "idlg"],
                      help="comma-separated: dlg,idlg")
    idlg.add_argument("--figure", type=Path, help="save the fidelity figure here (PNG)")
    idlg.add_argument("--protocol", action="store_true",
                      help="the papers' exact protocol in the engine: N(0,1) start, no restarts, no polish, "
                           "absolute loss")

    labels = rep.add_parser("labels", help="batch label restoration: instance accuracy per method and batch size")
    _common(labels, 10)
    labels.add_argument("--methods", type=_choices(LABEL_METHODS, "--methods"), default=list(LABEL_METHODS),
                        help=f"comma-separated: {','.join(LABEL_METHODS)}")
    labels.add_argument("--model", choices=["lenet", "convnet", "resnet18"], default="convnet")
    labels.add_argument("--batch-sizes", type=_sizes, default=[1, 8, 32, 128])
    dup = labels.add_mutually_exclusive_group()
    dup.add_argument("--duplicates", dest="duplicates", action="store_true", default=True,
                     help="random batches, labels repeat (default)")
    dup.add_argument("--unique", dest="duplicates", action="store_false", help="one sample per class")
    labels.add_argument("--trained-steps", type=_non_negative, default=0,
                        help="train the model this many SGD steps first (0: untrained)")
    labels.add_argument("--local-steps", type=_positive, default=1,
                        help="1: the client shares its FedSGD gradient; K > 1: a FedAvg update after K steps")
    labels.add_argument("--lr", type=float, default=0.1, help="the clients' local learning rate (FedAvg)")
    labels.add_argument("--classes", type=_positive, default=None,
                        help="give the model this many classes and draw batch labels uniformly from them "
                             "(untrained models only)")

    defenses = rep.add_parser("defenses", help="DLG's defenses: attack success (and with --utility test accuracy) "
                                                "under pruning, noise, low precision and DP-SGD")
    _common(defenses, 8)
    defenses.add_argument("--attack", choices=["dlg", "idlg"], default="idlg")
    defenses.add_argument("--defenses", type=_defense_list, default=None,
                          help="comma-separated defenses, each a chain joined by '+': none, prune:P (P in [0, 1]), "
                               "gauss:VAR, lap:VAR, fp16, bf16, dpsgd:SIGMA[:CLIP]; default: "
                               "none,prune:0.1,...,dpsgd:1:10 (DLG's strengths)")
    defenses.add_argument("--iterations", type=_positive, default=300, help="L-BFGS steps per attack (papers: 300)")
    defenses.add_argument("--utility", action="store_true",
                          help="also train a LeNet under each defense and report its test accuracy")
    defenses.add_argument("--epochs", type=_positive, default=3, help="training epochs for --utility")
    defenses.add_argument("--figure", type=Path, help="with --utility: save the privacy-utility plot here (PNG)")

    bench = commands.add_parser("bench", help="speed against a baseline, same inputs, one process")
    bench = bench.add_subparsers(dest="experiment", required=True).add_parser(
        "idlg", help="engine vs the official one-at-a-time loop, same trials")
    _common(bench, 32)
    bench.add_argument("--iterations", type=_positive, default=300)
    bench.add_argument("--method", choices=["dlg", "idlg"], default="idlg")
    bench.add_argument("--sequential-trials", type=_positive, default=None,
                       help="run the official loop on the first N of the trials only (its rate does not depend on "
                            "N; default: all)")
    bench.add_argument("--engines", type=_choices(tuple(BENCH_ENGINES), "--engines"), default=list(BENCH_ENGINES),
                       help=f"comma-separated engine rows: {','.join(BENCH_ENGINES)} (default: all)")
    return parser


def _reproduce_idlg(args: argparse.Namespace) -> dict:
    from .attacks import PAPER_PROTOCOL
    from .experiments import reproduce_idlg

    engine = PAPER_PROTOCOL if args.protocol else {}
    out = reproduce_idlg(args.dataset, args.trials, iterations=args.iterations, methods=args.methods,
                         device=args.device, seed=args.seed, progress=not args.no_progress, **engine)
    print(f"{args.dataset}, {args.trials} trials on {out['device']} ({out['source']})")
    print(f"{'method':8} {'labels':>7} " + " ".join(f"{'<' + t:>8}" for t in out["fidelity"][args.methods[0]])
          + f" {'seconds':>8}")
    for m in args.methods:
        print(f"{m:8} {100 * out['label_accuracy'][m]:6.1f}% "
              + " ".join(f"{100 * v:7.1f}%" for v in out["fidelity"][m].values()) + f" {out['seconds'][m]:8.1f}")
    if args.figure:
        from .plot import plot_fidelity

        name = "CIFAR-100 stand-in" if out["source"].startswith("STAND-IN") else args.dataset  # never call it CIFAR
        fig = plot_fidelity({m.upper(): out["fidelity"][m] for m in args.methods},
                            title=f"{name}: fidelity over {args.trials} trials")
        fig.savefig(args.figure, dpi=120)
        print(f"figure: {args.figure}")
    return out


def _reproduce_labels(args: argparse.Namespace) -> dict:
    from .experiments import reproduce_labels

    if not args.lr > 0:
        raise SystemExit(f"error: --lr must be positive; got {args.lr}")
    out = reproduce_labels(args.dataset, args.model, methods=args.methods, batch_sizes=args.batch_sizes,
                           duplicates=args.duplicates, trained_steps=args.trained_steps, local_steps=args.local_steps,
                           lr=args.lr, num_classes=args.classes, trials=args.trials, seed=args.seed,
                           device=args.device, progress=not args.no_progress)
    update = "FedSGD gradient" if args.local_steps == 1 else f"FedAvg update, {args.local_steps} steps, lr {args.lr}"
    labels = f"uniform labels over {out['num_classes']} classes" if out["uniform_labels"] else "the data's labels"
    print(f"{args.dataset} ({out['source']}), {args.model} "
          f"{'trained ' + str(args.trained_steps) + ' steps' if args.trained_steps else 'untrained'}, {update}, "
          f"{'duplicates' if args.duplicates else 'unique labels'}, {labels}; {args.trials} trials, "
          f"{out['seconds']:.1f} s")
    print(f"{'method':8} {'B':>5} {'instance acc':>13} {'exact batch':>12}")
    for row in out["rows"]:
        print(f"{row['method']:8} {row['batch_size']:5d} {100 * row['instance_accuracy']:12.1f}% "
              f"{100 * row['exact_batch_rate']:11.1f}%")
    return out


def _reproduce_defenses(args: argparse.Namespace) -> dict:
    from .experiments import DEFAULT_DEFENSES, reproduce_defenses

    specs = args.defenses or list(DEFAULT_DEFENSES)
    if args.figure and not args.utility:
        raise ValueError("--figure plots attack success against test accuracy: it needs --utility")
    out = reproduce_defenses(args.dataset, specs, attack=args.attack, trials=args.trials, iterations=args.iterations,
                             utility=args.utility, epochs=args.epochs, seed=args.seed, device=args.device,
                             progress=not args.no_progress)
    print(f"{args.attack} against each defense on {args.dataset} ({out['source']}), {args.trials} trials, "
          f"{args.iterations} iterations, {out['device']}, {out['seconds']:.1f} s"
          + (f"; training {out['utility_seconds']:.1f} s" if args.utility else ""))
    print(f"{'defense':16} {'labels':>7} {'fid<1e-2':>9} {'fid<1e-3':>9} {'fid<1e-4':>9} {'MSE med':>9} {'SSIM':>6}"
          + (f" {'test acc':>9} {'epsilon':>8}" if args.utility else ""))
    for row in out["rows"]:
        fid = row["fidelity"]
        line = (f"{row['defense']:16} {100 * row['label_accuracy']:6.1f}% {100 * fid['0.01']:8.1f}% "
                f"{100 * fid['0.001']:8.1f}% {100 * fid['0.0001']:8.1f}% {row['mse_median']:9.2e} "
                f"{row['ssim_median']:6.3f}")
        if args.utility:
            eps = "" if row["epsilon"] is None else f"{row['epsilon']:8.2f}"
            line += f" {100 * row['test_accuracy']:8.1f}% {eps}"
        print(line)
    if args.figure:
        from .plot import plot_privacy_utility

        fig = plot_privacy_utility(out["rows"], title=f"{args.dataset}: {args.attack} against each defense, "
                                                      f"{args.trials} clients")
        fig.savefig(args.figure, dpi=120)
        print(f"figure: {args.figure}")
    return out


def _bench_idlg(args: argparse.Namespace) -> dict:
    from .experiments import benchmark_idlg

    if args.sequential_trials is not None and args.sequential_trials > args.trials:
        raise ValueError(f"--sequential-trials must be at most --trials ({args.trials}); got {args.sequential_trials}")
    out = benchmark_idlg(args.dataset, args.trials, method=args.method, iterations=args.iterations,
                         device=args.device, seed=args.seed, progress=not args.no_progress,
                         sequential_trials=args.sequential_trials, engines=args.engines)
    print(f"{args.method} on {args.dataset}, {args.trials} trials, {args.iterations} iterations, "
          f"{out['torch_threads']} torch threads ({out['source']})")
    print(f"{'':16} {'trials':>6} {'attacks/s':>10} {'speedup':>8} {'labels':>7} {'fid<1e-4':>9} {'fid<1e-2':>9} "
          f"{'median MSE':>11}")
    for name, row in out["rows"].items():
        print(f"{name:16} {row['trials']:6d} {row['attacks_per_second']:10.3f} {row['speedup']:7.1f}x "
              f"{100 * row['label_accuracy']:6.1f}% {100 * row['fidelity']['0.0001']:8.1f}% "
              f"{100 * row['fidelity']['0.01']:8.1f}% {row['mse_median']:11.1e}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = {("reproduce", "idlg"): _reproduce_idlg, ("reproduce", "labels"): _reproduce_labels,
           ("reproduce", "defenses"): _reproduce_defenses,
           ("bench", "idlg"): _bench_idlg}[(args.command, args.experiment)]
    try:
        out = run(args)
    except ValueError as err:  # a setting that cannot be run (e.g. unique labels beyond the classes): say which
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
