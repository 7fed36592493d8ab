r"""STARFlow-V at CPU scale: an autoregressive affine normalizing flow over video tokens with causal attention,
noise augmentation, a learnable flow-score denoiser, Gaussian CFG, and sequential or Jacobi sampling.

Gu et al., arXiv 2511.20462 (STARFlow-V), built on TARFlow (Zhai et al., arXiv 2412.06329). A video (T, C, H, W)
becomes a sequence of L = T·P tokens (P patches of p×p per frame, frame-major, so causal attention over tokens is
causal in time). Each of K blocks is an autoregressive affine map (TARFlow eq. 3):

.. math:: z_i = (x_i - \mu_\theta(x_{<i}))\, e^{-a_\theta(x_{<i})}, \qquad \log|\det J| = -\sum_i a_\theta(x_{<i}),

with a start-of-sequence token so that position i sees only :math:`x_{<i}`; alternate blocks reverse the token order
*within each frame* (TARFlow's permutations, kept inside a frame so that time stays causal). Training minimises
the NLL :math:`\tfrac12\|z\|^2 - \log|\det J|` of noise-augmented data :math:`\tilde x = x + \sigma_n\xi`.

* **Sampling** inverts the blocks in reverse order: sequentially (:math:`x_i = \mu(x_{<i}) + e^{a(x_{<i})} z_i`,
  one forward pass per token) or by **Jacobi iteration** over blocks of tokens, all positions of a block updated in
  parallel from the previous iterate until the relative change falls below ``jacobi_tol`` (exact after at most
  the block's length iterations, because position i is fixed once its prefix is).
* **CFG for Gaussian conditionals** (STARFlow's guidance): with :math:`s = \min(\sigma_c/\sigma_u, 1)^2`,
  :math:`\sigma = \sigma_c/\sqrt{1 + w - ws}` and :math:`\mu = ((1+w)\mu_c - ws\,\mu_u)/(1 + w - ws)`.
* **Flow-score denoising**: a sample is of :math:`\tilde x`; Tweedie's formula gives
  :math:`\hat x = \tilde x - \sigma_n^2\nabla_{\tilde x}(-\log p_\theta(\tilde x))` (``exact``: by autograd through
  the flow), or a light per-frame denoiser :math:`d_\phi` trained with
  :math:`\|d_\phi(\tilde x) - \sigma_n\nabla(-\log p_\theta)\|^2` replaces the backward pass
  (:math:`\hat x = \tilde x - \sigma_n d_\phi(\tilde x)`).

A normalizing flow has no flow-matching time: the model is a density, and "t" here is the frame index only.

Example:
    >>> import torch
    >>> flow = STARFlow(frames=2, channels=1, size=8, patch=4, width=32, depth=1, blocks=2).eval()
    >>> x = torch.randn(3, 2, 1, 8, 8)
    >>> z, logdet = flow.forward_flow(x)
    >>> torch.allclose(flow.inverse(z, method="sequential"), x, atol=1e-4)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive

__all__ = ["STARFlow", "STARFlowLoss", "FrameDenoiser", "gaussian_guidance", "bits_per_dim"]

Tensor = torch.Tensor


def gaussian_guidance(mu_c: Tensor, sigma_c: Tensor, mu_u: Tensor, sigma_u: Tensor, w: float) -> tuple[Tensor, Tensor]:
    """STARFlow's CFG for Gaussian conditionals (module doc); ``w = 0`` returns the conditional unchanged."""
    s = (sigma_c / sigma_u).clamp(max=1.0) ** 2
    denominator = 1 + w - w * s
    return ((1 + w) * mu_c - w * s * mu_u) / denominator, sigma_c / denominator.sqrt()


class _CausalBlock(nn.Module):
    """One autoregressive affine block: a causal transformer from x_<i to (μ_i, a_i)."""

    def __init__(self, token_dim: int, length: int, width: int, depth: int, heads: int, num_classes: int):
        super().__init__()
        self.embed = nn.Linear(token_dim, width)
        self.sos = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2 * token_dim)
        nn.init.zeros_(self.head.weight)                     # start as the identity map
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), 1), persistent=False)

    def params(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(μ, a) for every position from the tokens before it (x: (B, L, D))."""
        h = torch.cat([self.sos.expand(x.shape[0], -1, -1), self.embed(x[:, :-1])], dim=1) + self.position
        if self.label is not None and y is not None:
            h = h + self.label(y)[:, None]
        mu, a = self.head(self.body(h, mask=self.mask, is_causal=True)).chunk(2, dim=-1)
        return mu, a.clamp(-6.0, 6.0)


class STARFlow(nn.Module):
    """The flow over videos (B, T, C, H, W) (module doc). ``num_classes`` > 0 adds a class condition ``y`` with a
    null class ``num_classes`` for CFG."""

    def __init__(self, *, frames: int, channels: int, size: int, patch: int = 4, width: int = 64, depth: int = 2,
                 heads: int = 4, blocks: int = 2, num_classes: int = 0):
        super().__init__()
        check_int(patch, "patch", low=1)
        if check_int(size, "size", low=1) % patch:
            raise ConfigError(expected(f"a frame size divisible by the patch {patch}", size, "change --patch"))
        self.frames, self.channels, self.size, self.patch = check_int(frames, "frames", low=1), channels, size, patch
        self.per_frame = (size // patch) ** 2
        self.length, self.token_dim = frames * self.per_frame, channels * patch * patch
        self.num_classes = check_int(num_classes, "num_classes", low=0)
        self.blocks = nn.ModuleList(_CausalBlock(self.token_dim, self.length, width, depth, heads, num_classes)
                                    for _ in range(check_int(blocks, "blocks", low=1)))

    # -- tokens ---------------------------------------------------------------------------------------------
    def tokens(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, L, D), frame-major, patches in raster order."""
        if video.dim() != 5 or tuple(video.shape[1:]) != (self.frames, self.channels, self.size, self.size):
            raise ShapeError(expected(f"videos (B, {self.frames}, {self.channels}, {self.size}, {self.size})",
                                      f"shape {tuple(video.shape)}", "resize or cut the clips to the model's shape"))
        b, p, n = video.shape[0], self.patch, self.size // self.patch
        x = video.reshape(b, self.frames, self.channels, n, p, n, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, self.length, self.token_dim)

    def video(self, tokens: Tensor) -> Tensor:
        """Inverse of :meth:`tokens`."""
        b, p, n = tokens.shape[0], self.patch, self.size // self.patch
        x = tokens.reshape(b, self.frames, n, n, self.channels, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.frames, self.channels, self.size, self.size)

    def _permute(self, x: Tensor, k: int) -> Tensor:
        if k % 2 == 0:
            return x
        return x.reshape(x.shape[0], self.frames, self.per_frame, -1).flip(2).reshape(x.shape)

    # -- density --------------------------------------------------------------------------------------------
    def forward_flow(self, video: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z (B, L, D), log|det J| (B,))``."""
        x = self.tokens(video)
        logdet = torch.zeros(x.shape[0], device=x.device)
        for k, block in enumerate(self.blocks):
            x = self._permute(x, k)
            mu, a = block.params(x, y)
            x = (x - mu) * torch.exp(-a)
            logdet = logdet - a.flatten(1).sum(1)
            x = self._permute(x, k)
        return x, logdet

    def nll(self, video: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-video negative log-density (nats), the Gaussian constant included."""
        z, logdet = self.forward_flow(video, y)
        dims = z[0].numel()
        return 0.5 * (z ** 2).flatten(1).sum(1) - logdet + 0.5 * dims * math.log(2 * math.pi)

    # -- sampling -------------------------------------------------------------------------------------------
    def _guided(self, block: _CausalBlock, x: Tensor, y: Tensor | None, cfg: float) -> tuple[Tensor, Tensor]:
        mu, a = block.params(x, y)
        if y is None or cfg == 0:
            return mu, torch.exp(a)
        mu_u, a_u = block.params(x, torch.full_like(y, self.num_classes))
        return gaussian_guidance(mu, torch.exp(a), mu_u, torch.exp(a_u), cfg)

    @torch.no_grad()
    def inverse(self, z: Tensor, y: Tensor | None = None, *, method: str = "jacobi", block_size: int | None = None,
                jacobi_tol: float = 1e-4, max_iterations: int | None = None, cfg: float = 0.0,
                stats: dict | None = None) -> Tensor:
        """Videos from latents ``z`` (B, L, D). ``stats`` (a dict) receives ``"iterations"``: model forward passes
        per flow block (sequential: L; Jacobi: the sum over token blocks of the iterations each needed)."""
        if method not in ("jacobi", "sequential"):
            raise ConfigError(expected("method 'jacobi' or 'sequential'", repr(method), "pass method='jacobi'"))
        check_nonnegative(cfg, "cfg")
        block_size = self.length if block_size is None else check_int(block_size, "block_size", low=1)
        passes = []
        x = z
        for k in reversed(range(len(self.blocks))):
            x = self._permute(x, k)
            if method == "sequential":
                x, used = self._sequential(self.blocks[k], x, y, cfg), self.length
            else:
                x, used = self._jacobi(self.blocks[k], x, y, cfg, block_size, jacobi_tol,
                                       max_iterations or block_size)
            passes.append(used)
            x = self._permute(x, k)
        if stats is not None:
            stats["iterations"] = passes
        return self.video(x)

    def _sequential(self, block: _CausalBlock, z: Tensor, y: Tensor | None, cfg: float) -> Tensor:
        x = torch.zeros_like(z)
        for i in range(self.length):
            mu, sigma = self._guided(block, x, y, cfg)
            x[:, i] = mu[:, i] + sigma[:, i] * z[:, i]
        return x

    def _jacobi(self, block: _CausalBlock, z: Tensor, y: Tensor | None, cfg: float, size: int, tol: float,
                max_iterations: int) -> tuple[Tensor, int]:
        x, used = torch.zeros_like(z), 0
        for start in range(0, self.length, size):
            stop = min(start + size, self.length)
            for _ in range(max(max_iterations, 1)):
                mu, sigma = self._guided(block, x, y, cfg)
                new = mu[:, start:stop] + sigma[:, start:stop] * z[:, start:stop]
                change = (new - x[:, start:stop]).norm() / new.norm().clamp_min(1e-8)
                x[:, start:stop] = new
                used += 1
                if float(change) < tol:
                    break
        return x, used

    def sample(self, n: int, *, y: Tensor | None = None, generator: torch.Generator | None = None,
               **options) -> Tensor:
        """``n`` videos of the noise-augmented distribution (denoise them with :meth:`STARFlowLoss.denoise`)."""
        z = torch.randn(check_int(n, "n", low=1), self.length, self.token_dim, generator=generator)
        return self.inverse(z.to(next(self.parameters()).device), y, **options)


class FrameDenoiser(nn.Module):
    """STARFlow's light self-denoiser :math:`d_\\phi`, per frame (so trivially causal in time): a small conv net."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, video: Tensor) -> Tensor:
        b, t = video.shape[:2]
        return self.net(video.flatten(0, 1)).reshape(video.shape)


def bits_per_dim(nll: Tensor, dims: int, pixel_range: float = 2.0) -> Tensor:
    """NLL in nats of data scaled to a range of ``pixel_range`` (2 for [−1, 1]) -> bits per 8-bit dimension."""
    return (nll / dims + math.log(255.0 / pixel_range)) / math.log(2.0)


class STARFlowLoss:
    """NLL of noise-augmented videos (+ the denoiser's flow-score loss when a :class:`FrameDenoiser` is given).

    Batch: ``{"x1": videos (B, T, C, H, W), "y"?: labels}``; ``noise_std`` is σ_n. Metrics: ``nll`` (nats per
    video), ``bpd`` (bits per dimension), ``denoise`` (the denoiser's loss).
    """

    def __init__(self, noise_std: float = 0.3, denoiser: FrameDenoiser | None = None, cond_dropout: float = 0.1):
        self.noise_std = check_positive(noise_std, "noise_std")
        self.denoiser, self.cond_dropout = denoiser, cond_dropout

    def __call__(self, model: STARFlow, batch: dict) -> tuple[Tensor, dict[str, float]]:
        x, y = batch["x1"], batch.get("y")
        if y is not None and self.cond_dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.cond_dropout
            y = torch.where(drop, torch.full_like(y, model.num_classes), y)
        noisy = (x + self.noise_std * torch.randn_like(x)).requires_grad_(self.denoiser is not None)
        nll = model.nll(noisy, y)
        loss = nll.mean() / noisy[0].numel()
        mean_nll = nll.detach().mean()
        metrics = {"nll": float(mean_nll), "bpd": float(bits_per_dim(mean_nll, noisy[0].numel()))}
        if self.denoiser is not None:
            (score,) = torch.autograd.grad(nll.sum(), noisy, retain_graph=True)
            target = self.noise_std * score.detach()
            denoise = ((self.denoiser(noisy.detach()) - target) ** 2).mean()
            loss = loss + denoise
            metrics["denoise"] = float(denoise.detach())
        return loss, {"loss": float(loss.detach()), **metrics}

    def denoise(self, model: STARFlow, noisy: Tensor, y: Tensor | None = None, *, exact: bool = False) -> Tensor:
        r"""Tweedie: :math:`\tilde x - \sigma_n^2\nabla(-\log p)` (``exact``: autograd through the flow; otherwise
        the learned denoiser, which must have been trained)."""
        if exact or self.denoiser is None:
            noisy = noisy.detach().requires_grad_(True)
            with torch.enable_grad():
                (score,) = torch.autograd.grad(model.nll(noisy, y).sum(), noisy)
            return (noisy - self.noise_std ** 2 * score).detach()
        with torch.no_grad():
            return noisy - self.noise_std * self.denoiser(noisy)
