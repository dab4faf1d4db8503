"""BLAS threads on the CPU: as many as this process can actually use, chosen from training's own steps.

OpenBLAS's worker threads spin-wait for a core. When another program holds one of the cores, a
matrix product split over every core waits for the busy one, and while NumPy's single-threaded work
(Adam, tanh) runs, the spinning workers compete with both. More threads are then slower, not
faster: on 2 cores with one busy competitor, an epoch of the paper's 784-500-20 model at batch 100
took 5.3 s on one thread and 14.2 s on two (5.0 s on two, quiet; benchmarks/README.md). Which
count is faster depends on the load at the moment, so training measures it on its own steps, which
costs no extra work: it runs in windows of about half a second, tries each candidate count on two
windows at the start, alternating (2, 1, 2, 1 on two cores), keeps the count whose faster window
was fastest, and stays with it until it tries the others again the same way, every
``EXPLORE_EVERY`` windows or as soon as the current count's step time has drifted for two windows
in a row (one slow window is often only a neighbour's brief burst). Two alternating windows each,
not one: this machine's speed wanders by 20-30% over seconds, and the first window of a run is
often slow (8.96 ms a step at 2 threads, then 5.91). And no switch between explorations: comparing
each window with the other count's old time switched to the slower count after one slow window,
and kept it until the next exploration (a quiet benchmark ran 2 of 3 epochs at 1 thread where 2
were 14% faster). A window ends after half a second even when its steps are not done, so trying a
count that is 3x slower costs half a second, not 1.5. A decision not yet confirmed (a run's first,
or one that changed the count) is tried again soon, after ``SOON`` windows, then after twice as
many each time it changes again; once an exploration keeps the count it held, the next comes after
``EXPLORE_EVERY``. A slow spell over both first windows of the faster count once kept one thread
for a whole 11 s benchmark phase, quiet, where two were 1.58x faster; the early second look costs
one exploration per run (about 0.7 s under load at batch 100, less quiet). A clear-cut decision needs
no second look: when the kept count's faster window beats each other count's by ``DECISIVE`` (1.3x)
or more, it counts as confirmed. A slow spell would have to slow both windows of the truly faster
count by its margin times 1.3 (2x in that incident) to decide wrongly; quiet at batch 1000, where two
threads are 1.5x faster than one, this saves a third of a 5-epoch benchmark phase's one-thread steps.
For the same reason the routine look every ``EXPLORE_EVERY`` windows at a clear-cut choice (still
``DECISIVE`` against the other counts' last times) gives each other count one window, not two; a
drift, or a close choice, is explored with two each. And while the choice holds every core, routine
looks come ``CALM`` (4) times less often, about every 80 s: a program that starts on one of those
cores slows each step 2-3x (batch 100: 7.9 s an epoch quiet, 19.4 s beside one spinning process), a
drift caught within two windows. Holding fewer threads they stay every 20 s, since a program that
stops changes a one-thread step by a few percent (10.2 s against 10.1 s), which only a look finds.
Quiet, the routine looks were most of the choice's cost after its first exploration.
(A few steps timed apart from training mislead here: under load their times scatter by 2x, and
the cost of spinning threads shows only over longer stretches.)

The products give different bits at different counts (OpenBLAS 0.3.31 splits some sums by thread),
so the measured choice makes the exact numbers of a run depend on the machine's load. A fixed count
(``--threads N``, and the single thread of small models) keeps a run reproducible bit for bit, and
so does a resumed run that is given the same counts. The checkpoint records the choice's state, and
metrics.csv the count each epoch mostly ran with.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

WINDOW = 0.5          # seconds of steps per measurement window
EXPLORE_EVERY = 40    # windows between two tries of the counts not in use (about 20 s)
SOON = 4              # ... after an unconfirmed decision: then twice as many each time, up to EXPLORE_EVERY
MAX_UNSETTLED = 16    # unconfirmed decisions in a row are counted up to this
DRIFT = 1.5           # two windows in a row this many times slower or faster than the count's: re-try
WARMUP_STEPS = 3      # a run's first steps fill caches and start the pool's threads: not timed
MIN_WINDOW_STEPS = 5  # a window that runs out of time still has this many steps
ROUNDS = 2            # windows per count in an exploration, the counts alternating
TIE = 1.05            # counts within this factor of the fastest are ties: the fewest threads win
DECISIVE = 1.3        # a count this much faster than each other one is confirmed without a second look
CALM = 4              # holding every core, a confirmed choice is looked at again this many times less often
STATE_KEYS = ("counts", "threads", "per_step", "window_steps", "window", "since_explore", "strikes", "skip",
              "queue", "unsettled", "held")
LATER_KEYS = ("queue", "unsettled", "held")   # absent from checkpoints written before they existed


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def candidates(cores: int) -> list[int]:
    """Thread counts worth trying on ``cores`` cores: 1, the powers of two below, and all of them."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def fastest(per_step: dict[int, float]) -> int:
    """The count with the least time per step; among counts within 5% of it, the fewest threads
    (they leave cores to the rest of the machine and are the least exposed to a change of load)."""
    best = min(per_step.values())
    return min(n for n, t in per_step.items() if t <= TIE * best)


def decisive(per_step: dict[int, float]) -> bool:
    """Whether the fastest count's time beats each other count's by ``DECISIVE`` or more."""
    best, *others = sorted(per_step.values())
    return all(t >= DECISIVE * best for t in others)


def interval(unsettled: int, all_cores: bool = False) -> int:
    """Windows from an exploration to the next, after ``unsettled`` unconfirmed decisions in a row:
    SOON, 2 SOON, 4 SOON ... up to EXPLORE_EVERY, which is also the interval after a confirmed one;
    ``CALM`` times that when the confirmed count is every core (``all_cores``): a program that starts
    on a core then slows each step 2-3x, a drift caught within two windows, where holding fewer
    threads a program that stops changes their step time by a few percent, which only a look finds."""
    if unsettled:
        return min(EXPLORE_EVERY, SOON << min(unsettled - 1, 8))
    return EXPLORE_EVERY * (CALM if all_cores else 1)


@dataclass
class ThreadChoice:
    """The BLAS thread count of a training run, step by step.

    ``fixed``: a count that is never measured (``--threads N``; 1 for small models or one core).
    Otherwise the loop asks ``threads`` before a step and reports the step's seconds to ``step_done``,
    which returns the count for the next step. Everything but ``fixed`` is what ``state()`` records.
    """
    fixed: int | None = None
    counts: list = field(default_factory=list)      # the candidates, tried in this order
    threads: int | None = None                      # the count now in use
    per_step: dict = field(default_factory=dict)    # count -> seconds per step, its last window
                                                    # (while exploring: its faster one)
    window_steps: int = 1000                        # steps per window, at most (set from the chosen
                                                    # count's time; a window also ends after WINDOW s)
    window: list = field(default_factory=lambda: [0, 0.0])  # steps and seconds of the window so far
    since_explore: int = 0                          # windows since the last exploration ended
    strikes: int = 0                                # drifted windows in a row
    skip: int = WARMUP_STEPS
    queue: list = field(default_factory=list)       # the counts still to try in this exploration
    unsettled: int = 0                              # unconfirmed decisions in a row (see ``interval``)
    held: int | None = None                         # the count held before this exploration (None: the first)

    def __post_init__(self):
        if self.fixed is not None:
            self.threads = self.fixed
        elif self.threads is None:
            self.counts = self.counts or sorted(candidates(usable_cores()), reverse=True)
            self.queue = self.counts * ROUNDS if len(self.counts) > 1 else []
            self.threads = self.counts[0]

    def step_done(self, seconds: float) -> int:
        """Count one step of ``seconds``; at a window's end, record it and choose. Returns the count
        for the next step."""
        if self.fixed is not None:
            return self.threads
        if self.skip:
            self.skip -= 1
            return self.threads
        self.window = [self.window[0] + 1, self.window[1] + seconds]
        steps, elapsed = self.window
        if steps >= self.window_steps or (steps >= MIN_WINDOW_STEPS and elapsed >= WINDOW):
            self._end_window()
        return self.threads

    def _end_window(self) -> None:
        steps, seconds = self.window
        per_step = seconds / steps
        self.window, self.since_explore = [0, 0.0], self.since_explore + 1
        if self.queue:  # exploring: this window's count is queue[0]; a count keeps its faster window
            self.queue.pop(0)
            self.per_step[self.threads] = min(per_step, self.per_step.get(self.threads, math.inf))
            if self.queue:
                self.threads = self.queue[0]
            else:
                self.threads = fastest(self.per_step)
                confirmed = self.threads == self.held or decisive(self.per_step)
                self.unsettled = 0 if confirmed else min(self.unsettled + 1, MAX_UNSETTLED)
                self.since_explore = 0
        else:  # between explorations the count stays: one slow window of it is not a reason to switch
            before = self.per_step.get(self.threads)
            drifted = before is not None and not before / DRIFT <= per_step <= before * DRIFT
            self.strikes = self.strikes + 1 if drifted else 0
            if not drifted:  # a drifted window is not this count's time until a second one confirms it
                self.per_step[self.threads] = per_step
            due = interval(self.unsettled, all_cores=self.threads == max(self.counts))
            if self.strikes >= 2 or self.since_explore >= due:   # the load changed, or may have
                others = [n for n in self.counts if n != self.threads]
                # a routine look at a clear-cut choice (still DECISIVE against the others' last
                # times) gives each other count one window; a drift or a close choice, ROUNDS each
                now = {**self.per_step, self.threads: per_step}
                routine = bool(others) and self.strikes < 2 and decisive(now)
                rounds = 1 if routine else ROUNDS
                self.per_step, self.held = {self.threads: per_step}, self.threads
                self.strikes = 0
                self.queue = (others + [self.threads]) * (rounds - 1) + others
                self.threads = self.queue[0]
        if not self.queue:
            self.window_steps = max(MIN_WINDOW_STEPS, min(1000, math.ceil(WINDOW / max(per_step, 1e-6))))

    def state(self) -> dict:
        """What a checkpoint records, so that a resumed run continues the same choice."""
        return {"counts": list(self.counts), "threads": self.threads,
                "per_step": {str(n): t for n, t in self.per_step.items()},
                "window_steps": self.window_steps, "window": list(self.window),
                "since_explore": self.since_explore, "strikes": self.strikes, "skip": self.skip,
                "queue": list(self.queue), "unsettled": self.unsettled, "held": self.held}

    @classmethod
    def from_state(cls, state: dict | None, fixed: int | None) -> "ThreadChoice":
        """The choice a checkpoint recorded (``check_state``'d), or a new one; ``fixed`` wins."""
        if state is None or fixed is not None:
            return cls(fixed=fixed)
        return cls(counts=list(state["counts"]), threads=state["threads"],
                   per_step={int(n): t for n, t in state["per_step"].items()},
                   window_steps=state["window_steps"], window=list(state["window"]),
                   since_explore=state["since_explore"], strikes=state["strikes"], skip=state["skip"],
                   queue=list(state.get("queue", [])),
                   unsettled=state.get("unsettled", 0), held=state.get("held"))

    @staticmethod
    def check_state(state) -> dict | None:
        """``state`` as a checkpoint recorded it (None in checkpoints from before it was); ValueError
        if it is not what ``state()`` writes."""
        if state is None:
            return None

        def count(n):
            return type(n) is int and 1 <= n <= 4096

        def seconds(t):
            return type(t) is float and math.isfinite(t) and t >= 0
        try:
            ok = (isinstance(state, dict) and set(STATE_KEYS) - set(LATER_KEYS) <= set(state) <= set(STATE_KEYS)
                  and type(state.get("unsettled", 0)) is int and 0 <= state.get("unsettled", 0) <= MAX_UNSETTLED
                  and (state.get("held") is None or count(state.get("held")))
                  and isinstance(state.get("queue", []), list) and len(state.get("queue", [])) <= 32
                  and all(count(n) for n in state.get("queue", []))
                  and isinstance(state["counts"], list) and len(state["counts"]) <= 16
                  and all(count(n) for n in state["counts"]) and count(state["threads"])
                  and isinstance(state["per_step"], dict)
                  and all(k.isdigit() and count(int(k)) and seconds(t) for k, t in state["per_step"].items())
                  and count(state["window_steps"]) and isinstance(state["window"], list)
                  and len(state["window"]) == 2 and type(state["window"][0]) is int
                  and state["window"][0] >= 0 and seconds(float(state["window"][1]))
                  and type(state["since_explore"]) is int and state["since_explore"] >= 0
                  and type(state["strikes"]) is int and 0 <= state["strikes"] <= 2
                  and type(state["skip"]) is int and 0 <= state["skip"] <= WARMUP_STEPS)
        except (AttributeError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"blas: {str(state)[:200]}")
        return state


class BlasThreads:
    """``with BlasThreads(choice) as blas:`` runs BLAS at ``choice.threads`` and, after each step's
    ``blas.step_done(seconds)``, at the count the choice returns; the process's own limits come
    back on exit. ``mostly()`` is the count most steps ran with since it was last asked."""

    def __init__(self, choice: ThreadChoice):
        self.choice = choice
        self.steps_at: dict[int, int] = {}

    def __enter__(self):
        from threadpoolctl import ThreadpoolController
        self._controller = ThreadpoolController()  # finds the loaded BLAS libraries once
        self._original = self._controller.limit(limits=self.choice.threads, user_api="blas")
        self.now = self.choice.threads
        return self

    def step_done(self, seconds: float) -> None:
        self.steps_at[self.now] = self.steps_at.get(self.now, 0) + 1
        n = self.choice.step_done(seconds)
        if n != self.now:
            self._controller.limit(limits=n, user_api="blas")
            self.now = n

    def mostly(self) -> int:
        n = max(self.steps_at, key=self.steps_at.get) if self.steps_at else self.now
        self.steps_at = {}
        return n

    def __exit__(self, *exc):
        self._original.restore_original_limits()
