"""Mamba's selective scan in plain PyTorch: a sequential reference, and a chunked version fast enough to
train small models on the CPU.

Both compute mamba_ssm's `selective_scan_ref` for real A and selective (per-token) B and C:

    delta  = softplus(delta + delta_bias)                        (each step optional)
    x_t    = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t    x: (batch, d_inner, d_state), x_{-1} = 0
    y_t    = sum_n C_t[n] * x_t[:, :, n]
    out    = (y + D * u) * silu(z)                               (D and z optional)

Shapes as in mamba_ssm: u, delta, z (batch, d_inner, L); A (d_inner, d_state); B, C (batch, d_state, L);
D, delta_bias (d_inner,). Everything runs in float32 (autocast off) and the output is cast back to u's
dtype, as selective_scan_ref does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None,
                       delta_softplus: bool = False) -> Tensor:
    """The oracle: one step per token, the same operations in the same order as mamba_ssm's
    `selective_scan_ref`.

    One change, for the backward's sake: it walks L over `unbind` views where upstream indexes
    `deltaA[:, :, i]`; the backward of each index materialises a zero tensor as large as deltaA, which
    makes upstream's backward quadratic in L. unbind's backward is one stack.
    """
    _check_shapes(u, delta, A, B, C)
    with torch.autocast(u.device.type, enabled=False):
        delta = _discretisation_step(delta, delta_bias, delta_softplus)
        u_f, B_f, C_f = u.float(), B.float(), C.float()
        delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A.float()))
        delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B_f, u_f)
        x = delta_a.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
        ys = []
        for a, b_u, c in zip(delta_a.unbind(2), delta_b_u.unbind(2), C_f.unbind(2), strict=True):
            x = a * x + b_u
            ys.append(torch.einsum("bdn,bn->bd", x, c))
        return _finish(torch.stack(ys, dim=2), u_f, D, z, u.dtype)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           z: Tensor | None = None, delta_bias: Tensor | None = None,
                           delta_softplus: bool = False, chunk_size: int | None = None) -> Tensor:
    """`selective_scan_ref`'s result, and its gradients, in about 2·(chunk_size + L/chunk_size) tensor
    steps instead of L.

    The sequence is cut into chunks of `chunk_size` tokens (default `default_chunk_size(L)`; the last one
    is padded with steps that neither decay nor add anything). Each step of the loops below works on all
    chunks at once, or on all channels of one chunk boundary:

    1. every chunk's end state from a zero start (chunk_size steps);
    2. the state entering each chunk, carried across them: h_c = P_{c-1} h_{c-1} + end_{c-1}, where
       P_c = exp(A · sum of delta over chunk c) is the chunk's whole decay (n_chunks steps);
    3. the recurrence again within every chunk from its entering state, reading y out with C as it goes
       (chunk_size steps).

    The backward runs the adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1} (g = dL/dx) the same way,
    right to left, and reads every input's gradient off g and the forward's states.

    Stability: A < 0 and delta >= 0, so every exponent taken, a step's delta·A or A times a chunk's sum of
    delta (the cumulative log-decay across a chunk), is <= 0: no exponential of a positive number and no
    division, whatever the chunk size.

    Why a hand-written backward: on a CPU this computation is bound by memory traffic, and autograd
    through the loops saves and allocates several (batch, d_inner, L, d_state) tensors per call, each
    large enough to cost its page faults afresh; that version ran no faster than the sequential
    reference. Here a step's tensors are (batch, d_inner, n_chunks, d_state), and when gradients are
    wanted two full-size tensors are kept for the backward: the states and the decays exp(delta·A), the
    latter computed once instead of four times.
    Why not the "quadratic within a chunk" form (Mamba-2's SSD, exp(S_t - S_s) for all s <= t): A differs
    per (channel, state) in Mamba-1, so that decay matrix cannot be shared over d_state and costs
    chunk_size times the sequential work, with no large matmul to win it back on a CPU.
    """
    _check_shapes(u, delta, A, B, C)
    chunk = chunk_size or default_chunk_size(u.shape[-1])
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}")
    with torch.autocast(u.device.type, enabled=False):
        delta = _discretisation_step(delta, delta_bias, delta_softplus)
        u_f = u.float()
        inputs = (delta, delta * u_f, A.float(), B.float(), C.float())
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            y = _ChunkedScan.apply(*inputs, chunk)
        else:
            steps = _Steps.from_inputs(*inputs, chunk, keep_decays=False)
            y = _from_steps(steps.scan(steps.entering_states()), u.shape[-1])
        return _finish(y, u_f, D, z, u.dtype)


def default_chunk_size(length: int) -> int:
    """A power of two near sqrt(L), between 8 and 64: it balances the steps within chunks against the
    steps between them (measured best on a CPU at batch 8, d_inner 128, L 256 to 4096)."""
    return min(64, max(8, 2 ** round(math.log2(max(length, 1)) / 2)))


class _ChunkedScan(torch.autograd.Function):
    """y_t = sum_n C_t x_t with x_t = exp(delta_t A) x_{t-1} + delta_u_t B_t, float32 throughout.
    delta, delta_u: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L).
    Differentiable once (no gradients of gradients)."""

    @staticmethod
    def forward(ctx, delta, delta_u, A, B, C, chunk):
        steps = _Steps.from_inputs(delta, delta_u, A, B, C, chunk, keep_decays=True)
        h_in = steps.entering_states()
        states = steps.delta.new_empty(steps.decays.shape)
        y = steps.scan(h_in, states_out=states)
        ctx.save_for_backward(steps.delta, steps.delta_u, A, steps.B, steps.C, steps.decays, h_in, states)
        ctx.length = delta.shape[-1]
        return _from_steps(y, ctx.length)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        delta, delta_u, A, B, C, decays, h_in, states = ctx.saved_tensors
        steps = _Steps(delta, delta_u, A, B, C, decays)
        grads = steps.adjoint(_to_steps(grad_y.float(), delta.shape[0]), h_in, states)
        d_delta, d_delta_u, d_A, d_B, d_C = grads
        return (_from_steps(d_delta, ctx.length), _from_steps(d_delta_u, ctx.length), d_A,
                _from_steps(d_B, ctx.length), _from_steps(d_C, ctx.length), None)


class _Steps:
    """The scan's inputs in step-major layout, so that step t of every chunk is one contiguous slice:
    delta, delta_u (chunk, batch, d_inner, n_chunks); B, C (chunk, batch, 1, n_chunks, d_state); A
    (d_inner, d_state); decays, if kept, exp(delta·A) (chunk, batch, d_inner, n_chunks, d_state)."""

    def __init__(self, delta: Tensor, delta_u: Tensor, A: Tensor, B: Tensor, C: Tensor,
                 decays: Tensor | None):
        self.delta, self.delta_u, self.B, self.C, self.decays = delta, delta_u, B, C, decays
        self.A_b = A[:, None, :]  # broadcasts against (batch, d_inner, n_chunks, d_state)
        self.chunk, batch, d_inner, self.n_chunks = delta.shape
        self.state_shape = (batch, d_inner, self.n_chunks, A.shape[1])

    @classmethod
    def from_inputs(cls, delta, delta_u, A, B, C, chunk: int, keep_decays: bool) -> _Steps:
        """Padded and laid out step-major (zero padding: delta = 0, no decay; delta_u = B = C = 0, no
        input and no output)."""
        delta = _to_steps(delta, chunk)
        B_s, C_s = (_to_steps(t, chunk).transpose(2, 3).unsqueeze(2).contiguous() for t in (B, C))
        decays = torch.exp(delta.unsqueeze(-1) * A[:, None, :]) if keep_decays else None
        return cls(delta, _to_steps(delta_u, chunk), A, B_s, C_s, decays)

    def decay(self, t: int) -> Tensor:
        """exp(delta_t A) for step t of every chunk, <= 1."""
        if self.decays is not None:
            return self.decays[t]
        return torch.exp(self.delta[t].unsqueeze(-1) * self.A_b)

    def inputs(self, t: int) -> Tensor:
        return self.delta_u[t].unsqueeze(-1) * self.B[t]

    def whole_chunk_decays(self) -> Tensor:
        """exp(A · sum of delta over the chunk), (batch, d_inner, n_chunks, d_state), <= 1."""
        return torch.exp(self.delta.sum(0).unsqueeze(-1) * self.A_b)

    def entering_states(self) -> Tensor:
        """The state entering each chunk (batch, d_inner, n_chunks, d_state); zero for the first."""
        end = self.delta.new_zeros(self.state_shape)
        for t in range(self.chunk):
            end.mul_(self.decay(t)).add_(self.inputs(t))
        whole = self.whole_chunk_decays()
        entering = torch.zeros_like(end)
        for c in range(1, self.n_chunks):
            torch.addcmul(end[:, :, c - 1], whole[:, :, c - 1], entering[:, :, c - 1], out=entering[:, :, c])
        return entering

    def scan(self, h_in: Tensor, states_out: Tensor | None = None) -> Tensor:
        """The recurrence within every chunk from its entering state; y (chunk, batch, d_inner, n_chunks).
        The states are written to states_out when given."""
        x = h_in
        y = self.delta.new_empty(self.delta.shape)
        for t in range(self.chunk):
            out = None if states_out is None else states_out[t]
            x = torch.addcmul(self.inputs(t), self.decay(t), x, out=out)
            torch.sum(x * self.C[t], dim=-1, out=y[t])
        return y

    def adjoint(self, grad_y: Tensor, h_in: Tensor, states: Tensor) -> tuple[Tensor, ...]:
        """Every input's gradient, step-major, from g_t = dL/dx_t = C_t dy_t + a_{t+1} g_{t+1}: each chunk
        from zero at its right end, the chunks' carry from the right, then each chunk again from its
        carry, reading the gradients off as it goes."""
        outflow = torch.zeros_like(h_in)  # a_first · g_first of each chunk, from a zero carry
        for t in reversed(range(self.chunk)):
            outflow.add_(grad_y[t].unsqueeze(-1) * self.C[t]).mul_(self.decay(t))
        whole = self.whole_chunk_decays()
        carry = torch.zeros_like(outflow)  # what chunk c's last position receives from chunk c+1
        for c in reversed(range(self.n_chunks - 1)):
            torch.addcmul(outflow[:, :, c + 1], whole[:, :, c + 1], carry[:, :, c + 1], out=carry[:, :, c])

        d_delta, d_delta_u = torch.empty_like(self.delta), torch.empty_like(self.delta)
        d_B, d_C = torch.empty_like(self.B.squeeze(2)), torch.empty_like(self.C.squeeze(2))
        d_A = torch.zeros_like(self.A_b)
        for t in reversed(range(self.chunk)):
            g = carry.add_(grad_y[t].unsqueeze(-1) * self.C[t])  # g_t, in the carry's buffer
            x_prev = states[t - 1] if t else h_in
            torch.sum(grad_y[t].unsqueeze(-1) * states[t], dim=1, out=d_C[t])
            torch.sum(g * self.delta_u[t].unsqueeze(-1), dim=1, out=d_B[t])
            torch.sum(g * self.B[t], dim=-1, out=d_delta_u[t])
            decay = self.decay(t)
            d_log_decay = g * x_prev * decay  # dL/d(delta_t A)
            torch.sum(d_log_decay * self.A_b, dim=-1, out=d_delta[t])
            d_A += (d_log_decay * self.delta[t].unsqueeze(-1)).sum((0, 2)).unsqueeze(1)
            carry = g.mul_(decay)
        return d_delta, d_delta_u, d_A.squeeze(1), d_B.transpose(2, 3), d_C.transpose(2, 3)


def _to_steps(t: Tensor, chunk: int) -> Tensor:
    """(batch, X, L) -> (chunk, batch, X, n_chunks), contiguous, L zero-padded to a multiple of chunk."""
    t = F.pad(t, (0, (-t.shape[-1]) % chunk))
    return t.view(*t.shape[:2], -1, chunk).permute(3, 0, 1, 2).contiguous()


def _from_steps(t: Tensor, length: int) -> Tensor:
    """(chunk, batch, X, n_chunks) -> (batch, X, L), the padding dropped."""
    return t.permute(1, 2, 3, 0).reshape(t.shape[1], t.shape[2], -1)[..., :length]


def _discretisation_step(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> Tensor:
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    return F.softplus(delta) if softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    """The D skip and the z gate, then back to the input's dtype."""
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out.to(dtype)


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """Only real A and selective B, C (batch, d_state, L): the case Mamba's block uses."""
    batch, d_inner, length = u.shape
    want = {"delta": (delta, (batch, d_inner, length)), "A": (A, (d_inner, A.shape[-1])),
            "B": (B, (batch, A.shape[-1], length)), "C": (C, (batch, A.shape[-1], length))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"selective scan: {name} has shape {tuple(t.shape)}, expected {shape}")
    if A.is_complex():
        raise ValueError("selective scan: complex A is not supported here")
