r"""Straight-through guidance (STGFlow) for flows on the simplex.

Tang, Zhang, Tong, Chatterjee, arXiv 2503.17361, §5 and Fig. 2: a classifier or
regressor trained only on **clean** one-hot sequences steers any simplex flow. At every integration step

1. draw M discrete sequences :math:`h^{(m)} \sim \mathrm{Cat}(p)` from the current token distribution p
   (the denoiser's :math:`x_\theta`, default, or the state :math:`x_t`);
2. score them, :math:`f(h^{(m)})` (the log-probability of the wanted class, or a regression value);
3. take the gradient with respect to the one-hot input, :math:`\nabla_h f(h^{(m)})`; the straight-through
   estimator uses it as the gradient with respect to p (the sample's gradient passes through the
   non-differentiable draw unchanged);
4. average over the M draws, :math:`d = \frac1M\sum_m \nabla_h f(h^{(m)})`, and add
   :math:`\gamma\,v_{guide}(x, d, t)` to the velocity, where :math:`v_{guide}` is the method's tangent
   velocity toward d: for Gumbel-softmax FM :math:`\frac{\lambda}{\tau} x \odot (d - \langle x, d\rangle)`
   (the marginal velocity with :math:`x_\theta` moved by d), for the linear path
   :math:`x \odot (d - \langle x, d\rangle)/(1 - t)`. Both are tangent to the simplex and vanish on empty
   letters, so guided samples stay on it; γ is the guidance strength.

The strength trades the constraint against fidelity to the data: a guide trained on "holds the motif" is
satisfied just as well by sequences full of motif repeats, so a large γ drifts the letter composition
toward the motif's letters (a TATA motif makes samples AT-rich). Check the composition beside the
constraint (``benchmarks/biology_sequences.py`` reports both) and lower γ until the drift is acceptable.

The guide model is :class:`SequenceClassifier` (1-D convolutions, max- and mean-pooled over positions),
trained by :func:`train_guide` on letter indices and labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["SequenceClassifier", "StraightThroughGuidance", "train_guide", "straight_through_direction"]

Tensor = torch.Tensor


class SequenceClassifier(nn.Module):
    """A clean-sequence classifier / regressor: one-hot (B, L, K) -> outputs (B, C).

    Args:
        alphabet_size: K.
        outputs: number of classes (>= 2, cross-entropy) or 1 (regression, mean squared error).
        hidden: channels of the two convolutions.
        kernel_size: odd width of the convolutions (about the length of the patterns to detect).
    """

    def __init__(self, alphabet_size: int, outputs: int = 2, hidden: int = 64, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0 or outputs < 1 or hidden < 1 or alphabet_size < 2:
            raise ConfigError(expected("alphabet_size >= 2, outputs >= 1, hidden >= 1, odd kernel_size",
                                       (alphabet_size, outputs, hidden, kernel_size), "use the defaults"))
        self.alphabet_size, self.outputs = alphabet_size, outputs
        pad = kernel_size // 2
        self.features = nn.Sequential(nn.Conv1d(alphabet_size, hidden, kernel_size, padding=pad), nn.SiLU(),
                                      nn.Conv1d(hidden, hidden, kernel_size, padding=pad), nn.SiLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, outputs))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.alphabet_size:
            raise ShapeError(expected(f"one-hot sequences (B, L, {self.alphabet_size})", tuple(x.shape),
                                      "pass one_hot(tokens, K)"))
        h = self.features(x.transpose(1, 2))
        return self.head(torch.cat([h.amax(-1), h.mean(-1)], dim=1))


def train_guide(model: SequenceClassifier, tokens: Tensor, labels: Tensor, *, steps: int = 500,
                batch_size: int = 128, lr: float = 2e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``model`` on clean sequences (indices (N, L)) and labels (N,): class ids or regression targets.

    Returns the training losses (one per step).
    """
    if tokens.dim() != 2 or labels.shape[:1] != tokens.shape[:1] or tokens.shape[0] == 0:
        raise ShapeError(expected("tokens (N, L) and one label per sequence (N,)",
                                  f"{tuple(tokens.shape)} and {tuple(labels.shape)}", "pass matching tensors"))
    classify = model.outputs > 1
    if classify and (labels.is_floating_point() and (labels != labels.round()).any()):
        raise ConfigError(expected("integer class labels for a classifier", "fractional labels",
                                   "build SequenceClassifier(outputs=1) for regression"))
    labels = labels.long() if classify else labels.float()
    if classify and (int(labels.min()) < 0 or int(labels.max()) >= model.outputs):
        raise ConfigError(expected(f"labels in [0, {model.outputs})", f"[{int(labels.min())}, {int(labels.max())}]",
                                   "set outputs to the number of classes"))
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="training guide", disable=not progress, leave=False):
        index = torch.randint(0, tokens.shape[0], (min(batch_size, tokens.shape[0]),), generator=generator)
        out = model(nn.functional.one_hot(tokens[index], model.alphabet_size).float())
        loss = (nn.functional.cross_entropy(out, labels[index]) if classify
                else (out[:, 0] - labels[index]).pow(2).mean())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def straight_through_direction(score: Callable[[Tensor], Tensor], probabilities: Tensor, num_samples: int,
                               generator: torch.Generator | None = None) -> Tensor:
    """Average straight-through gradient of ``score`` over ``num_samples`` sequences drawn from ``probabilities``.

    Args:
        score: maps one-hot sequences (N, L, K) to one value per sequence (N,) to be increased.
        probabilities: token distributions (B, L, K).
        num_samples: M.

    Returns:
        The averaged gradient (B, L, K).
    """
    b, length, k = probabilities.shape
    flat = probabilities.detach().reshape(-1, k).clamp_min(0)
    draws = torch.multinomial(flat, num_samples, replacement=True, generator=generator)  # (B*L, M)
    one_hot = nn.functional.one_hot(draws.T.reshape(num_samples * b, length), k).to(probabilities.dtype)
    one_hot.requires_grad_(True)
    values = score(one_hot)
    if values.shape != (num_samples * b,):
        raise ShapeError(expected("one score per sequence", tuple(values.shape), "return shape (N,) from the score"))
    (gradient,) = torch.autograd.grad(values.sum(), one_hot)
    return gradient.reshape(num_samples, b, length, k).mean(0)


class StraightThroughGuidance:
    """The STGFlow guidance term for :meth:`flowzoo.biology.sequences.gumbel_fm.GumbelSoftmaxFM.sample` (module doc).

    Args:
        guide: a :class:`SequenceClassifier` (or any one-hot -> (N, C) model).
        method: the flow method (it turns the direction into its tangent velocity).
        strength: γ.
        num_samples: M, sequences drawn per step.
        target_class: the class whose log-probability is raised; None: the guide is a regressor whose
            output 0 is raised.
        source: ``"denoiser"`` (draw from x_θ) or ``"state"`` (draw from x_t).
        seed: seed of the draws.
    """

    def __init__(self, guide: nn.Module, method, strength: float = 1.0, num_samples: int = 16,
                 target_class: int | None = 1, source: str = "denoiser", seed: int = 0):
        if source not in ("denoiser", "state"):
            raise ConfigError(expected("source 'denoiser' or 'state'", repr(source), "use 'denoiser'"))
        if not strength >= 0 or num_samples < 1:
            raise ConfigError(expected("strength >= 0 and num_samples >= 1", (strength, num_samples), "e.g. 1.0, 16"))
        self.guide, self.method, self.strength = guide, method, float(strength)
        self.num_samples, self.target_class, self.source = int(num_samples), target_class, source
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, one_hot: Tensor) -> Tensor:
        out = self.guide(one_hot)
        if self.target_class is None:
            return out[:, 0]
        return torch.log_softmax(out, -1)[:, self.target_class]

    def __call__(self, x: Tensor, x_hat: Tensor, t: Tensor) -> Tensor:
        if self.strength == 0:
            return torch.zeros_like(x)
        probabilities = x_hat if self.source == "denoiser" else x
        direction = straight_through_direction(self.score, probabilities, self.num_samples,
                                               self.generator if probabilities.device.type == "cpu" else None)
        return self.strength * self.method.guidance_velocity(x, direction.detach(), t)
