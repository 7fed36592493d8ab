r"""A small domain-free token model for discrete flow matching: ``model(x_t, t) -> logits``.

The posterior network of Gat et al., arXiv 2407.15595 (a transformer over token embeddings with a time
embedding), at toy scale: token embedding + learned position embedding + a sinusoidal time embedding added to
every position, a few pre-norm transformer-encoder layers (bidirectional attention), and a linear head to the
data vocabulary. Time is flowzoo's (0 = source, 1 = data). Input ids may include the mask id (``num_states``
counts it); the output never does.

Example:
    >>> import torch
    >>> net = DiscreteTransformer(4, 6, hidden=16, depth=1, heads=2)    # 4 tokens + a mask id, length 6
    >>> net(torch.randint(0, 5, (3, 6)), torch.rand(3)).shape
    torch.Size([3, 6, 4])
"""

from __future__ import annotations

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_positive_int, check_probability
from flowzoo.core.nets import SinusoidalTimeEmbedding

__all__ = ["DiscreteTransformer"]


class DiscreteTransformer(nn.Module):
    """Token transformer with a time embedding (module doc).

    Args:
        vocab_size: V, the data tokens (logits per position).
        length: the sequence length (positions are learned).
        num_states: ids the input may hold (default V + 1: the data tokens and the mask id V); pass
            ``path.num_states``.
        hidden: width; depth: encoder layers; heads: attention heads (must divide ``hidden``).
        dropout: dropout of the encoder layers.
    """

    def __init__(self, vocab_size: int, length: int, *, num_states: int | None = None, hidden: int = 128,
                 depth: int = 3, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.num_states = check_positive_int(vocab_size + 1 if num_states is None else num_states, "num_states")
        self.length = check_positive_int(length, "length")
        hidden, depth = check_positive_int(hidden, "hidden"), check_positive_int(depth, "depth")
        if check_positive_int(heads, "heads") and hidden % heads:
            raise ConfigError(expected("heads dividing hidden", f"hidden={hidden}, heads={heads}", "use heads=4"))
        self.tokens = nn.Embedding(self.num_states, hidden)
        self.positions = nn.Parameter(torch.randn(self.length, hidden) * 0.02)
        self.time = nn.Sequential(SinusoidalTimeEmbedding(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, check_probability(dropout, "dropout"),
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, self.vocab_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) of the posterior over data tokens, given ids ``x`` (B, L) and times ``t`` (B,)."""
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ShapeError(expected(f"x of shape (B, {self.length})", tuple(x.shape),
                                      "pass token ids of the length the net was built for"))
        h = self.tokens(x) + self.positions + self.time(t.float())[:, None, :]
        return self.head(self.encoder(h))
