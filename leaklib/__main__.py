"""``python -m leaklib reproduce idlg ...`` and ``python -m leaklib bench idlg ...``: the papers' numbers and our speed.

Examples::

    python -m leaklib reproduce idlg --dataset mnist --trials 100 --json idlg_mnist.json --figure idlg_mnist.png
    python -m leaklib bench idlg --dataset mnist --trials 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import DATASETS


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return n


def _methods(value: str) -> list[str]:
    methods = [m.strip().lower() for m in value.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("dlg", "idlg")]
    if not methods or bad:
        raise argparse.ArgumentTypeError(f"--methods takes a comma-separated subset of dlg,idlg; got {value!r}")
    return methods


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leaklib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("experiment", choices=["idlg"], help="which paper's experiment")
        p.add_argument("--dataset", choices=list(DATASETS), default="mnist")
        p.add_argument("--trials", type=_positive, default=100)
        p.add_argument("--iterations", type=_positive, default=300, help="L-BFGS steps per attack (papers: 300)")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", type=Path, help="write the results here")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    rep = commands.add_parser("reproduce", help="iDLG's Table 1 and Figure 1 (label accuracy, fidelity)")
    common(rep)
    rep.add_argument("--methods", type=_methods, default=["dlg", "idlg"], help="comma-separated: dlg,idlg")
    rep.add_argument("--figure", type=Path, help="save the fidelity figure here (PNG)")
    rep.add_argument("--protocol", action="store_true",
                     help="the papers' exact protocol in the engine: N(0,1) start, no restarts")
    bench = commands.add_parser("bench", help="engine vs the official one-at-a-time loop, same trials")
    common(bench)
    bench.add_argument("--method", choices=["dlg", "idlg"], default="idlg")
    bench.set_defaults(trials=32)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .attacks import PAPER_PROTOCOL
    from .experiments import benchmark_idlg, reproduce_idlg

    if args.command == "reproduce":
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

            fig = plot_fidelity({m.upper(): out["fidelity"][m] for m in args.methods},
                                title=f"{args.dataset}: fidelity over {args.trials} trials")
            fig.savefig(args.figure, dpi=120)
            print(f"figure: {args.figure}")
    else:
        out = benchmark_idlg(args.dataset, args.trials, method=args.method, iterations=args.iterations,
                             device=args.device, seed=args.seed, progress=not args.no_progress)
        print(f"{args.method} on {args.dataset}, {args.trials} trials, {args.iterations} iterations, "
              f"{out['torch_threads']} torch threads ({out['source']})")
        print(f"{'':16} {'attacks/s':>10} {'speedup':>8} {'labels':>7} {'fid<1e-4':>9} {'fid<1e-2':>9}")
        for name, row in out["rows"].items():
            print(f"{name:16} {row['attacks_per_second']:10.3f} {row['speedup']:7.1f}x "
                  f"{100 * row['label_accuracy']:6.1f}% {100 * row['fidelity']['0.0001']:8.1f}% "
                  f"{100 * row['fidelity']['0.01']:8.1f}%")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
