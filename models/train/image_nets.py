"""Image denoisers for 32x32 RGB: the adaptive dual-scale conv net and its same-FLOPs baseline.

Both take `x` [N,3,32,32] float32 (the noisy image x_t) and `t` [N] float32 (the timestep index
0..999 written as a float) and return the network output [N,3,32,32] (what it is - epsilon or v -
is the schedule's `prediction_type`, recorded in the manifest). The dual-scale model also returns
its gate weights [N,2] = (w_global, w_local), a softmax that depends on t only.

- time: sinusoidal embedding of t (64 dims, the 2D models' formula, `nets.MultiSinusoidal`),
  then Linear(64->128), SiLU: `temb`, fed to every residual block as FiLM (scale, shift after
  the second GroupNorm, DDPM++ style).
- local branch: full resolution 32x32, width 24, conv3x3 -> 1 residual block (2 convs) ->
  GroupNorm, SiLU, conv3x3 -> 3 channels. Receptive field 9x9 pixels: texture, edges.
- global branch: AveragePool 4x4 -> 8x8, width 64, conv3x3 -> 2 residual blocks (4 convs) ->
  GroupNorm, SiLU -> Resize x4 (nearest) -> conv3x3 at 32x32 -> 3 channels (the conv smooths the
  blocks). Receptive field 11x11 cells at 8x8 (44 pixels): the whole picture, composition.
- gate: Linear(64->64), SiLU, Linear(64->2), Softmax on the sinusoidal embedding of t;
  out = w_g * global + w_l * local.
- baseline: one branch at 32x32, width 24, 2 residual blocks (receptive field 13x13), no gate;
  the same FLOPs as the dual-scale model within a few percent (`flops()`).

ONNX/tract: only Conv, GroupNorm, SiLU, AveragePool, nearest upsampling, Linear, Sin, Cos, Concat,
Add, Mul, Softmax. No attention. Nothing here trains, samples or exports (image_export.py writes
GroupNorm and the upsampling in the form tract runs fastest).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import nets

T_DIM = 64        # sinusoidal embedding of t
TEMB = 128        # width of the time MLP output fed to the blocks
LOCAL_WIDTH = 24
GLOBAL_WIDTH = 64
BASELINE_WIDTH = 24
GROUPS = 8
DOWN = 4          # global branch works at 32 / 4 = 8x8


class TimeEmbedding(nets.MultiSinusoidal):
    """t [N] -> [N, 64] = [sin(t f_i), cos(t f_i)], f_i = 10000^(-i/31)."""

    def __init__(self):
        super().__init__(1, T_DIM, 1.0)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(t.unsqueeze(-1))


class ResBlock(nn.Module):
    """x + conv(SiLU(FiLM(GN(conv(SiLU(GN(x))))))), FiLM = (1 + scale) * h + shift from temb."""

    def __init__(self, width: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(TEMB, 2 * width)
        self.norm2 = nn.GroupNorm(GROUPS, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.width = width

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        film = self.film(temb)
        scale = film[:, :self.width].unsqueeze(-1).unsqueeze(-1)
        shift = film[:, self.width:].unsqueeze(-1).unsqueeze(-1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class ConvStack(nn.Module):
    """conv3x3 in -> `blocks` ResBlocks -> GroupNorm, SiLU (features, not yet 3 channels)."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(blocks)])
        self.norm_out = nn.GroupNorm(GROUPS, width)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for b in self.blocks:
            h = b(h, temb)
        return F.silu(self.norm_out(h))


class TimeMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(T_DIM, TEMB)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.silu(self.lin(emb))


class LocalBranch(nn.Module):
    def __init__(self, width: int = LOCAL_WIDTH, blocks: int = 1):
        super().__init__()
        self.body = ConvStack(width, blocks)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x, temb):
        return self.conv_out(self.body(x, temb))


class GlobalBranch(nn.Module):
    def __init__(self, width: int = GLOBAL_WIDTH, blocks: int = 2):
        super().__init__()
        self.body = ConvStack(width, blocks)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x, temb):
        h = self.body(F.avg_pool2d(x, DOWN), temb)
        h = F.interpolate(h, scale_factor=float(DOWN), mode="nearest")
        return self.conv_out(h)


class DualScale(nn.Module):
    arch = "dualscale"

    def __init__(self):
        super().__init__()
        self.t_emb = TimeEmbedding()
        self.t_mlp = TimeMLP()
        self.global_branch = GlobalBranch()
        self.local_branch = LocalBranch()
        self.gate = nn.Sequential(nn.Linear(T_DIM, 64), nn.SiLU(), nn.Linear(64, 2), nn.Softmax(dim=-1))
        nn.init.zeros_(self.gate[2].weight)
        nn.init.zeros_(self.gate[2].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        emb = self.t_emb(t)
        temb = self.t_mlp(emb)
        g = self.global_branch(x, temb)
        loc = self.local_branch(x, temb)
        w = self.gate(emb)
        out = w[:, 0:1].unsqueeze(-1).unsqueeze(-1) * g + w[:, 1:2].unsqueeze(-1).unsqueeze(-1) * loc
        return out, w


class Baseline(nn.Module):
    arch = "baseline"

    def __init__(self):
        super().__init__()
        self.t_emb = TimeEmbedding()
        self.t_mlp = TimeMLP()
        self.net = LocalBranch(BASELINE_WIDTH, blocks=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.t_mlp(self.t_emb(t)))


ARCHS = {"baseline": Baseline, "dualscale": DualScale}


def build(arch: str) -> nn.Module:
    return ARCHS[arch]()


def output_of(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = model(x, t)
    return out[0] if isinstance(out, tuple) else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module) -> dict:
    """Multiply-adds of one evaluation at batch 1, counted per Conv2d / Linear with forward hooks
    (FLOPs = 2 x MACs). Norms, activations, pooling and the gate's elementwise products are
    listed apart as `elementwise` (one op per output element), small next to the convs."""
    macs = {"conv": 0, "linear": 0}
    elem = [0]
    hooks = []

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs["conv"] += out.numel() * k

    def lin_hook(m, inp, out):
        macs["linear"] += out.numel() * m.in_features

    def elem_hook(m, inp, out):
        elem[0] += out.numel() * (4 if isinstance(m, nn.GroupNorm) else 1)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
        elif isinstance(m, (nn.GroupNorm,)):
            hooks.append(m.register_forward_hook(elem_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1))
    for h in hooks:
        h.remove()
    total = macs["conv"] + macs["linear"]
    return {"macs": total, "flops": 2 * total, "conv_macs": macs["conv"], "linear_macs": macs["linear"],
            "groupnorm_elementwise_ops": elem[0]}
