"""Shared training infrastructure: data batches with augmentation, checkpoints, CSV, sample grids."""
import contextlib
import csv
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import data as emoji_data
from .ops import to_device


def to_pm1(u8):
    return u8.float() / 127.5 - 1.0


class EmojiBatches:
    """Batches of (target image, target edges, exemplar image, exemplar edges) from the npz."""

    def __init__(self, data_dir, split, size=64, seed=0, device="cpu"):
        d = emoji_data.load(data_dir, size)
        idx = np.nonzero(d["split"] == (1 if split == "val" else 0))[0]
        # The whole set lives on the training device as uint8 (15,000 glyphs of five styles: 0.7 GB at
        # 128x128; float32 would be 2.9 GB, and a CPU run of three stages side by side ran out of
        # memory), so a GPU step copies nothing; indices and random draws come from the CPU generator
        # (same draws anywhere).
        self.device = torch.device(device)
        self.images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.edges = torch.from_numpy(d["edges"]).float().unsqueeze(1).to(self.device)
        self.cand = torch.from_numpy(d["candidates"])
        self.names = d["names"]
        self.idx = torch.from_numpy(idx)
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.idx)

    def pixels(self, i):
        """Images `i` as float in [-1, 1]."""
        return to_pm1(self.images[i])

    def sample_indices(self, n):
        return self.idx[torch.randint(len(self.idx), (n,), generator=self.g)]

    def exemplar_of(self, i, k=None):
        c = self.cand[i]
        if k is None:
            k = torch.randint(c.shape[-1], (c.shape[0],), generator=self.g)
        return c[torch.arange(c.shape[0]), k]

    def batch(self, n, augment=True, indices=None, exemplar_k=None):
        i = self.sample_indices(n) if indices is None else torch.as_tensor(indices)
        j = self.exemplar_of(i, exemplar_k)
        img, edge = self.pixels(i), self.edges[i]
        ref, ref_edge = self.pixels(j), self.edges[j]
        if augment:
            flip = (torch.rand(len(i), generator=self.g) < 0.5).to(self.device)
            img = torch.where(flip[:, None, None, None], img.flip(3), img)
            edge = torch.where(flip[:, None, None, None], edge.flip(3), edge)
            ref, ref_edge = self.affine(ref, ref_edge)
        return {"image": img, "edge": edge, "ref": ref, "ref_edge": ref_edge, "idx": i, "ref_idx": j}

    def affine(self, img, edge):
        """Random flip, rotation (+-15 deg), scale (0.85-1.15), shift (+-10%); white fill."""
        b = img.shape[0]
        r = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=self.g)
        ang = r(-15, 15) * np.pi / 180
        sc = r(0.85, 1.15)
        fl = torch.where(torch.rand(b, generator=self.g) < 0.5, -1.0, 1.0)
        tx, ty = r(-0.1, 0.1), r(-0.1, 0.1)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = torch.cos(ang) / sc * fl
        theta[:, 0, 1] = -torch.sin(ang) / sc
        theta[:, 1, 0] = torch.sin(ang) / sc * fl
        theta[:, 1, 1] = torch.cos(ang) / sc
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        theta = theta.to(img.device)
        grid = F.affine_grid(theta, img.shape, align_corners=False)
        img = F.grid_sample(img - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
        edge = F.grid_sample(edge, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return img, edge


class Dist:
    """Data parallelism under torchrun (`python -m torch.distributed.run --nproc_per_node N -m
    train.train STAGE ...`): every process (rank) draws its own batches, gradients are averaged
    across ranks before each optimiser step, so all ranks keep identical weights, and rank 0 alone
    writes logs, sample grids and checkpoints. The stages' loops differ (several sub-networks, a
    codebook reset, an EMA), so the gradients are averaged explicitly instead of through a
    DistributedDataParallel wrapper; the result is the same synchronous SGD. Without torchrun's
    environment (WORLD_SIZE unset or 1) every method is a no-op."""

    world = 1
    rank = 0

    @classmethod
    def init(cls, device):
        """Joins the process group torchrun set up; returns this rank's device (cuda:LOCAL_RANK)."""
        cls.world = int(os.environ.get("WORLD_SIZE", "1"))
        cls.rank = int(os.environ.get("RANK", "0"))
        if cls.world == 1:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    @classmethod
    def main(cls):
        return cls.rank == 0

    @classmethod
    def average_grads(cls, opt):
        """Mean of every parameter's gradient over the ranks (one flat all-reduce)."""
        if cls.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= cls.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    @classmethod
    def any(cls, flag):
        """True on every rank if `flag` is true on one (a common decision to stop)."""
        if cls.world == 1:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([int(bool(flag))], device=cls._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    @classmethod
    def sum_(cls, t):
        if cls.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    @classmethod
    def broadcast_(cls, t):
        """Rank 0's values of `t` on every rank."""
        if cls.world > 1:
            import torch.distributed as dist

            dist.broadcast(t, 0)
        return t

    @classmethod
    def broadcast_model(cls, model):
        for t in list(model.parameters()) + list(model.buffers()):
            cls.broadcast_(t.data)

    @classmethod
    def check_in_sync(cls, model):
        """Fails unless every rank holds the same weights (a rank that skipped an average would
        silently train its own model otherwise); returns the checksum."""
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        if cls.world == 1:
            return total.item()
        import torch.distributed as dist

        total = total.to(cls._comm_device())
        lo, hi = total.clone(), total.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if (hi - lo).abs().item() > 1e-9 * max(1.0, hi.abs().item()):
            raise RuntimeError(f"ranks diverged: weight checksums {lo.item()!r} .. {hi.item()!r}")
        return hi.item()

    @classmethod
    def close(cls):
        if cls.world > 1:
            import torch.distributed as dist

            # Every rank reaches here before any tears down: a rank that destroyed its gloo group
            # while another still held the connection aborted now and then ("terminate called
            # without an active exception", SIGABRT; seen once in CI on 2026-12-02).
            dist.barrier()
            dist.destroy_process_group()

    @classmethod
    def finish(cls):
        """Ends a rank's run: closes the group and, under torchrun, leaves the process at once.
        The interpreter's and the C++ statics' teardown after a gloo group now and then aborted a
        rank whose work was done and saved (SIGABRT, "terminate called without an active
        exception": a joinable std::thread destroyed; in CI on 2026-12-02 and twice on 2026-12-03,
        the last time in a torchrun stage with the barrier above in place). torch has no fix
        (pytorch/pytorch#179291, an atexit destroy, was abandoned), so a finished rank skips it.
        Everything a stage writes is closed or flushed by then (checkpoints, exports, Logger rows)."""
        cls.close()
        if cls.world > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    @classmethod
    def _comm_device(cls):
        import torch.distributed as dist

        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class Logger:
    def __init__(self, path, fields):
        self.path = path
        self.on = Dist.main()
        if not self.on:
            return
        header = ",".join(["step", "elapsed_s"] + fields)
        if os.path.exists(path):
            with open(path) as f:
                if f.readline().strip() != header:
                    # Columns changed since this run started: keep the old log beside the new one.
                    os.replace(path, path[:-4] + ".old.csv")
        new = not os.path.exists(path)
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=["step", "elapsed_s"] + fields)
        if new:
            self.w.writeheader()

    def log(self, step, elapsed, **vals):
        if not self.on:
            return
        self.w.writerow({"step": step, "elapsed_s": f"{elapsed:.1f}", **{k: f"{v:.6g}" for k, v in vals.items()}})
        self.f.flush()


def save_grid(path, rows):
    """rows: list of [B, C, H, W] tensors in [-1, 1] (C = 1 or 3); one row per tensor."""
    if not Dist.main():
        return
    out = []
    for r in rows:
        r = r.detach().float().cpu().clamp(-1, 1)
        if r.shape[1] == 1:
            r = r.repeat(1, 3, 1, 1)
        out.append(torch.cat(list(r), dim=2))
    g = torch.cat(out, dim=1)
    g = ((g + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(g).save(path)


def randn(shape, g, device):
    """Normal draws from the CPU generator `g`, on `device`: a run draws the same numbers on CPU and GPU."""
    return to_device(torch.randn(shape, generator=g), device)


def randint(high, shape, g, device):
    return to_device(torch.randint(high, shape, generator=g), device)


def adam(params, device, decoupled=False, **kw):
    """Adam (AdamW with `decoupled`), fused on CUDA: the whole step in a few kernels, and a step that
    GuardedStep skips is skipped on the device, with no host round trip."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, fused=torch.device(device).type == "cuda", **kw)


def autocast(a):
    """bf16 autocast for `--amp bf16` (ops.full_precision keeps the sensitive operations in f32)."""
    return torch.autocast(device_type=torch.device(a.device).type, dtype=torch.bfloat16,
                          enabled=getattr(a, "amp", "f32") == "bf16")


def setup_device(name):
    """The torch device for `--device`; on CUDA, TF32 matmuls/convolutions and cuDNN autotuning."""
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return dev


class GuardedStep:
    """Clips the gradients to `max_norm` and steps the optimiser, unless their norm is not finite:
    then the step is skipped, so that one overflowing batch cannot turn every weight into NaN (an
    e2e run on an H100 did, 2026-11-27, at about step 700). After `max_skipped` batches in a row
    the stage gives up, its last checkpoint intact. Under torchrun the gradients are already
    averaged, so every rank takes the same decision.

    With a fused optimiser (`adam` on CUDA) the decision stays on the device: the optimiser is
    handed the non-finite flag as its `found_inf` (as torch's GradScaler does) and leaves weights,
    moments and step count as they were; the skips are counted on the device and read every
    `check_every` steps, where a stage syncs for its log anyway. Reading the flag each step would
    make the host wait for the GPU every step. A skipped batch then still counts as a step."""

    def __init__(self, opt, params, ckpt, max_norm=1.0, max_skipped=20, check_every=100):
        self.opt, self.params, self.ckpt = opt, list(params), ckpt
        self.max_norm, self.max_skipped = max_norm, max_skipped
        self.skipped = 0
        self.on_device = bool(opt.defaults.get("fused"))
        self.check_every = check_every
        self._in_a_row = self._total = None  # device counters (fused optimiser only)
        self._reported = 0

    def __call__(self, step):
        """Returns whether the optimiser stepped (always true with a fused optimiser: see above)."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        if self.on_device:
            return self._step_on_device(norm, step)
        if torch.isfinite(norm):
            self.opt.step()
            self.skipped = 0
            return True
        self.opt.zero_grad()
        self.skipped += 1
        print(f"step {step}: non-finite gradient norm, batch skipped", flush=True)
        if self.skipped > self.max_skipped:
            raise SystemExit(f"step {step}: {self.skipped} batches in a row gave non-finite gradients; "
                             f"the last good checkpoint is {self.ckpt}")
        return False

    def _step_on_device(self, norm, step):
        bad = (~torch.isfinite(norm)).float()
        self.opt.found_inf = bad
        try:
            self.opt.step()
        finally:
            del self.opt.found_inf
        if self._in_a_row is None:
            self._in_a_row, self._total = torch.zeros_like(bad), torch.zeros_like(bad)
        self._in_a_row = (self._in_a_row + bad) * bad
        self._total = self._total + bad
        if (step + 1) % self.check_every == 0:
            self.check(step)
        return True

    def check(self, step):
        """Reports the batches skipped since the last check, and gives up as the host-side guard
        does once more than `max_skipped` came in a row (found up to `check_every` steps late)."""
        if self._total is None:
            return
        total, in_a_row = int(self._total.item()), int(self._in_a_row.item())
        if total > self._reported:
            print(f"step {step}: {total - self._reported} non-finite gradient norms since the last check, "
                  f"batches skipped", flush=True)
            self._reported = total
        if in_a_row > self.max_skipped:
            raise SystemExit(f"step {step}: {in_a_row} batches in a row gave non-finite gradients; "
                             f"the last good checkpoint is {self.ckpt}")


def edge_to_pm1(e):
    return e * 2 - 1


class Stage:
    """Resumable stage: `ckpt.pt` holds model state, optimiser state, step and elapsed seconds."""

    def __init__(self, run_dir, name):
        self.dir = os.path.join(run_dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.ckpt = os.path.join(self.dir, "ckpt.pt")
        self.model_out = os.path.join(run_dir, f"midm_{name}.pt")

    def resume(self, model, opt):
        if os.path.exists(self.ckpt):
            st = torch.load(self.ckpt, map_location="cpu", weights_only=False)
            model.load_state_dict(st["model"])
            # The command line's learning rates win over the saved ones (load_state_dict restores
            # them), so that `--lr` / `--unet-lr` also apply to a continued run.
            lrs = [g["lr"] for g in opt.param_groups]
            opt.load_state_dict(st["opt"])
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr
            return st["step"], st["elapsed"]
        return 0, 0.0

    def save(self, model, opt, step, elapsed):
        if not Dist.main():
            return
        tmp = self.ckpt + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp)
        os.replace(tmp, self.ckpt)

    def keep_best(self, model, score, step):
        """Keeps the weights of the best validation score so far in `best.pt` (a stage finishes with
        them: later steps may overfit or diverge)."""
        if not Dist.main():
            return
        path = os.path.join(self.dir, "best.pt")
        if not hasattr(self, "best_score"):  # a resumed stage competes with its earlier best
            self.best_score = (torch.load(path, map_location="cpu", weights_only=False)["score"]
                               if os.path.exists(path) else float("-inf"))
        if score <= self.best_score:
            return
        self.best_score = score
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "score": score,
                    "step": step}, path + ".tmp")
        os.replace(path + ".tmp", path)

    def finish(self, model, best=False):
        """Writes midm_<stage>.pt: the current weights, or with `best` those of `best.pt` when the
        stage kept one. Returns the best record used (or None)."""
        if not Dist.main():
            return None
        path = os.path.join(self.dir, "best.pt")
        rec = torch.load(path, map_location="cpu", weights_only=False) if best and os.path.exists(path) else None
        sd = rec["model"] if rec else {k: v.cpu() for k, v in model.state_dict().items()}
        torch.save(sd, self.model_out)
        return rec


class WeightEma:
    """An exponential moving average of live tensors (a module's state_dict entries or parameters,
    by name), kept in `path` beside a stage checkpoint so that resuming keeps it; without that file
    it starts from the live values. Floating-point entries are averaged, others kept as they were.
    The update is two fused ops over the lists (state_dict tensors share their parameters' storage,
    so the lists stay current as the optimiser steps in place)."""

    def __init__(self, live, path, device="cpu"):
        self.live, self.path = live, path
        self.avg = (torch.load(path, map_location=device) if live and os.path.exists(path)
                    else {k: v.detach().clone() for k, v in live.items()})
        floats = [k for k, v in live.items() if v.dtype.is_floating_point]
        self._avg, self._live = [self.avg[k] for k in floats], [live[k].detach() for k in floats]

    def update(self, decay):
        if self._avg:
            with torch.no_grad():
                torch._foreach_mul_(self._avg, decay)
                torch._foreach_add_(self._avg, self._live, alpha=1 - decay)

    @contextlib.contextmanager
    def applied(self):
        """The averaged values in the live tensors for the block, the live ones back after it."""
        saved = {k: v.detach().clone() for k, v in self.live.items()}
        with torch.no_grad():
            for k, v in self.live.items():
                v.copy_(self.avg[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in self.live.items():
                    v.copy_(saved[k])

    def save(self):
        if self.live and Dist.main():
            torch.save(self.avg, self.path + ".tmp")
            os.replace(self.path + ".tmp", self.path)


class Clock:
    def __init__(self, elapsed, minutes):
        self.t0 = time.time() - elapsed
        self.start = time.time()
        self.limit = minutes * 60 if minutes else None

    def elapsed(self):
        return time.time() - self.t0

    def out_of_time(self):
        # Collective under torchrun: every rank stops at the same step.
        return Dist.any(self.limit is not None and time.time() - self.start > self.limit)
