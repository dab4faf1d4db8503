"""The command line: ``python -m minivae {gradcheck,train,evaluate,sample,fetch} ...``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _hidden(text: str) -> tuple[int, ...]:
    """``"500"`` -> (500,), ``"200,200"`` -> (200, 200), ``""`` or ``"none"`` -> ()."""
    text = text.strip()
    if text in ("", "none", "()"):
        return ()
    try:
        widths = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 500 or 200,200 (or 'none'), got {text!r}")
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths


LIKELIHOOD_MODES = {
    "bernoulli": ("bernoulli", "fixed"),
    "continuous_bernoulli": ("continuous_bernoulli", "fixed"),
    "gaussian": ("gaussian", "fixed"),
    "gaussian_shared": ("gaussian", "shared"),
    "gaussian_per_pixel": ("gaussian", "per_pixel"),
}


def cmd_gradcheck(args) -> int:
    from .config import VAEConfig
    from .gradcheck import check_model

    modes = [args.likelihood] if args.likelihood else list(LIKELIHOOD_MODES)
    activations = [args.activation] if args.activation else ["tanh", "softplus", "relu"]
    depths = [args.hidden] if args.hidden is not None else [(), (5,), (5, 4)]
    samples = [args.n_samples] if args.n_samples else [1, 3]
    configs = [(mode, activation, hidden, n_samples) for mode in modes for activation in activations
               for hidden in depths for n_samples in samples]
    full_tables = args.verbose or len(configs) == 1
    failed = 0
    worst = {}
    if not full_tables:
        print(f"{'likelihood':<22}{'activation':<11}{'hidden':<9}{'L':>2}{'worst tensor':>16}"
              f"{'rel error':>11}  result")
    for mode, activation, hidden, n_samples in configs:
        likelihood, variance = LIKELIHOOD_MODES[mode]
        cfg = VAEConfig(x_dim=args.x_dim, hidden=hidden, z_dim=args.z_dim, activation=activation,
                        likelihood=likelihood, variance=variance, n_samples=n_samples)
        report = check_model(cfg, args.backend, seed=args.seed, h=args.h, order=args.order,
                             directions=args.directions)
        failed += not report.passed
        worst[mode] = max(worst.get(mode, 0.0), report.max_rel_error)
        if full_tables or not report.passed:
            print(report, end="\n\n")
        if not full_tables:
            row = max(report.rows, key=lambda r: r.max_rel_error)
            kinks = sum(r.kinks for r in report.rows)
            note = f" ({kinks} ReLU kink(s) skipped)" if kinks else ""
            print(f"{mode:<22}{activation:<11}{','.join(map(str, hidden)) or 'none':<9}{n_samples:>2}"
                  f"{row.name:>16}{row.max_rel_error:>11.2e}  {'pass' if report.passed else 'FAIL'}{note}")
    print(f"\nmax relative error per likelihood (bar {1e-8:g}, {args.order}-point stencil, "
          f"h = {args.h:g}, backend {args.backend}):")
    for mode, err in worst.items():
        print(f"  {mode:<22}{err:.2e}")
    total = len(configs)
    print(f"{total - failed} of {total} configurations pass" + ("" if not failed else "  <-- FAILED"))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from .gradcheck import DEFAULT_H

    parser = argparse.ArgumentParser(prog="python -m minivae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gradcheck", help="finite-difference check of every gradient (float64)",
                       description="Check loss_and_grads against centred finite differences, every "
                       "element of every parameter. With no options: every likelihood mode, "
                       "activation, depth 0-2 and L in {1, 3}. Exits 1 when any check fails.")
    g.add_argument("--likelihood", choices=list(LIKELIHOOD_MODES))
    g.add_argument("--activation", choices=["tanh", "softplus", "relu"])
    g.add_argument("--hidden", type=_hidden, default=None, help="e.g. 8,8 or none (default: all of none, 5, 5,4)")
    g.add_argument("--n-samples", type=int, default=None, help="L (default: 1 and 3)")
    g.add_argument("--x-dim", type=int, default=6)
    g.add_argument("--z-dim", type=int, default=3)
    g.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "strict"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--h", type=float, default=DEFAULT_H, help="finite-difference step")
    g.add_argument("--order", type=int, default=4, choices=[2, 4], help="stencil order")
    g.add_argument("--directions", type=int, default=0, help="add random-direction checks")
    g.add_argument("-v", "--verbose", action="store_true", help="print every table, not just failures")
    g.set_defaults(func=cmd_gradcheck)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
