"""Try to lose a run, the way an unlucky user would, and count what happens.

    python benchmarks/reliability_probe.py [--kills 30] [--damage 200] [--loads 3000]

1. kill -9: a real ``python -m minivae train`` process is killed at a random moment (run.json,
   metrics.csv and checkpoint writes included), then resumed to the end; its parameters must equal
   an uninterrupted run's, bit for bit.
2. damage: the newest checkpoint of a finished run gets random damage (truncation, bit flips,
   garbage, a re-signed edit); loading must give the previous checkpoint with a warning, or a
   CheckpointError, never anything else.
3. reads during saves: one process saves in a loop while this one loads in a loop; every load must
   succeed with the current model.
Prints one line of counts per part; exits 1 if any case was lost.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivae.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

TRAIN = [sys.executable, "-m", "minivae", "train", "--hidden", "16", "--batch-size", "64",
         "--no-progress", "--epochs", "6"]


def params_of(run):
    return {k: np.asarray(v) for k, v in load_checkpoint(run)[0].items()}


def kills(n: int, work: Path, rng: random.Random) -> tuple[int, int]:
    whole = work / "whole"
    subprocess.run(TRAIN + ["--out", str(whole)], check=True, capture_output=True, cwd=ROOT)
    reference, t0 = params_of(whole), time.perf_counter()
    subprocess.run(TRAIN + ["--out", str(work / "timing")], check=True, capture_output=True, cwd=ROOT)
    duration = time.perf_counter() - t0
    lost = 0
    for i in range(n):
        out = work / f"kill{i}"
        proc = subprocess.Popen(TRAIN + ["--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resume = ["--resume", "--out", str(out)] if (out / "run.json").exists() else ["--out", str(out), "--overwrite"]
        done = subprocess.run(TRAIN + resume, capture_output=True, cwd=ROOT, text=True)
        finished = "has already trained" in done.stderr  # killed while drawing the figures
        final = params_of(out) if done.returncode == 0 or finished else None
        if final is None or any(not np.array_equal(final[k], reference[k]) for k in reference):
            lost += 1
            print(f"  kill {i}: LOST ({done.stderr.strip()[-200:]})")
    return n, lost


def damage(n: int, work: Path, rng: random.Random) -> dict:
    base = work / "whole"
    counts = {"fell back to the previous checkpoint": 0, "CheckpointError": 0, "loaded unharmed": 0,
              "other exception": 0}
    for i in range(n):
        run = work / f"damage{i}"
        shutil.copytree(base, run)
        f = run / "checkpoint.safetensors"
        data = bytearray(f.read_bytes())
        kind = rng.choice(["truncate", "flip", "garbage", "header"])
        if kind == "truncate":
            data = data[:rng.randrange(len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "garbage":
            at = rng.randrange(len(data))
            data[at:at + 64] = bytes(rng.randrange(256) for _ in range(64))
        else:
            n_header = int.from_bytes(data[:8], "little")
            at = 8 + rng.randrange(n_header)
            data[at] = rng.randrange(32, 127)
        f.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                meta = load_checkpoint(run)[3]
            if caught and meta["epoch"] == 5:
                counts["fell back to the previous checkpoint"] += 1
            else:
                counts["loaded unharmed"] += 1  # e.g. a flip in JSON whitespace
        except CheckpointError:
            counts["CheckpointError"] += 1
        except Exception as e:  # noqa: BLE001 - this is what the probe counts
            counts["other exception"] += 1
            print(f"  damage {i} ({kind}): {type(e).__name__}: {e}")
        shutil.rmtree(run)
    return counts


_WRITER = """
import sys
from minivae import VAEConfig, init_params
from minivae.checkpoint import save_checkpoint
cfg = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
for i in range(int(sys.argv[2])):
    save_checkpoint(sys.argv[1], init_params(cfg, seed=i % 3), cfg, {}, {"i": i})
"""


def reads(n_saves: int, work: Path) -> tuple[int, int]:
    from minivae import VAEConfig, init_params
    from minivae.checkpoint import save_checkpoint
    cfg = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
    stem = work / "live" / "checkpoint"
    save_checkpoint(stem, init_params(cfg), cfg, {}, {"i": -1})
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(stem), str(n_saves)], cwd=ROOT)
    loads = errors = 0
    while writer.poll() is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                load_checkpoint(stem, expect=cfg)
        except Exception as e:  # noqa: BLE001
            errors += 1
            print(f"  read error: {type(e).__name__}: {e}")
        loads += 1
    return loads, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--damage", type=int, default=200)
    ap.add_argument("--saves", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="minivae-probe-"))
    n, lost = kills(args.kills, work, rng)
    print(f"kill -9 at a random moment, then resume: {n - lost}/{n} ended bit-exact with the uninterrupted run")
    counts = damage(args.damage, work, rng)
    print(f"random damage to the newest of 2 checkpoints, {args.damage} cases: {json.dumps(counts)}")
    loads, errors = reads(args.saves, work)
    print(f"loads beside a process saving {args.saves} times (784-500-20): {loads} loads, {errors} errors")
    shutil.rmtree(work)
    return 1 if lost or errors or counts["other exception"] else 0


if __name__ == "__main__":
    sys.exit(main())
