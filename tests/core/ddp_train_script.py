"""Helper of test_distributed.py: a tiny flow-matching run launched with torchrun.

Usage: python -m torch.distributed.run --nproc_per_node 2 ddp_train_script.py OUT_DIR {callable,dataset} [MAX_STEPS]

With MAX_STEPS the run stops there (with a checkpoint); a later call on the same OUT_DIR resumes it.

Each rank starts from different random weights (DDP must broadcast rank 0's), trains 20 steps and
saves ``rank<r>.pt`` with its initial and final weights, the first batch it saw and the steps at
which it evaluated.
"""

import os
import sys
from pathlib import Path

import torch
from torch import nn

from flowzoo.core.training import Trainer, TrainerConfig


class TinyVelocity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def main(out_dir: str, mode: str, max_steps: int | None = None) -> None:
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)
    model = TinyVelocity()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    batches, evaluated = [], []

    def fm_loss(model, batch):
        x1 = batch["x1"]
        batches.append(x1.clone())
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1))
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        return (model(x_t, t) - (x1 - x0)).pow(2).mean(), {}

    def evaluate(model, step, eval_dir):
        evaluated.append(step)
        return {"step": float(step)}

    if mode == "callable":
        data = lambda generator: {"x1": torch.randn(8, 2, generator=generator) + 2.0}  # noqa: E731
    else:
        data = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)) + 2.0
    cfg = TrainerConfig(steps=20, batch_size=8, lr=1e-2, checkpoint_every=10, log_every=5, eval_every=10,
                        ema_decay=0.9, out_dir=out_dir, progress=False, tensorboard=False, device="cpu",
                        max_steps=max_steps, resume=True)
    result = Trainer(model, fm_loss, data, cfg, evaluate=evaluate).fit()
    torch.save({"initial": initial, "final": model.state_dict(), "first_batch": batches[0], "step": result.step,
                "evaluated": evaluated, "resumed_from": result.resumed_from}, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
