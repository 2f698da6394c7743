"""A plain-PyTorch `chunk_bwd_dqkwg` for fla, in the one place where fla refuses its own.

fla 0.6 computes Gated DeltaNet's backward with Triton kernels, one of which,
`chunk_bwd_kernel_dqkwg` (`fla/ops/common/chunk_o.py`: dq, dk, dw and the gate gradient dg of each
chunk), Triton >= 3.4.0 and < 3.7.1 miscompile on Hopper GPUs for the gated case: `tl.trans` of a
wgmma-layout tensor gives wrong dk and dg (fla issue #640). fla therefore raises there, and replaces
the kernel only with its TileLang backend (`CommonTileLangBackend`), which needs tilelang and nvcc.
Our H200 runs Triton 3.6 without tilelang, so Gated DeltaNet could not train on it.

This module is a third implementation of that one function, registered in fla's own backend
registry for 'common' (as the TileLang one is) and available exactly where fla would otherwise
raise: a Hopper GPU, Triton in [3.4.0, 3.7.1), fla's TileLang backend not usable (the gated_deltanet
baseline imports, and so registers, it when it builds the model; anywhere else it is registered
but unavailable). The math is the
kernel's with USE_G (exp2 gates, the chunk-end `dg_last` terms, scale, the causal mask within each
chunk, GVA, dw = -dv h^T, both state layouts, packed documents), as batched fp32 matmuls over all
chunks at once. Everything else in Gated DeltaNet's forward and backward stays on fla's Triton
kernels; this step costs memory for fp32 copies of the chunk states h and dh.
"""

from __future__ import annotations

import fla.utils
import torch
from fla.backends import BaseBackend, register
from fla.ops.common.backends.tilelang import CommonTileLangBackend
from fla.ops.utils.index import prepare_chunk_indices


def triton_kernel_refused() -> bool:
    """fla's own condition for raising in the gated `chunk_bwd_dqkwg` (fla issue #640), read from
    fla.utils at call time."""
    return bool(fla.utils.IS_NVIDIA_HOPPER and fla.utils.TRITON_ABOVE_3_4_0 and not fla.utils.TRITON_ABOVE_3_7_1)


def tilelang_usable() -> bool:
    """Whether fla's TileLang backend, its own fix for the kernel, takes the call instead."""
    return CommonTileLangBackend.is_available() and CommonTileLangBackend().is_enabled()


@register("common")
class TorchDqkwgBackend(BaseBackend):
    """`chunk_bwd_dqkwg` in PyTorch where fla refuses its Triton kernel and has no TileLang."""

    backend_type = "swat_harness_torch"
    priority = 6  # after fla's TileLang backend (5): wherever that one is usable, it goes first

    @classmethod
    def is_available(cls) -> bool:
        return triton_kernel_refused() and not tilelang_usable()

    def chunk_bwd_dqkwg_verifier(self, q, k, v, do, h, dh, w=None, g=None, g_gamma=None, dv=None,
                                 scale=None, state_v_first=False, cu_seqlens=None, chunk_size=64,
                                 chunk_indices=None) -> tuple[bool, str | None]:
        if g is None:
            return False, "the torch backend replaces only the gated kernel (g is None: fla's Triton kernel runs)"
        if g_gamma is not None:
            return False, "the torch backend does not take g_gamma"
        if v.shape[2] % k.shape[2] != 0:
            return False, f"value heads ({v.shape[2]}) must be a multiple of key heads ({k.shape[2]})"
        return True, None

    def chunk_bwd_dqkwg(self, *args, **kwargs):
        return chunk_bwd_dqkwg_torch(*args, **kwargs)


def chunk_rows(B: int, T: int, BT: int, cu_seqlens, chunk_indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each chunk in the order of fla's chunk states h (batch-major, or `chunk_indices`' order
    for packed documents), the flat token index of each of its BT rows ([N, BT], into B*T tokens;
    rows past the end of a document point at B*T, a padding row) and which rows are tokens."""
    if cu_seqlens is None:
        NT = -(-T // BT)
        bos = (torch.arange(B, device=device) * T).repeat_interleave(NT)
        start, eos = bos + torch.arange(NT, device=device).repeat(B) * BT, bos + T
    else:
        if chunk_indices is None:
            chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
        seq, i_t = chunk_indices[:, 0].long(), chunk_indices[:, 1].long()
        cu = cu_seqlens.long()
        start, eos = cu[seq] + i_t * BT, cu[seq + 1]
    pos = start[:, None] + torch.arange(BT, device=device)
    valid = pos < eos[:, None]
    return torch.where(valid, pos, B * T), valid


def chunk_bwd_dqkwg_torch(q, k, v, do, h, dh, w=None, g=None, g_gamma=None, dv=None, scale=None,
                          state_v_first=False, cu_seqlens=None, chunk_size=64, chunk_indices=None):
    """fla's `chunk_bwd_dqkwg` for the gated case, with its signature and outputs.

    Within each chunk of BT tokens, with g the chunk-local cumulative log2 gate, h_c the chunk's
    start state [K, V] and dh_c the gradient of its end state:
        dq = scale exp2(g) (do h_c^T) + ds k,   ds = scale causal(do v^T * exp2(g_i - g_j))
        dk = exp2(g_last - g) (v dh_c^T) + ds^T q
        dg = rowsum(dq q) - rowsum(dk k), plus at the chunk's last token
             exp2(g_last) <h_c, dh_c> + sum(exp2(g_last - g) (v dh_c^T) k)
        dw = -(dv h_c^T)
    Returns dq [B, T, H, K] (q's dtype), dk (k's dtype), dw (w's, or None) and dg [B, T, HV]
    in fp32, as fla's wrapper returns them (dq, dk summed over each key head's value heads, dg
    summed over its K blocks). Computed in fp32, autocast off."""
    B, T, H, K = k.shape
    HV = v.shape[2]
    G, BT = HV // H, chunk_size
    scale = K ** -0.5 if scale is None else scale
    with torch.autocast(q.device.type, enabled=False):
        index, valid = chunk_rows(B, T, BT, cu_seqlens, chunk_indices, q.device)
        N = index.shape[0]

        def chunks(x):  # [B, T, heads, D] -> [N, heads, BT, D] in fp32, zero past each document
            flat = x.reshape(B * T, *x.shape[2:]).float()
            flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
            return flat[index].transpose(1, 2)

        def tokens(x, dtype):  # [N, heads, BT, D] -> [B, T, heads, D]
            rows = x.transpose(1, 2).reshape(N * BT, x.shape[1], x.shape[-1])
            flat = rows.new_zeros(B * T + 1, *rows.shape[1:]).index_copy_(0, index.flatten(), rows)
            return flat[:-1].view(B, T, *rows.shape[1:]).to(dtype)

        q_c, k_c = (chunks(x).repeat_interleave(G, dim=1) for x in (q, k))  # [N, HV, BT, K]
        v_c, do_c = chunks(v), chunks(do)  # [N, HV, BT, V]
        h_c, dh_c = (x.reshape(N, HV, *x.shape[-2:]).float() for x in (h, dh))
        if state_v_first:
            h_c, dh_c = h_c.transpose(-1, -2), dh_c.transpose(-1, -2)  # [N, HV, K, V]
        g_c = chunks(g.unsqueeze(-1))[..., 0]  # [N, HV, BT]
        last = valid.sum(1) - 1  # the chunk's last token
        g_last = g_c.gather(2, last[:, None, None].expand(N, HV, 1))  # [N, HV, 1]
        row_ok = valid[:, None, :]
        causal = torch.tril(torch.ones(BT, BT, dtype=torch.bool, device=q.device)) & valid[:, :, None] & valid[:, None, :]

        dg_last = torch.einsum("nhkv,nhkv->nh", h_c, dh_c) * torch.exp2(g_last[..., 0])
        dq = (do_c @ h_c.mT) * (torch.exp2(g_c) * scale)[..., None]
        dk = (v_c @ dh_c.mT) * torch.exp2(torch.where(row_ok, g_last - g_c, -torch.inf))[..., None]
        dg_last = dg_last + torch.einsum("nhtk,nhtk->nh", dk, k_c)
        decay = torch.where(causal[:, None], g_c[..., :, None] - g_c[..., None, :], -torch.inf)
        ds = (do_c @ v_c.mT) * torch.exp2(decay) * scale  # [N, HV, BT, BT]
        dq = dq + ds @ k_c
        dk = dk + ds.mT @ q_c
        dg = (dq * q_c).sum(-1) - (dk * k_c).sum(-1)
        dg = dg.scatter_add(2, last[:, None, None].expand(N, HV, 1), dg_last[..., None])

        dw = tokens(-(chunks(dv) @ h_c.mT), w.dtype) if w is not None else None
        dq, dk = (x.view(N, H, G, BT, K).sum(2) for x in (dq, dk))
        return tokens(dq, q.dtype), tokens(dk, k.dtype), dw, tokens(dg.unsqueeze(-1), torch.float32)[..., 0]
