import json

import numpy as np
import pytest

from minivae import VAEConfig, backend as B, init_params, optim
from minivae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CFG = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, likelihood="gaussian", variance="shared")


def _trained_state(backend):
    params = init_params(CFG, seed=1, backend=backend, dtype="float32")
    state = {}
    grads = {k: v * 0.5 + 0.1 for k, v in params.items()}
    for _ in range(3):
        optim.step(params, grads, state, "adam", lr=0.01)
    return params, state


@pytest.mark.parametrize("to", ["numpy", "strict"])
def test_round_trip_across_backends(tmp_path, backend, to):
    params, state = _trained_state(backend)
    save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": 3})
    p2, cfg2, s2, meta = load_checkpoint(tmp_path / "ck", backend=to)
    assert cfg2 == CFG and meta == {"epoch": 3}
    for k in params:
        assert B.backend_of(p2[k]) == to
        np.testing.assert_array_equal(B.to_numpy(p2[k]), B.to_numpy(params[k]))
        np.testing.assert_array_equal(B.to_numpy(s2[k]["m"]), B.to_numpy(state[k]["m"]))
        assert s2[k]["t"] == 3 and s2[k]["lr"] == 0.01
    assert B.dtype_name(p2["dec.logvar"]) == "float32" and tuple(p2["dec.logvar"].shape) == ()


def test_nothing_is_pickled(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_other_architecture_is_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    other = VAEConfig(x_dim=6, hidden=(7,), z_dim=2, likelihood="gaussian", variance="shared")
    with pytest.raises(CheckpointError, match=r"another architecture.*'hidden': \(\(7,\), \(5,\)\)"):
        load_checkpoint(tmp_path / "ck", expect=other)


def test_mismatched_or_corrupt_files_are_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "a", params, CFG, state)
    save_checkpoint(tmp_path / "b", init_params(CFG, seed=2), CFG, {})
    (tmp_path / "a.npz").write_bytes((tmp_path / "b.npz").read_bytes())
    with pytest.raises(CheckpointError, match=r"does not match .*\(checksum differs\)"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing")


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path):
    params, state = _trained_state("numpy")
    for _ in range(2):
        save_checkpoint(tmp_path / "ck", params, CFG, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.npz"]
    record = json.loads((tmp_path / "ck.json").read_text())
    assert record["format"] == "minivae-checkpoint" and record["config"]["hidden"] == [5]
