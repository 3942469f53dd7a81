"""Denoiser networks: the tiny-diffusion baseline MLP and the adaptive dual-scale model.

Both take `x` [N,2] float32 and `t` [N] float32 (timestep index 0..99 as a float) and
predict epsilon. The dual-scale model also returns its gate weights [N,2]
(global weight, local weight). Nothing here trains, samples or exports.

ONNX/tract note: every sinusoidal embedding is written as one MatMul of the inputs with a
constant frequency matrix followed by Sin and Cos, so the exported graph holds only
MatMul/Gemm, Add, Mul, Relu, Sin, Cos, Concat, Unsqueeze and Softmax. The frequency matrix
has exactly one non-zero per column, so the MatMul computes the same float32 products
`x_j * (scale * f_i)` on every backend (adding exact zeros does not change a float).
Compared with tiny-diffusion the embedding columns are grouped as
[sin of every input dim, cos of every input dim] instead of [sin, cos] per dim: a fixed
permutation of the first Linear's input columns, so the function class and the
(i.i.d.) default initialisation distribution are the same.
"""
from __future__ import annotations

import math

import torch
from torch import nn

EMB_DIM = 128
HIDDEN = 256
HIDDEN_LAYERS = 3
X_SCALE = 25.0
T_SCALE = 1.0


def sinusoidal_freqs(dim: int) -> torch.Tensor:
    """tiny-diffusion frequencies: f_i = exp(-ln(10000) * i / (half - 1)), i < dim/2, float32."""
    half = dim // 2
    step = torch.log(torch.tensor([10000.0], dtype=torch.float32)) / (half - 1)
    return torch.exp(-step * torch.arange(half, dtype=torch.float32))


class MultiSinusoidal(nn.Module):
    """Sinusoidal embedding of every column of a [N,d] input, `dim` features per column.

    Output [N, d*dim] = [sin(a), cos(a)] with a = x @ F, F[j, j*half + i] = scale * f_i.
    """

    def __init__(self, in_dims: int, dim: int, scale: float):
        super().__init__()
        half = dim // 2
        freqs = sinusoidal_freqs(dim) * scale  # float32, the same rounding for all backends
        mat = torch.zeros(in_dims, in_dims * half, dtype=torch.float32)
        for j in range(in_dims):
            mat[j, j * half:(j + 1) * half] = freqs
        self.register_buffer("freq_matrix", mat, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.matmul(x, self.freq_matrix)
        return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ff = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.act(x))


class TimeEmbedding(MultiSinusoidal):
    """Embedding of t [N] (scale 1, 128 dims) -> [N,128]."""

    def __init__(self):
        super().__init__(1, EMB_DIM, T_SCALE)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(t.unsqueeze(-1))


class MLPBranch(nn.Module):
    """tiny-diffusion MLPDenoiser body on a precomputed time embedding.

    Embeds each of the `in_dims` input columns (scale 25, 128 dims), concatenates the
    time embedding, Linear(in_dims*128+128 -> 256), 3 residual blocks, ReLU, Linear(256 -> 2).
    """

    def __init__(self, in_dims: int):
        super().__init__()
        self.x_emb = MultiSinusoidal(in_dims, EMB_DIM, X_SCALE)
        self.network = nn.Sequential(
            nn.Linear(EMB_DIM * (in_dims + 1), HIDDEN),
            *[ResidualBlock(HIDDEN) for _ in range(HIDDEN_LAYERS)],
            nn.ReLU(),
            nn.Linear(HIDDEN, 2),
        )

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return self.network(torch.cat([self.x_emb(x), t_emb], dim=-1))


class Baseline(nn.Module):
    """tiny-diffusion baseline: eps = MLP([emb25(x0), emb25(x1), emb1(t)]). 296,450 parameters."""

    arch = "baseline"

    def __init__(self):
        super().__init__()
        self.t_emb = TimeEmbedding()
        self.net = MLPBranch(2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.t_emb(t))


class DualScale(nn.Module):
    """Adaptive dual-scale denoiser. 691,986 parameters.

    global = baseline MLP on x; local = the same kind of MLP on u = Linear(2->4)(x), all four
    dims of u embedded (first Linear 640 -> 256); gate = softmax(Linear(256->2)(ReLU(
    Linear(128->256)(emb1(t))))); eps = w_g * global + w_l * local. Returns (eps, gate).
    """

    arch = "dualscale"

    def __init__(self):
        super().__init__()
        self.t_emb = TimeEmbedding()
        self.global_branch = MLPBranch(2)
        self.upscale = nn.Linear(2, 4)
        self.local_branch = MLPBranch(4)
        self.gate = nn.Sequential(
            nn.Linear(EMB_DIM, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 2),
            nn.Softmax(dim=-1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        t_emb = self.t_emb(t)
        g = self.global_branch(x, t_emb)
        loc = self.local_branch(self.upscale(x), t_emb)
        w = self.gate(t_emb)
        eps = w[:, 0:1] * g + w[:, 1:2] * loc
        return eps, w


ARCHS = {"baseline": Baseline, "dualscale": DualScale}


def build(arch: str) -> nn.Module:
    return ARCHS[arch]()


def eps_of(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = model(x, t)
    return out[0] if isinstance(out, tuple) else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
