"""The training step as a GPU sees it, counted on the strict backend (the GPU's stand-in): how many
array operations it issues (each a kernel launch on CuPy), how many generators it makes, what it
copies from the host, and that nothing in it has a data-dependent shape."""

import collections

import numpy as np
import pytest

array_api_strict = pytest.importorskip("array_api_strict")

from minivae import VAEConfig, backend as B  # noqa: E402
from minivae.data import Dataset  # noqa: E402
from minivae.train import TrainConfig, train  # noqa: E402

PAPER = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)  # Kingma & Welling's MNIST model
VIEWS = {"reshape", "__getitem__", "permute_dims", "matrix_transpose"}  # no kernel on a GPU
Array = type(array_api_strict.asarray([0.0]))


@pytest.fixture
def ops(monkeypatch):
    """Counts, by name, every array-api-strict function and array operator called, and every
    Generator made. ``ops["asarray from host"]`` counts arrays made from host data."""
    counts = collections.Counter()

    def counting(owner, name, label):
        f = getattr(owner, name)

        def wrapper(*a, **k):
            counts[label] += 1
            if label == "asarray" and not isinstance(a[0], Array):
                counts["asarray from host"] += 1
            return f(*a, **k)
        monkeypatch.setattr(owner, name, wrapper)

    for name in dir(array_api_strict):
        obj = getattr(array_api_strict, name)
        if callable(obj) and not isinstance(obj, type) and not name.startswith("_"):
            counting(array_api_strict, name, name)
    for name in dir(Array):
        if name.startswith("__") and name not in ("__init__", "__new__", "__getattribute__", "__setattr__",
                                                  "__repr__", "__str__", "__class__", "__hash__", "__len__",
                                                  "__init_subclass__", "__subclasshook__", "__dir__",
                                                  "__reduce__", "__reduce_ex__", "__sizeof__", "__format__",
                                                  "__delattr__", "__eq__", "__ne__", "__array_namespace__",
                                                  "__dlpack__", "__dlpack_device__", "__array__", "__iter__",
                                                  "__bool__", "__float__", "__int__", "__index__", "__complex__"):
            if callable(getattr(Array, name, None)):
                counting(Array, name, name)
    init = B.Generator.__init__

    def counting_init(self, *a, **k):
        counts["Generator made"] += 1
        init(self, *a, **k)
    monkeypatch.setattr(B.Generator, "__init__", counting_init)
    return counts


def _per_step(ops, mcfg, binarize="none", n=1000, batch=100):
    """Train one epoch on strict; the counts of each step after the first (which includes setup)."""
    per_step = []

    def snapshot(epoch, step, stats):
        per_step.append(collections.Counter(ops))
        ops.clear()

    g = np.random.default_rng(0)
    data = Dataset("x", g.random((n, mcfg.x_dim), dtype=np.float32), np.zeros(n, np.int64),
                   g.random((100, mcfg.x_dim), dtype=np.float32), np.zeros(100, np.int64), (28, 28))
    tcfg = TrainConfig(epochs=1, batch_size=batch, backend="strict", binarize=binarize, sync_every=1000)
    import tempfile
    train(mcfg, tcfg, tempfile.mkdtemp(), data=data, progress=False, log=lambda *a: None, callback=snapshot)
    return per_step[1:]


def _kernels(counts) -> int:
    return sum(v for k, v in counts.items()
               if k not in VIEWS and k not in ("asarray", "asarray from host", "Generator made"))


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_a_step_of_the_paper_model_issues_at_most_100_array_operations(ops, binarize):
    steps = _per_step(ops, PAPER, binarize)
    kernels = {_kernels(c) for c in steps}
    assert len(kernels) == 1, kernels  # every step the same
    n = kernels.pop()
    print(f"784-500-20, batch 100, Adam, binarize {binarize}: {n} array operations per step; "
          f"{dict(steps[0].most_common(8))}")
    assert n <= 100
    assert steps[0]["concat"] == 1 and steps[0]["sqrt"] == 1  # Adam runs once, over one flat buffer


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_a_step_makes_no_generator_and_copies_only_its_draws_from_the_host(ops, binarize):
    """On CuPy the draws are made on the device by the run's one generator (rekeyed per step); on
    strict, which has no generator, they are the only host-to-device copies a step may make. The
    batch indices are copied once per epoch, not per step."""
    steps = _per_step(ops, PAPER, binarize)
    draws = 2 if binarize == "dynamic" else 1  # eps, and the uniforms of dynamic binarization
    assert [c["Generator made"] for c in steps] == [0] * len(steps)
    assert [c["asarray from host"] for c in steps] == [draws] * len(steps)


def test_the_counts_catch_a_planted_host_copy_and_a_planted_generator(ops, monkeypatch):
    import minivae.core.model as V
    honest = V.forward

    def planted(params, x, eps, cfg):
        xp = B.namespace_of(x)
        xp.asarray([1.0, 2.0], device=x.device)         # a host list made a device array
        B.Generator(0, "strict")                          # a generator made per step
        return honest(params, x, eps, cfg)

    import minivae.train as T
    monkeypatch.setattr(T, "forward", planted)
    steps = _per_step(ops, VAEConfig(x_dim=784, hidden=(8,), z_dim=2))
    assert steps[0]["asarray from host"] == 2 and steps[0]["Generator made"] == 1


@pytest.mark.parametrize("plant", ["boolean mask", "nonzero", "unique_values"])
def test_data_dependent_shapes_are_refused_on_strict(monkeypatch, plant):
    """Each would make a GPU wait to learn a shape; the strict flags (conftest) refuse them."""
    import minivae.train as T
    honest = T.forward

    def planted(params, x, eps, cfg):
        xp = B.namespace_of(x)
        if plant == "boolean mask":
            x[x > 0.5]
        elif plant == "nonzero":
            xp.nonzero(x > 0.5)
        else:
            xp.unique_values(x)
        return honest(params, x, eps, cfg)

    monkeypatch.setattr(T, "forward", planted)
    with pytest.raises(RuntimeError, match="data-dependent|boolean"):
        _per_step(collections.Counter(), VAEConfig(x_dim=784, hidden=(8,), z_dim=2), n=200)
