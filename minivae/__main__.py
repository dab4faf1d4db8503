"""The command line: ``python -m minivae {gradcheck,train,evaluate,sample,fetch,doctor} ...``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from . import __version__
from .checks import is_number
from .config import LIKELIHOOD_MODES, MAX_KEEP, MAX_THREADS

BACKEND_CHOICES = ["numpy", "cupy", "strict", "auto"]
MAX_K = 1_000_000  # evaluate --k: L_5000 is the field's standard


def _integer(low: int, high: int | None = None, why: str = ""):
    """An argparse type: an integer >= ``low`` (and <= ``high``, for the reason ``why``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected an integer <= {high:,} ({why}), got {value:,}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _number(positive: bool):
    """An argparse type: a finite number, > 0 (``positive``) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not is_number(value, 0, closed=not positive):
            raise argparse.ArgumentTypeError(f"expected a finite number {'> 0' if positive else '>= 0'}, "
                                             f"got {text}")
        return value
    parse.__name__ = "positive number" if positive else "number >= 0"
    return parse


def _run_name(text: str) -> str:
    """``--name``: one folder name under runs/, never a path that leaves it."""
    if not text or text in (".", "..") or "/" in text or (os.sep in text) or (os.altsep and os.altsep in text):
        raise argparse.ArgumentTypeError(f"expected a plain folder name under runs/ (no '/', '..' or "
                                         f"absolute path), got {text!r}; use --out for another place")
    return text


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


def cmd_gradcheck(args) -> int:
    from .backend import resolve
    from .config import VAEConfig
    from .core.gradcheck import TOLERANCE, check_model
    from .memory import batch_bytes, require

    modes = [args.likelihood] if args.likelihood else list(LIKELIHOOD_MODES)
    activations = [args.activation] if args.activation else ["tanh", "softplus", "relu"]
    depths = [args.hidden] if args.hidden is not None else [(), (5,), (5, 4)]
    samples = [args.n_samples] if args.n_samples else [1, 3]
    configs = [(mode, activation, hidden, n_samples) for mode in modes for activation in activations
               for hidden in depths for n_samples in samples]
    _check_gradcheck_size(args, depths)
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
        require(4 * batch_bytes(cfg, GRADCHECK_BATCH, cfg.n_samples, 8), "this gradient check",
                "choose a smaller n_samples", backend=resolve(args.backend))
        report = check_model(cfg, args.backend, seed=args.seed, batch=GRADCHECK_BATCH, h=args.h,
                             order=args.order, directions=args.directions)
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
    print(f"\nmax relative error per likelihood (bar {TOLERANCE:g}, {args.order}-point stencil, "
          f"h = {args.h:g}, backend {args.backend}):")
    for mode, err in worst.items():
        print(f"  {mode:<22}{err:.2e}")
    total = len(configs)
    print(f"{total - failed} of {total} configurations pass" + ("" if not failed else "  <-- FAILED"))
    return 1 if failed else 0


GRADCHECK_MAX_ELEMENTS = 200_000  # every element costs 4 evaluations of the loss
GRADCHECK_BATCH = 3  # examples; the check does not depend on how many


def _check_gradcheck_size(args, depths) -> None:
    """One line instead of hours of finite differences (or a MemoryError) for a model too big."""
    from .config import VAEConfig
    from .vae import n_parameters
    for hidden in depths:
        n = n_parameters(VAEConfig(x_dim=args.x_dim, hidden=hidden, z_dim=args.z_dim,
                                   likelihood="gaussian", variance="per_pixel"))
        if n > GRADCHECK_MAX_ELEMENTS:
            raise ValueError(f"gradcheck compares every one of a model's parameters, 4 loss evaluations "
                             f"each: --x-dim {args.x_dim} --z-dim {args.z_dim} --hidden "
                             f"{','.join(map(str, hidden)) or 'none'} has {n:,}, over the "
                             f"{GRADCHECK_MAX_ELEMENTS:,} it checks; choose smaller sizes (the check "
                             f"does not depend on them)")


def model_config(args, x_dim):
    """The VAEConfig of ``train``'s arguments for data of ``x_dim`` pixels."""
    from .config import VAEConfig
    likelihood, variance = LIKELIHOOD_MODES[args.likelihood]
    return VAEConfig(x_dim=x_dim, hidden=args.hidden, z_dim=args.z_dim, activation=args.activation,
                     likelihood=likelihood, variance=variance, sigma=args.sigma,
                     n_samples=args.n_samples, init=args.init, init_std=args.init_std, beta=args.beta,
                     free_bits=args.free_bits)


def binarize(args) -> str:
    """``--binarize``, or its default: a Bernoulli decoder is a probability only for binary pixels."""
    if args.binarize is not None:
        return args.binarize
    return "dynamic" if LIKELIHOOD_MODES[args.likelihood][0] == "bernoulli" else "none"


def train_config(args):
    """The TrainConfig of ``train``'s arguments (``backend auto`` resolved)."""
    from .train import TrainConfig
    return TrainConfig(dataset=args.dataset, epochs=args.epochs or 300, batch_size=args.batch_size,
                       optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                       opt_eps=args.opt_eps, binarize=binarize(args), seed=args.seed,
                       backend=args.backend, dtype=args.dtype, max_steps=args.max_steps,
                       data_dir=args.data_dir, threads=args.threads, sync_every=args.sync_every,
                       kl_warmup=args.kl_warmup, keep=args.keep or 2)


# With --resume a run continues with its own settings; these flags still apply.
RESUME_FLAGS = {"resume", "out", "epochs", "max_steps", "keep", "no_progress"}


def _given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The option strings of ``parser`` that appear in ``argv`` (as ``--x v`` or ``--x=v``)."""
    given = []
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                given.append((action.dest, opt))
    return given


def _say_backend(requested: str, resolved: str) -> None:
    if requested == "auto":
        from .backend import cupy_status
        usable, why = cupy_status()
        print(f"backend auto -> {resolved} ({why})")


def cmd_train(args) -> int:
    import time

    from .data import load_dataset
    from .plots import make_figures
    from .run import new_run_folder
    from .train import load_run_config, train

    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: give one of them")
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out RUN_DIR, the run folder to continue")
        ignored = [opt for dest, opt in _given_flags(args.parser, args.argv) if dest not in RESUME_FLAGS]
        if ignored:
            print(f"--resume continues with the run's own settings (its run.json); ignoring "
                  f"{', '.join(ignored)}")
        mcfg, tcfg = load_run_config(args.out)
        if args.epochs is not None:
            tcfg.epochs = args.epochs
        if args.keep is not None:
            tcfg.keep = args.keep
        if args.max_steps is not None:
            tcfg.max_steps = args.max_steps
        out = Path(args.out)
    else:
        tcfg = train_config(args)
        _say_backend(args.backend, tcfg.backend)
        mcfg = None
    data = load_dataset(tcfg.dataset, tcfg.data_dir, progress=not args.no_progress)
    if mcfg is None:
        mcfg = model_config(args, data.x_dim)
        if args.out or args.name:
            out = Path(args.out) if args.out else Path("runs") / args.name
        else:  # a new folder, made exclusively: two runs started in the same second get two
            out = new_run_folder("runs", time.strftime(f"{args.dataset}-%Y%m%d-%H%M%S"))
    print(f"run folder: {out.resolve()}")
    print(f"model: {mcfg}")
    print(f"data: {data.name}, {len(data.x_train)} train / {len(data.x_test)} test, x_dim {data.x_dim}; "
          f"backend {tcfg.backend}, {tcfg.dtype}; {tcfg.optimizer}, batch {tcfg.batch_size}")
    t0 = time.perf_counter()
    result = train(mcfg, tcfg, out, data=data, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress)
    last = result["last"].get("test_loss")
    print(f"{result['status']} after {result['global_step']} steps in {time.perf_counter() - t0:.1f}s; "
          + (f"final test -ELBO {last:.4f} nats" if last is not None else
             "no epoch has finished yet, so there is no test -ELBO"))
    try:
        figures = make_figures(out, result["params"], mcfg, data, tcfg.backend, tcfg.dtype)
    except (Exception, MemoryError) as e:  # noqa: BLE001 - the run itself is safe whatever drawing does
        print(f"error: the run is complete and saved in {out} (checkpoint, metrics.csv, run.json), but "
              f"its figures could not be drawn: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return 1
    print("figures: " + ", ".join(str(p) for p in figures))
    print(f"next: python -m minivae evaluate {out}")
    return 128 + result["signal"] if result["status"] == "interrupted" else 0


def _load_run(run_dir, backend=None):
    from .backend import resolve
    from .checkpoint import load_checkpoint
    from .run import load_run

    mcfg, tcfg, run_id = load_run(run_dir)
    if backend is not None:
        _say_backend(backend, resolve(backend))
    backend = resolve(backend or tcfg.backend)
    params, _, _, _ = load_checkpoint(Path(run_dir) / "checkpoint", backend, tcfg.dtype, expect=mcfg,
                                      run_id=run_id)
    return mcfg, tcfg, params, backend


def cmd_evaluate(args) -> int:
    import json
    import time

    from tqdm import tqdm

    from .backend import Generator, from_numpy
    from .core.bounds import likelihood_is_density
    from .vae import evaluate
    from .files import write_atomic
    from .data import load_dataset
    from .memory import doing
    from .run import check_same_data
    from .train import prepare_data

    mcfg, tcfg, params, backend = _load_run(args.run_dir, args.backend)
    data = load_dataset(tcfg.dataset, tcfg.data_dir, progress=False)
    check_same_data(args.run_dir, data)
    _, x_test = prepare_data(data, tcfg)
    if args.limit:
        x_test = x_test[:args.limit]
    x = from_numpy(x_test, backend, tcfg.dtype)
    _require_evaluate_memory(mcfg, tcfg, x.shape[0], args.batch_size, args.k, backend)
    t0 = time.perf_counter()
    # the ELBO with training's own draws (so it is the number training printed last), the
    # importance samples with --seed
    with doing(f"evaluating {x.shape[0]:,} test examples, {min(args.batch_size, x.shape[0]):,} at a time"), \
            tqdm(total=x.shape[0], desc=f"ELBO{f' and L_{args.k}' if args.k else ''}", unit="ex",
                 disable=not (sys.stderr.isatty() or args.k > 10_000), leave=False, file=sys.stderr) as bar:
        stats = evaluate(params, x, mcfg, Generator((tcfg.seed, 3), backend), k=args.k,
                         batch_size=args.batch_size, iwae_rng=Generator((args.seed, 4), backend),
                         on_batch=bar.update)
    stats["seconds"] = time.perf_counter() - t0
    density = likelihood_is_density(mcfg, x)
    stats.update(n_examples=int(x.shape[0]), k=args.k, seed=args.seed, backend=backend,
                 likelihood_is_density=density, what=_what_the_numbers_are(mcfg, tcfg, density))
    print(f"{data.name} test set, {x.shape[0]} examples ({backend}, {tcfg.dtype}):")
    print(f"  ELBO                 {stats['elbo']:.4f} nats  (recon {stats['recon']:.4f}, KL {stats['kl']:.4f})")
    if args.k:
        bound = "log p(x) >= " if density else ""
        print(f"  {bound}L_{args.k:<{6 if density else 18}} {stats[f'iwae_{args.k}']:.4f} nats  "
              f"(importance-weighted{' bound' if density else ''})")
    print(f"  active units         {stats['active_units']} of {mcfg.z_dim}  (Cov_x E_q[z_j] > 0.01)")
    if not density:
        print("  " + stats["what"])
    print(f"  {stats['seconds']:.1f}s")
    path = Path(args.run_dir) / "evaluation.json"
    write_atomic(path, json.dumps(stats, indent=1).encode())
    print(f"wrote {path}")
    bad = [name for name in ("elbo", f"iwae_{args.k}") if name in stats and not math.isfinite(stats[name])]
    if bad:
        print(f"error: {' and '.join(bad)} came out {stats[bad[0]]}: the checkpoint's parameters give a "
              f"non-finite bound on this data (overflowing weights?); these numbers mean nothing",
              file=sys.stderr)
        return 1
    return 0


EVALUATE_CHUNK = 100  # importance samples drawn at once per example (bounds.evaluate's chunk)


def _require_evaluate_memory(mcfg, tcfg, n_examples: int, batch_size: int, k: int,
                             backend: str = "numpy") -> None:
    """evaluate's working set (a batch of examples, times the samples drawn at once) must fit."""
    from .memory import batch_bytes, itemsize, require
    batch = min(batch_size, n_examples)
    draws = max(min(k, EVALUATE_CHUNK), mcfg.n_samples)
    require(batch_bytes(mcfg, batch, draws, itemsize(tcfg.dtype)),
            f"evaluating {batch:,} examples at a time with {draws} samples each",
            "choose a smaller --batch-size (100 is plenty)", backend=backend)


def _what_the_numbers_are(mcfg, tcfg, density: bool) -> str:
    if density:
        return (f"ELBO <= L_k <= log p(x): bounds on the log-likelihood of the test set under the "
                f"{mcfg.likelihood} model")
    return (f"note: the Bernoulli formula is not a probability for grayscale pixels (binarize: "
            f"{tcfg.binarize}), so these are values of that formula, not bounds on a log-likelihood "
            f"(tutorial 5). For a log-likelihood, train with --binarize dynamic or static, or with "
            f"--likelihood continuous_bernoulli.")


def cmd_sample(args) -> int:
    from .plots import plot_samples
    from .data import load_dataset

    mcfg, tcfg, params, backend = _load_run(args.run_dir, args.backend)
    shape = load_dataset(tcfg.dataset, tcfg.data_dir, progress=False).image_shape
    path = Path(args.out or Path(args.run_dir) / "samples.png")
    if path.is_dir():
        path = path / "samples.png"
    plot_samples(params, mcfg, shape, path, backend, tcfg.dtype, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_tutorials(args) -> int:
    from .tutorial import copy_tutorials
    written = copy_tutorials(args.dir, force=args.force, solutions=args.solutions)
    target = Path(args.dir)
    print(f"copied {len(written)} files into {target.resolve()}: the 8 tutorials (.ipynb and .py), "
          f"NOTATION.md and the exercises" + (", and the worked solutions in solutions/ (for the "
                                              "teacher: keep them out of the class's copy)" if args.solutions else ""))
    print(f"start with:\n  cd {target}\n  jupyter lab 01_model_and_elbo.ipynb     "
          f"(or: python 01_model_and_elbo.py)\nexercises:\n  python -m minivae.exercises check all   "
          f"(inside {target})")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import main as doctor
    return doctor(backend=args.backend, run_tests=not args.no_tests)


def cmd_fetch(args) -> int:
    from .data import fetch
    paths = fetch(args.name, args.data_dir)
    for role, p in paths.items():
        print(f"{role:<14}{p}")
    return 0


POSITIVE, COUNT = _integer(1), _integer(0)


def build_parser() -> argparse.ArgumentParser:
    """``python -m minivae``'s parser: one subcommand per ``_add_*`` below."""
    parser = argparse.ArgumentParser(prog="python -m minivae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_gradcheck, _add_train, _add_evaluate, _add_sample, _add_fetch, _add_tutorials,
                _add_doctor):
        add(sub)
    return parser


def _add_gradcheck(sub) -> None:
    """``gradcheck``: the finite-difference check's options."""
    from .core.gradcheck import DEFAULT_H

    g = sub.add_parser("gradcheck", help="finite-difference check of every gradient (float64)",
                       description="Check loss_and_grads against centred finite differences, every "
                       "element of every parameter. With no options: every likelihood mode, "
                       "activation, depth 0-2 and L in {1, 3}. Exits 1 when any check fails.")
    g.add_argument("--likelihood", choices=list(LIKELIHOOD_MODES))
    g.add_argument("--activation", choices=["tanh", "softplus", "relu"])
    g.add_argument("--hidden", type=_hidden, default=None, help="e.g. 8,8 or none (default: all of none, 5, 5,4)")
    g.add_argument("--n-samples", type=POSITIVE, default=None, help="L (default: 1 and 3)")
    g.add_argument("--x-dim", type=POSITIVE, default=6)
    g.add_argument("--z-dim", type=POSITIVE, default=3)
    g.add_argument("--backend", default="numpy", choices=BACKEND_CHOICES)
    g.add_argument("--seed", type=COUNT, default=0)
    g.add_argument("--h", type=_number(positive=True), default=DEFAULT_H, help="finite-difference step")
    g.add_argument("--order", type=int, default=4, choices=[2, 4], help="stencil order")
    g.add_argument("--directions", type=_integer(0, 10_000, "each costs 4 evaluations of the loss; "
                                                    "1,000 already sample every direction well"),
                   default=0, help="add random-direction checks (at most 10,000)")
    g.add_argument("-v", "--verbose", action="store_true", help="print every table, not just failures")
    g.set_defaults(func=cmd_gradcheck)


def _add_train(sub) -> None:
    """``train``: the data's and the model's options here, training's in ``_add_training_options``."""
    t = sub.add_parser("train", help="train a VAE into a run folder (default: digits, no network)",
                       description="Train a VAE. The default needs no network: scikit-learn's 8x8 "
                       "digits, a 2-D latent, under a minute on 2 cores.")
    t.add_argument("--dataset", default="digits", choices=["digits", "bars", "mnist", "fashion-mnist"])
    t.add_argument("--data-dir", default=None, help="folder with the IDX files (or set MINIVAE_DATA)")
    t.add_argument("--hidden", type=_hidden, default=(256,), help="hidden widths, e.g. 500 or 200,200")
    t.add_argument("--z-dim", type=POSITIVE, default=2)
    t.add_argument("--activation", default="tanh", choices=["tanh", "softplus", "relu"])
    t.add_argument("--likelihood", default="bernoulli", choices=list(LIKELIHOOD_MODES))
    t.add_argument("--sigma", type=_number(positive=True), default=1.0, help="std of the fixed-variance Gaussian")
    t.add_argument("--n-samples", type=POSITIVE, default=1, help="L, samples of z per example")
    t.add_argument("--beta", type=_number(positive=False), default=1.0,
                   help="weight of the KL term in the training loss (1: the ELBO; reported ELBOs "
                        "always use 1)")
    t.add_argument("--free-bits", type=_number(positive=False), default=0.0, metavar="NATS",
                   help="free bits per latent dimension (Kingma et al. 2016): a unit's batch-mean KL "
                        "below NATS costs nothing in training (0: the ELBO)")
    t.add_argument("--kl-warmup", type=_number(positive=False), default=0.0, metavar="EPOCHS",
                   help="raise the KL weight linearly from 0 to --beta over this many epochs")
    t.add_argument("--init", default="normal", choices=["normal", "uniform", "glorot"])
    t.add_argument("--init-std", type=_number(positive=True), default=0.01)
    _add_training_options(t)
    t.set_defaults(func=cmd_train, parser=t)


def _add_training_options(t) -> None:
    """``train``'s options for the optimization, the device and the run folder."""
    t.add_argument("--epochs", type=POSITIVE, default=None,
                   help="default 300 (with --resume: extend the run to this many)")
    t.add_argument("--batch-size", type=POSITIVE, default=32)
    t.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adagrad", "adam"])
    t.add_argument("--lr", type=_number(positive=True), default=None,
                   help="default: the optimizer's (adam 1e-3, others 1e-2)")
    t.add_argument("--weight-decay", type=_number(positive=False), default=0.0,
                   help="the N(0, I) weight prior of the paper is 1/N_train")
    t.add_argument("--opt-eps", type=_number(positive=True), default=None, help="the optimizer's epsilon")
    t.add_argument("--binarize", default=None, choices=["none", "static", "dynamic"],
                   help="default: dynamic for the Bernoulli likelihood (so that the data are binary and "
                        "evaluate's numbers bound log p(x)), none for the others")
    t.add_argument("--max-steps", type=POSITIVE, default=None, help="stop after this many updates")
    t.add_argument("--seed", type=COUNT, default=0)
    t.add_argument("--backend", default="numpy", choices=BACKEND_CHOICES,
                   help="auto: cupy where a CUDA GPU can be used, else numpy")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--threads", type=_integer(1, MAX_THREADS, "more threads than a machine has cores "
                                                              "only wait for each other"), default=None,
                   help="BLAS threads (default: 1 for small models, else measured: the faster of 1 "
                        "and all usable cores, again when the load changes)")
    t.add_argument("--sync-every", type=POSITIVE, default=25,
                   help="read the losses back from the device every this many steps (default 25)")
    t.add_argument("--out", default=None, help="run folder (default runs/<name>)")
    t.add_argument("--name", type=_run_name, default=None,
                   help="run name under runs/ (default: dataset and time)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out or --name already holds (default: refuse)")
    t.add_argument("--keep", type=_integer(1, MAX_KEEP, "each checkpoint is a whole copy of the model "
                                                     "and its optimizer state"), default=None,
                   help=f"checkpoints kept: the newest and the ones before it (default 2, at most {MAX_KEEP})")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_evaluate(sub) -> None:
    """``evaluate``: the test ELBO and the importance-weighted bound."""
    e = sub.add_parser("evaluate", help="test ELBO, importance-weighted bound, active units")
    e.add_argument("run_dir")
    e.add_argument("--k", type=_integer(0, MAX_K, "past that L_k moves by less than its own noise, "
                                         "and one example costs minutes"),
                   default=5000, help=f"importance samples (0: ELBO only; at most {MAX_K:,})")
    e.add_argument("--batch-size", type=POSITIVE, default=100)
    e.add_argument("--limit", type=POSITIVE, default=None, help="evaluate the first N test examples only")
    e.add_argument("--seed", type=COUNT, default=0, help="seed of the importance samples (the ELBO "
                   "uses the training run's own draws, so it matches the run's last test -ELBO)")
    e.add_argument("--backend", default=None, choices=BACKEND_CHOICES, help="default: the run's backend")
    e.set_defaults(func=cmd_evaluate)


def _add_sample(sub) -> None:
    """``sample``: draws from a trained run's prior."""
    s = sub.add_parser("sample", help="draw samples from the prior of a trained run")
    s.add_argument("run_dir")
    s.add_argument("--n", type=POSITIVE, default=64)
    s.add_argument("--seed", type=COUNT, default=0)
    s.add_argument("--out", default=None, help="image path or folder (default RUN_DIR/samples.png)")
    s.add_argument("--backend", default=None, choices=BACKEND_CHOICES)
    s.set_defaults(func=cmd_sample)


def _add_fetch(sub) -> None:
    """``fetch``: find or download an IDX data set."""
    f = sub.add_parser("fetch", help="find or download an IDX data set (mnist, fashion-mnist)")
    f.add_argument("name", choices=["mnist", "fashion-mnist"])
    f.add_argument("--data-dir", default=None)
    f.set_defaults(func=cmd_fetch)


def _add_tutorials(sub) -> None:
    """``tutorials``: copy the tutorials and exercises into a folder."""
    tu = sub.add_parser("tutorials", help="copy the tutorials (notebooks) and exercises into a folder",
                        description="Copy the eight tutorials (as .ipynb notebooks and .py sources), "
                        "the notation page and the exercises into DIR, to work in. Never overwrites a "
                        "file unless --force.")
    tu.add_argument("dir", help="the folder to copy into (made if missing)")
    tu.add_argument("--force", action="store_true", help="overwrite files that are already there")
    tu.add_argument("--solutions", action="store_true",
                    help="also copy the worked solutions, into DIR/solutions (a teacher's copy)")
    tu.set_defaults(func=cmd_tutorials)


def _add_doctor(sub) -> None:
    """``doctor``: versions, the BLAS, the GPU."""
    d = sub.add_parser("doctor", help="versions, BLAS, whether a GPU can be used; with one, check it",
                       description="Print the versions, the BLAS and whether CuPy can use a CUDA "
                       "device (and why not). With a usable GPU, also run the cupy tests, the "
                       "float64 gradient check and agreement with numpy, one epoch on numpy and "
                       "cupy, and benchmarks/gpu_speed.py (with PyTorch). Exits 1 on any failure.")
    d.add_argument("--backend", default=None, choices=["cupy", "strict"],
                   help="run the device checks on this backend (strict: the emulated device, "
                        "which tests the checks without a GPU)")
    d.add_argument("--no-tests", action="store_true", help="leave out the test suite run")
    d.set_defaults(func=cmd_doctor)


SHRINK = {  # what to make smaller when a command runs out of memory
    "train": "choose a smaller --batch-size, --n-samples or --hidden (the last checkpoint is kept: "
             "continue with --resume)",
    "evaluate": "choose a smaller --batch-size or --k",
    "sample": "choose a smaller --n",
    "gradcheck": "choose a smaller --x-dim, --z-dim, --hidden or --directions",
}


def _out_of_memory(e: MemoryError, command: str) -> str:
    """One line for a MemoryError: where (the host, or the CUDA device for CuPy's), doing what
    (``memory.doing``), and what to make smaller."""
    where = ""
    if type(e).__module__.startswith("cupy"):
        try:
            from .backend import cupy_device_name
            where = f" on {cupy_device_name()}"
        except Exception:  # noqa: BLE001 - a device that cannot even say its name is still the GPU
            where = " on the GPU"
    doing = getattr(e, "minivae_doing", None) or f"running `{command}`"
    detail = " ".join(str(e).split())[:200]
    return (f"out of memory{where} while {doing}{f' ({detail})' if detail else ''}; "
            f"{SHRINK.get(command, 'choose smaller sizes')}. Files already written are intact.")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except MemoryError as e:  # CuPy's OutOfMemoryError is one too; whatever was saved stays saved
        print(f"error: {_out_of_memory(e, args.command)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as e:  # bad input, missing files, a full disk: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
