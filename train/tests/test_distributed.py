"""Data parallelism under torchrun: averaging the gradients of two ranks gives the step that one
process takes on both ranks' batches together, and a two-process stage runs to its end."""
import os
import subprocess
import sys

import numpy as np
import torch

from train.tests.test_train_steps import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def _ae_step(model, x):
    from train.train import ae_losses

    opt = torch.optim.SGD(model.ae.parameters(), lr=0.5)
    ae_losses(model.ae, x)[0]["loss"].backward()
    return opt


def _rank_main(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from train.common import Dist

    Dist.init(torch.device("cpu"))
    torch.manual_seed(0)
    model = tiny_model()
    Dist.broadcast_model(model)
    x = _batch()[rank * 2:(rank + 1) * 2]  # each rank gets half of the batch
    opt = _ae_step(model, x)
    Dist.average_grads(opt)
    opt.step()
    assert Dist.any(rank == 1) and not Dist.any(False)
    if rank == 0:
        torch.save(model.ae.state_dict(), out)
    Dist.finish()  # leaves the process (see Dist.finish)


def test_two_ranks_take_the_step_of_one_process_on_both_batches(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank0.pt")
    port = 29500 + os.getpid() % 1000
    mp.spawn(_rank_main, args=(2, port, out), nprocs=2, join=True)

    torch.manual_seed(0)
    model = tiny_model()
    opt = _ae_step(model, _batch())  # the loss is a mean: the union's gradient is the ranks' mean
    opt.step()
    got = torch.load(out)
    for k, v in model.ae.state_dict().items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    # The step moved the weights (otherwise the comparison above would prove nothing).
    fresh = tiny_model().ae.state_dict()
    assert max((got[k] - fresh[k]).abs().max().item() for k in fresh) > 1e-3


def test_a_stage_runs_under_torchrun_with_two_processes(tmp_path):
    rng = np.random.default_rng(0)
    n = 60  # the ae stage shows 16 validation glyphs
    np.savez_compressed(tmp_path / "emoji64.npz", images=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
                        edges=(rng.random((n, 64, 64)) < 0.1).astype(np.uint8),
                        split=np.array([0] * 40 + [1] * 20, np.uint8),
                        candidates=rng.integers(0, n, (n, 6)), names=np.array([f"g{i}" for i in range(n)]),
                        keys=np.arange(n))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.train", "ae", "--data", str(tmp_path), "--run-dir", str(run), "--steps", "3",
           "--batch", "2", "--crop", "16"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks ended with identical weights" in r.stdout, r.stdout[-3000:]
    assert (run / "midm_ae.pt").exists() and (run / "ae" / "ckpt.pt").exists()
    assert torch.load(run / "ae" / "ckpt.pt", weights_only=False)["step"] == 3
