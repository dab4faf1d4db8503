"""BLAS threads chosen from training's own steps (threads.py), and how training uses the choice: the
count is in force inside every step, switched between windows, recorded per epoch and in the
checkpoint, continued by a resumed run. No test times anything for a verdict: step times are fed."""

import csv
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from minivae import VAEConfig, threads, train as T
from minivae.checkpoint import load_checkpoint
from minivae.data import Dataset, load_digits
from minivae.threads import BlasThreads, ThreadChoice, candidates, fastest

DIGITS = load_digits()
DATA = Dataset("digits", DIGITS.x_train[:200], DIGITS.y_train[:200], DIGITS.x_test[:50],
               DIGITS.y_test[:50], (8, 8))
MCFG = VAEConfig(x_dim=64, hidden=(16,), z_dim=2)


def blas_now() -> int:
    return next(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_candidates_are_one_the_powers_of_two_and_all_cores():
    assert candidates(1) == [1]
    assert candidates(2) == [1, 2]
    assert candidates(6) == [1, 2, 4, 6]
    assert candidates(16) == [1, 2, 4, 8, 16]


def test_fastest_prefers_fewer_threads_within_five_percent():
    assert fastest({1: 1.0, 2: 0.5}) == 2
    assert fastest({1: 1.0, 2: 0.97}) == 1     # within 5%: fewer threads leave a core free
    assert fastest({1: 2.0, 2: 1.0, 4: 0.99}) == 2
    assert fastest({1: 0.3, 2: 1.0}) == 1


def test_a_decision_is_clear_cut_when_the_fastest_beats_every_other_count_by_decisive():
    assert threads.DECISIVE == 1.3
    assert threads.decisive({2: 0.005, 1: 0.0066}) and threads.decisive({1: 0.004, 2: 0.010})
    assert not threads.decisive({2: 0.005, 1: 0.0064})                 # 1.28x: looked at again soon
    assert not threads.decisive({1: 0.010, 2: 0.005, 4: 0.006})        # 4 threads are close to 2
    assert threads.decisive({1: 0.010, 2: 0.005, 4: 0.0066})


def run(choice, seconds_of, steps):
    """Feed ``steps`` steps to ``choice``, each taking ``seconds_of(count)``; the counts used."""
    used = []
    for _ in range(steps):
        used.append(choice.threads)
        choice.step_done(seconds_of(choice.threads))
    return used


def busy_machine(n):   # one competitor: one thread 8 ms a step, two threads 21 ms
    return {1: 0.008, 2: 0.021}[n]


def quiet_machine(n):  # two threads 5 ms, one 8 ms
    return {1: 0.008, 2: 0.005}[n]


def runs(used):
    """``used`` as (count, steps) runs: [2, 2, 1] -> [(2, 2), (1, 1)]."""
    out = []
    for n in used:
        if out and out[-1][0] == n:
            out[-1] = (n, out[-1][1] + 1)
        else:
            out.append((n, 1))
    return out


def steps_in(seconds_per_step):
    """Steps in a window of WINDOW seconds (it ends at the step that reaches it)."""
    return math.ceil(threads.WINDOW / seconds_per_step - 1e-9)


def one_window(c, seconds_of):
    """Feed steps until the window under way ends."""
    used = run(c, seconds_of, 1)
    while c.window[0]:
        used += run(c, seconds_of, 1)
    return used


def settle(c, seconds_of):
    """Feed windows until the run's first decision has been confirmed by its second look."""
    while c.held is None or c.queue or c.unsettled:
        one_window(c, seconds_of)
    return c


def test_each_count_is_tried_on_two_windows_alternating_then_the_faster_kept(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    used = run(c, busy_machine, 800)
    at2, at1 = steps_in(0.021), steps_in(0.008)                   # 24 and 63 steps: half a second each
    first = threads.WARMUP_STEPS + at2
    # 1 thread is 2.6x faster: clear-cut, so it is held for EXPLORE_EVERY windows, with no second look
    assert runs(used) == [(2, first), (1, at1), (2, at2), (1, 800 - first - at1 - at2)]
    assert c.per_step == pytest.approx({2: 0.021, 1: 0.008}) and c.unsettled == 0
    c = ThreadChoice()
    used = run(c, quiet_machine, 500)
    assert set(used[-150:]) == {2}
    assert c.window_steps == 100                # windows of WINDOW = 0.5 s at 5 ms a step


def test_a_slow_spell_in_one_of_the_first_windows_does_not_decide(monkeypatch):
    """Quiet (2 threads win), but the machine is 2x slower during the first window: with one window
    per count 1 thread would be kept; each count's faster window of two keeps 2."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    run(c, lambda n: 2 * quiet_machine(n), threads.WARMUP_STEPS + steps_in(0.010))
    assert c.threads == 1 and c.per_step == pytest.approx({2: 0.010})
    used = run(c, quiet_machine, 500)
    assert c.per_step == pytest.approx({2: 0.005, 1: 0.008}) and set(used[-200:]) == {2}


def test_a_window_ends_after_half_a_second_however_slow_its_steps(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    run(c, quiet_machine, 400)
    one_window(c, quiet_machine)
    assert c.window_steps == 100
    run(c, lambda n: 0.2, threads.MIN_WINDOW_STEPS - 1)   # 200 ms steps: 0.8 s, but only 4 steps
    assert c.window[0] == threads.MIN_WINDOW_STEPS - 1
    run(c, lambda n: 0.2, 1)                              # the 5th ends it, not the 100th
    assert c.window == [0, 0.0] and c.strikes == 1


def test_the_others_are_tried_again_every_explore_every_windows(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    window = threads.WINDOW / 0.008
    used = run(c, busy_machine, int(window * (threads.EXPLORE_EVERY + 8)))
    tries = [i for i in range(1, len(used)) if used[i] == 2 and used[i - 1] == 1]
    assert len(tries) == 2    # at the start (2, 1, 2, 1), and one window at 2 (clear-cut) 40 windows later
    assert c.unsettled == 0                      # confirmed: 1 thread is 2.6x faster
    share = used.count(2) / len(used)
    assert share < 0.05                          # the slow count costs < 5% of the steps


def look(c, seconds_of):
    """Hold the count until the next routine look; the counts of that look's windows, in order."""
    while not c.queue:
        one_window(c, seconds_of)
    looked = []
    while c.queue:
        looked.append(c.threads)
        one_window(c, seconds_of)
    return looked


def test_a_routine_look_at_a_clear_cut_choice_gives_the_other_count_one_window(monkeypatch):
    """Every EXPLORE_EVERY windows the other counts are tried again. When the count held is still
    clear-cut (DECISIVE against the others' last times), each other count gets one window; a close
    choice gets two each, alternating, as at the start. What one window finds still decides: when the
    load has gone and the other count is now the faster, training switches to it."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = settle(ThreadChoice(), quiet_machine)                      # 2 threads, 1.6x faster than 1
    assert look(c, quiet_machine) == [1] and c.threads == 2 and c.unsettled == 0
    assert look(c, quiet_machine) == [1]

    def close(n):   # 2 threads 1.2x faster: not clear-cut
        return {1: 0.006, 2: 0.005}[n]
    c = settle(ThreadChoice(), close)
    assert look(c, close) == [1, 2, 1] and c.threads == 2

    c = settle(ThreadChoice(), busy_machine)                       # 1 thread held, the competitor stays
    assert look(c, busy_machine) == [2] and c.threads == 1
    assert look(c, quiet_machine) == [2] and c.threads == 2        # it left: one window at 2 shows it
    assert c.unsettled == 0                                        # and 1.6x is clear-cut


def test_a_choice_with_one_candidate_runs_through_its_looks(monkeypatch):
    """One usable core and no fixed count (ThreadChoice used directly): a look has no other count to
    try, and the held one is measured again, as it always was, past several look intervals."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    c = ThreadChoice()
    used = run(c, lambda n: 0.01, 3 * threads.CALM * threads.EXPLORE_EVERY * steps_in(0.01))
    assert set(used) == {1} and c.counts == [1] and c.state()["strikes"] == 0


def test_an_exploration_after_a_drift_gives_each_count_two_windows(monkeypatch):
    """A drift means the load changed: the old times say nothing, and the look is a full one."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = settle(ThreadChoice(), quiet_machine)
    one_window(c, busy_machine)                                    # a competitor: 2 threads 4x slower
    assert not c.queue and c.strikes == 1
    one_window(c, busy_machine)                                    # confirmed by a second window
    looked = []
    while c.queue:
        looked.append(c.threads)
        one_window(c, busy_machine)
    assert looked == [1, 2, 1] and c.threads == 1                  # two windows at 1, with 2's second between


def test_a_drift_confirmed_by_a_second_window_retries_the_other_counts(monkeypatch):
    """Quiet at first (2 threads win), then a competitor starts: the windows at 2 are 4x slower;
    after the second of them the old measurement of 1 thread is dropped, 1 is tried, and kept."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    run(c, quiet_machine, 400)
    assert c.threads == 2
    window = c.window_steps
    used = run(c, busy_machine, 400)
    assert used[-1] == 1 and steps_in(0.021) < used.index(1) <= window + 2 * steps_in(0.021)


def test_one_slow_window_alone_is_not_a_drift(monkeypatch):
    """A neighbour's burst slows one window 4x: nothing is re-tried, and the count's time is kept."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = settle(ThreadChoice(), quiet_machine)
    kept, window = dict(c.per_step), c.window_steps
    one_window(c, lambda n: 4 * quiet_machine(n))          # exactly one window, 4x slower
    used = run(c, quiet_machine, 3 * window)
    assert set(used) == {2} and c.per_step == pytest.approx(kept)


def test_between_explorations_one_slow_window_does_not_switch_to_the_other_count(monkeypatch):
    """Quiet, 2 threads kept (6 ms against 1 thread's 8 ms). One window at 2 takes 8.5 ms a step (a
    slow spell, not a drift: under 1.5x): the count stays 2, though that window was slower than the
    old measurement of 1 thread; had it switched, 1 would stay until the next exploration."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)

    def close(n):
        return {1: 0.008, 2: 0.006}[n]
    c = settle(ThreadChoice(), close)
    assert c.threads == 2 and not c.queue
    one_window(c, lambda n: 0.0085 if n == 2 else 0.008)
    assert c.threads == 2 and c.per_step[2] == pytest.approx(0.0085) and c.strikes == 0
    used = run(c, close, 300)
    assert set(used) == {2}


def test_a_slow_spell_over_both_windows_of_the_faster_count_is_corrected_soon(monkeypatch):
    """Quiet (2 threads: 5 ms, 1 thread: 8 ms), but both first windows at 2 meet a slow spell (10 ms):
    1 thread wins. A first decision is looked at again after SOON windows, not EXPLORE_EVERY, and 2
    is kept from then on. (Under the old rule 1 thread stayed for 40 windows.)"""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    spell = steps_in(0.010)
    run(c, lambda n: 0.010, threads.WARMUP_STEPS + spell)          # first window at 2: slow
    run(c, quiet_machine, steps_in(0.008))                          # first at 1
    run(c, lambda n: 0.010, spell)                                  # second at 2: slow again
    run(c, quiet_machine, steps_in(0.008))                          # second at 1: decided
    assert c.threads == 1 and not c.queue and threads.interval(c.unsettled) == threads.SOON
    used = run(c, quiet_machine, threads.SOON * steps_in(0.008) + 2 * steps_in(0.005) + steps_in(0.008))
    assert used[threads.SOON * steps_in(0.008)] == 2                # tried again after SOON windows
    assert c.threads == 2 and c.unsettled == 0   # changed, but clear-cut (1.6x): no further early look
    settle(c, quiet_machine)
    assert set(run(c, quiet_machine, 20 * 100)) == {2}


def test_a_decision_is_confirmed_once_soon_then_tried_every_explore_every_windows(monkeypatch):
    """A run's first decision, when it is close (2 threads 1.2x faster), is looked at again after SOON
    windows; once an exploration keeps the count, the next comes EXPLORE_EVERY windows later, or CALM
    times that when the count kept is every core (a competitor that starts there is a drift). A
    clear-cut one (1.6x) is held that long at once. A close decision that changes the count is looked
    at again after SOON, 2 SOON, 4 SOON ... windows while it keeps changing."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    calm = threads.EXPLORE_EVERY * threads.CALM

    def close(n):
        return {1: 0.006, 2: 0.005}[n]

    def close_busy(n):
        return {1: 0.005, 2: 0.006}[n]
    for machine, kept, expected in ((close, 2, [4, calm, calm]), (quiet_machine, 2, [calm, calm]),
                                    (close_busy, 1, [4, 40, 40]), (busy_machine, 1, [40, 40])):
        c = ThreadChoice()
        run(c, machine, threads.WARMUP_STEPS)
        windows = [one_window(c, machine)[0] for _ in range(4 + 4 + 3 + 2 * (calm + 3))]
        assert windows[:4] == [2, 1, 2, 1] and c.unsettled == 0
        held = [n for count, n in runs(windows[4:]) if count == kept and n > 1]   # windows held between tries
        assert held[:len(expected)] == expected, machine.__name__
    flips = {"n": 0}

    def flipping(n):      # the faster count changes at every exploration (by 1.2x: no drift, not clear-cut)
        return {1: 0.005, 2: 0.006}[n] if flips["n"] % 2 else {1: 0.006, 2: 0.005}[n]
    c = ThreadChoice()
    run(c, flipping, threads.WARMUP_STEPS)
    gaps, since = [], 0
    for _ in range(300):
        exploring = bool(c.queue)
        one_window(c, flipping)
        if exploring and not c.queue:          # an exploration just ended; then the load changes
            flips["n"] += 1
            gaps.append(since)
            since = 0
        elif not exploring:
            since += 1
    assert gaps[1:7] == [4, 8, 16, 32, 40, 40]   # windows held between one exploration and the next
    assert threads.interval(0) == threads.interval(threads.MAX_UNSETTLED) == threads.EXPLORE_EVERY
    assert [threads.interval(k) for k in (1, 2, 3, 4, 5)] == [4, 8, 16, 32, 40]
    assert threads.interval(0, all_cores=True) == threads.CALM * threads.EXPLORE_EVERY == 160
    assert threads.interval(2, all_cores=True) == 8           # an unconfirmed choice is looked at soon


def test_a_fixed_count_is_never_changed():
    c = ThreadChoice(fixed=3)
    assert run(c, lambda n: 1.0 if n == 3 else 0.0, 300) == [3] * 300


def test_state_round_trips_and_a_damaged_one_is_refused(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    c = ThreadChoice()
    run(c, busy_machine, 77)
    state = ThreadChoice.check_state(__import__("json").loads(__import__("json").dumps(c.state())))
    d = ThreadChoice.from_state(state, fixed=None)
    assert run(d, busy_machine, 300) == run(c, busy_machine, 300)   # continues where c was
    assert ThreadChoice.from_state(state, fixed=1).threads == 1     # a fixed count wins
    assert ThreadChoice.check_state(None) is None
    for damage in ({"threads": 0}, {"per_step": {"x": 1.0}}, {"window": [1]}, {"skip": 99},
                   {"counts": [0]}, {"since_explore": -1}, {"per_step": {"2": float("nan")}},
                   {"strikes": 3}, {"queue": [0]}, {"queue": "12"}, {"unsettled": -1},
                   {"unsettled": 1000}, {"unsettled": 4.0}, {"held": 0}, {"held": "2"}):
        with pytest.raises(ValueError, match="blas"):
            ThreadChoice.check_state({**c.state(), **damage})
    with pytest.raises(ValueError, match="blas"):
        ThreadChoice.check_state({"threads": 2})
    older = {k: v for k, v in c.state().items() if k != "queue"}   # written before explorations queued
    assert ThreadChoice.from_state(ThreadChoice.check_state(older), fixed=None).queue == []
    older = {k: v for k, v in c.state().items() if k not in threads.LATER_KEYS}
    resumed = ThreadChoice.from_state(ThreadChoice.check_state(older), None)
    assert resumed.unsettled == 0 and resumed.held is None


def test_blas_threads_switches_the_library_and_restores_it(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    before = blas_now()
    c = ThreadChoice()
    seen = []
    with BlasThreads(c) as blas:
        for _ in range(200):
            seen.append((c.threads, blas_now()))
            blas.step_done(busy_machine(c.threads))
        assert blas.mostly() == 1
    assert all(want == got for want, got in seen) and {w for w, _ in seen} == {1, 2}
    assert blas_now() == before


def test_blas_threads_fixed_for_small_models_one_core_and_cupy(monkeypatch):
    big = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    assert T.blas_threads(MCFG, T.TrainConfig(batch_size=32)) == 1
    assert T.blas_threads(big, T.TrainConfig(batch_size=100)) is None      # chosen from the steps
    assert T.blas_threads(big, T.TrainConfig(batch_size=100, threads=3)) == 3
    monkeypatch.setattr(T, "usable_cores", lambda: 1)
    assert T.blas_threads(big, T.TrainConfig(batch_size=100)) == 1


@pytest.fixture
def busy(monkeypatch):
    """Training chooses on this small model (as on a big one) and each step "takes" what a busy
    2-core machine would take at its count (the loop's own clock is not used for the choice)."""
    monkeypatch.setattr(T, "SMALL_GEMM", 0)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    original = BlasThreads.step_done
    monkeypatch.setattr(BlasThreads, "step_done", lambda self, s: original(self, busy_machine(self.now)))


def test_training_runs_each_step_at_the_count_chosen_and_records_it(tmp_path, busy):
    inside = []
    tcfg = T.TrainConfig(epochs=6, batch_size=8, seed=3)   # 25 steps an epoch
    T.train(MCFG, tcfg, tmp_path / "r", data=DATA, progress=False, log=lambda *a: None,
            callback=lambda e, s, stats: inside.append(blas_now()))
    # the callback comes after the step's time was counted, so it sees the count of the next step:
    # windows of 24 steps at 2 threads (21 ms) and 63 at 1 (8 ms), two each, then 1
    first = threads.WARMUP_STEPS + 24 - 1
    assert runs(inside) == [(2, first), (1, 63), (2, 24), (1, 150 - first - 63 - 24)]
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").read_text().splitlines()))
    assert [r["threads"] for r in rows] == ["2", "1", "1", "1", "2", "1"]


def test_a_resumed_run_continues_the_recorded_choice_and_ends_bit_exact(tmp_path, busy):
    """Stopped at step 10 (still in the window at 2 threads), resumed: the rest of that window runs
    at 2, and with the same step times the choice makes the same switches, so the resumed run ends
    bit for bit where the uninterrupted one did."""
    tcfg = T.TrainConfig(epochs=3, batch_size=8, seed=2)
    counts = {"a": [], "b": []}
    T.train(MCFG, tcfg, tmp_path / "a", data=DATA, progress=False, log=lambda *a: None,
            callback=lambda e, s, st: counts["a"].append(blas_now()))
    T.train(MCFG, T.TrainConfig(epochs=3, batch_size=8, seed=2, max_steps=10), tmp_path / "b",
            data=DATA, progress=False, log=lambda *a: None, callback=lambda e, s, st: counts["b"].append(blas_now()))
    T.train(MCFG, tcfg, tmp_path / "b", data=DATA, resume=True, progress=False, log=lambda *a: None,
            callback=lambda e, s, st: counts["b"].append(blas_now()))
    assert counts["a"] == counts["b"] and counts["b"][10] == 2 and 1 in counts["b"]
    assert len(counts["b"]) == 75
    a, b = load_checkpoint(tmp_path / "a")[0], load_checkpoint(tmp_path / "b")[0]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_checkpoints_from_before_the_choice_still_resume(tmp_path):
    from minivae.checkpoint import _read
    T.train(MCFG, T.TrainConfig(epochs=2, batch_size=32, seed=1, max_steps=3), tmp_path / "r", data=DATA,
            progress=False, log=lambda *a: None)
    meta = _read(tmp_path / "r" / "checkpoint.safetensors", None)[3]
    assert meta["blas"]["threads"] == 1          # a small model: fixed at 1
    assert T.Progress.from_meta({k: v for k, v in meta.items() if k != "blas"}, 7).blas is None
