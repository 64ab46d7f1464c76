"""Vector quantisers of the acoustic tokenizers.

Axis legend: ``N`` vectors, ``c`` code width, ``K`` codes.

- :class:`NormEMACodebook`: the trained tokenizer's codebook. Inputs and codes live on the unit
  sphere; a label is the nearest code in squared distance ``|z|^2 + |e|^2 - 2 z.e`` (the codes
  used as stored). Training moves each used code towards the L2-normalised mean of the vectors
  assigned to it by an exponential moving average, then re-normalises it; before the first update
  the codebook is initialised by spherical k-means on the first batch.
- :class:`RandomProjectionQuantizer`: the iteration-1 tokenizer: a frozen random projection and
  a frozen random codebook, labels by nearest neighbour after L2 normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def l2norm(x: Tensor) -> Tensor:
    return F.normalize(x, p=2, dim=-1)


def squared_distances(z: Tensor, codes: Tensor) -> Tensor:
    """[N c], [K c] -> [N K] squared Euclidean distances."""
    return z.pow(2).sum(dim=1, keepdim=True) + codes.pow(2).sum(dim=1) \
        - 2 * torch.einsum("nc,kc->nk", z, codes)


def _kmeans_pp(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """k-means++ seeding on the sphere: each new centre is drawn with probability proportional
    to its squared distance ``2 - 2 cos`` from the nearest centre chosen so far."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    nearest = (2 - 2 * (x @ x[first])).clamp(min=0)  # [N]
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0:  # fewer distinct vectors than codes: repeat random ones
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            probs = (nearest / total).cpu()
            pick = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(x[pick])
        nearest = torch.minimum(nearest, (2 - 2 * (x @ x[pick])).clamp(min=0))
    return torch.stack(centres).clone()


def spherical_kmeans(x: Tensor, k: int, iters: int = 10,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """K-means on the unit sphere (cosine similarity), k-means++ seeded, centres re-normalised
    each step.

    Inputs:
        x: [N c] unit vectors.
    Returns:
        centres [k c] (unit norm) and the final cluster sizes [k].
    """
    centres = _kmeans_pp(x, k, generator)
    sizes = torch.zeros(k, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        assign = (x @ centres.T).argmax(dim=1)  # [N]
        sizes = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        # an empty cluster keeps its previous centre
        centres = torch.where(sizes[:, None] > 0, l2norm(sums), centres)
    return centres, sizes


class NormEMACodebook(nn.Module):
    """Unit-norm codebook updated by EMA of the normalised cluster means, k-means initialised.

    State (all buffers, saved with the model): ``weight`` [K c] codes, ``cluster_size`` [K] and
    ``embed_avg`` [K c] EMA statistics of the codes, ``initted`` [1] (1.0 once initialised; a
    codebook with 0 is initialised by k-means on the first training batch) and ``usage`` [K],
    an EMA of how often each code is picked (monitoring only).

    Args:
        num_codes: K.
        dim: c.
        decay: EMA decay.
        kmeans_iters: k-means iterations of the initialisation.
        beta: weight of the commitment loss.
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, kmeans_iters: int = 10,
                 beta: float = 1.0) -> None:
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.decay, self.kmeans_iters, self.beta = float(decay), int(kmeans_iters), float(beta)
        self.register_buffer("weight", l2norm(torch.randn(num_codes, dim)))
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_avg", self.weight.clone())
        self.register_buffer("initted", torch.zeros(1))
        self.register_buffer("usage", torch.zeros(num_codes))

    @torch.no_grad()
    def init_from(self, z: Tensor, generator: torch.Generator | None = None) -> None:
        """Spherical k-means initialisation from unit vectors ``z`` [N c]."""
        centres, sizes = spherical_kmeans(z.detach().float(), self.num_codes, self.kmeans_iters,
                                          generator)
        self.weight.copy_(centres)
        self.embed_avg.copy_(centres)
        self.cluster_size.copy_(sizes)
        self.initted.fill_(1.0)

    def distances(self, z: Tensor) -> Tensor:
        """[N c] (already normalised) -> [N K] squared distances to the stored codes."""
        return squared_distances(z, self.weight)

    def labels(self, z: Tensor) -> Tensor:
        """Nearest-code indices of ``z`` [..., c] after L2 normalisation, shape ``[...]``."""
        flat = l2norm(z).reshape(-1, self.dim)
        return self.distances(flat).argmin(dim=1).view(z.shape[:-1])

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantise ``z`` [..., c].

        In training mode the codebook is k-means initialised on the first call (when
        ``initted`` is 0) and EMA-updated on every call; in eval mode nothing changes.

        Returns:
            ``(z_q, loss, labels)``: straight-through quantised vectors [..., c] (unit norm),
            the commitment loss ``beta * mse(z, sg(z_q))`` and the labels ``[...]``.
        """
        z = l2norm(z)
        flat = z.reshape(-1, self.dim)
        if self.training and not bool(self.initted.item()):
            self.init_from(flat)
        labels = self.distances(flat).argmin(dim=1)
        codes = F.embedding(labels, self.weight).view_as(z)
        if self.training:
            self._ema_update(flat.detach(), labels)
        loss = self.beta * F.mse_loss(z, codes.detach())
        z_q = z + (codes - z).detach()
        return z_q, loss, labels.view(z.shape[:-1])

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, labels: Tensor) -> None:
        onehot = F.one_hot(labels, self.num_codes).to(flat.dtype)  # [N K]
        counts = onehot.sum(0)  # [K]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        sums = onehot.T @ flat  # [K c]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        used = counts > 0
        means = l2norm(sums / counts.clamp(min=1.0)[:, None])
        target = torch.where(used[:, None], means, self.weight)
        self.embed_avg.mul_(self.decay).add_(target, alpha=1 - self.decay)
        self.weight.copy_(torch.where(used[:, None], l2norm(self.embed_avg), self.weight))


class RandomProjectionQuantizer(nn.Module):
    """The iteration-1 acoustic tokenizer: frozen random projection + frozen random codebook.

    A patch vector ``x`` [p*p] is projected by a fixed Xavier-initialised matrix, L2-normalised
    and labelled by its nearest L2-normalised random code. Nothing is trained; the state is
    saved (buffers) so labels are reproducible.

    Args:
        input_dim: width of the input vectors (256 for 16x16 fbank patches).
        code_dim: projection width.
        num_codes: codebook size.
        seed: seed of the projection and codebook.
    """

    def __init__(self, input_dim: int = 256, code_dim: int = 16, num_codes: int = 1024,
                 seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        bound = (6.0 / (input_dim + code_dim)) ** 0.5
        proj = (torch.rand(input_dim, code_dim, generator=g) * 2 - 1) * bound
        self.register_buffer("projection", proj)
        self.register_buffer("codes", l2norm(torch.randn(num_codes, code_dim, generator=g)))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Inputs: x [..., input_dim]. Returns: int64 labels [...]."""
        z = l2norm(x.float() @ self.projection)
        flat = z.reshape(-1, z.shape[-1])
        return squared_distances(flat, self.codes).argmin(dim=1).view(z.shape[:-1])
