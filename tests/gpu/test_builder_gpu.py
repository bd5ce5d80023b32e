"""Small models on CUDA against mamba_ssm's own kernels: TorchMamba and the fused Mamba give the same
outputs and gradients from one state_dict, a built model is mamba_ssm's MambaLMHeadModel, the chunked scan
computes what `selective_scan_fn` computes, and a 2-layer Mamba of the paper's size runs forward at 2^20
tokens.

Run on the GPU machine: `python -m pytest -q tests/gpu/test_builder_gpu.py`. Skipped without CUDA, and
without mamba_ssm's kernels.

Tolerances are mamba_ssm's float32 ones for the scan (state-spaces/mamba tests/ops/test_selective_scan.py,
as in tests/gpu/test_scan_gpu.py): output (6e-4, 2e-3); gradients du (2·rtol, 2·atol), ddelta (5·rtol,
10·atol), dB and dC (rtol, atol), the float32 parameters (1e-3, 1e-3) raised to (rtol, atol) where larger,
dA with 5·atol. TF32 is switched off so that torch's matmuls and convolutions are float32 too.
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.models.builder import SmallModelConfig, build_model
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.models.mixers.mamba import TorchMamba
from ssmbench.models.mixers.selective_scan import selective_scan_chunked

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

RTOL, ATOL = 6e-4, 2e-3
RTOLW, ATOLW = max(1e-3, RTOL), max(1e-3, ATOL)
GRAD_TOL = {"u": (2 * RTOL, 2 * ATOL), "delta": (5 * RTOL, 10 * ATOL), "A": (RTOLW, 5 * ATOLW),
            "B": (RTOL, ATOL), "C": (RTOL, ATOL), "D": (RTOLW, ATOLW), "z": (RTOLW, ATOLW),
            "delta_bias": (RTOLW, ATOLW)}


@pytest.fixture(scope="module")
def mamba_ssm():
    kernels = fused_mamba_kernels()
    if not kernels:
        pytest.skip(f"needs mamba_ssm's kernels: {kernels.reason}")
    import mamba_ssm

    return mamba_ssm


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("length", [3, 256, 2000])
def test_one_state_dict_same_outputs_and_gradients_in_fused_mamba_and_torch_mamba(mamba_ssm, no_tf32, length):
    from mamba_ssm.modules.mamba_simple import Mamba

    torch.manual_seed(0)
    fused = Mamba(64, d_state=16, d_conv=4, expand=2, device="cuda")
    twin = TorchMamba(64, d_state=16, d_conv=4, expand=2, device="cuda")
    twin.load_state_dict(fused.state_dict(), strict=True)
    hidden = torch.randn(2, length, 64, device="cuda", requires_grad=True)
    out, want = twin(hidden), fused(hidden)
    torch.testing.assert_close(out, want, rtol=RTOL, atol=ATOL)
    # and the same gradients (seen on an H200: 1e-6 apart at most, relative to values up to 23)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [hidden, *twin.parameters()], grad)
    expected = torch.autograd.grad(want, [hidden, *fused.parameters()], grad)
    names = ["input", *(name for name, _ in twin.named_parameters())]
    for name, g, e in zip(names, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOLW, atol=ATOLW, msg=lambda m, name=name: f"d{name}: {m}")


def test_model_state_dict_moves_from_cuda_to_cpu(mamba_ssm, no_tf32):
    config = SmallModelConfig("mamba")
    on_gpu, on_cpu = build_model(config, "cuda"), build_model(config, "cpu", seed=1)
    assert (on_gpu.kernel, on_cpu.kernel) == ("mamba_ssm-cuda", "torch-chunked-scan")
    assert on_gpu.n_params == on_cpu.n_params == 66_496
    on_cpu.module.load_state_dict(on_gpu.module.state_dict(), strict=True)
    tokens = torch.randint(0, 16, (2, 300))
    with torch.no_grad():
        want = on_gpu.module(tokens.cuda()).cpu()
        got = on_cpu.module(tokens)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_model_state_dict_loads_into_mamba_lm_head_model(mamba_ssm, no_tf32):
    """The builder names its modules as mamba_ssm's MambaLMHeadModel does (d_intermediate=0, RMSNorm, tied
    head), so the two are one model: runs calibrated with mamba_ssm compare directly."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    built = build_model(SmallModelConfig("mamba"), "cuda")
    config = MambaConfig(d_model=64, n_layer=2, vocab_size=16, d_intermediate=0)  # rms_norm, tied: defaults
    theirs = MambaLMHeadModel(config, device="cuda")
    theirs.load_state_dict(built.module.state_dict(), strict=True)
    tokens = torch.randint(0, 16, (2, 300), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(built.module(tokens), theirs(tokens).logits, rtol=RTOL, atol=ATOL)


def scan_inputs(batch, d_inner, d_state, length, seed=0):
    """As mamba_ssm's test_selective_scan makes them (real A, selective B and C, z, D, delta_bias)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, device="cuda", generator=gen)

    t = {"u": randn(batch, d_inner, length),
         "delta": 0.5 * torch.rand(batch, d_inner, length, device="cuda", generator=gen),
         "A": -0.5 * torch.rand(d_inner, d_state, device="cuda", generator=gen),
         "B": randn(batch, d_state, length), "C": randn(batch, d_state, length), "D": randn(d_inner),
         "z": randn(batch, d_inner, length),
         "delta_bias": 0.5 * torch.rand(d_inner, device="cuda", generator=gen)}
    return {k: v.requires_grad_() for k, v in t.items()}


@pytest.mark.parametrize("shape", [(2, 4, 8, 128), (2, 4, 8, 4096), (1, 1024, 16, 2048)],
                         ids=lambda s: "x".join(map(str, s)))
def test_chunked_scan_matches_selective_scan_fn(mamba_ssm, shape):
    """Gradients at upstream's shapes (dim 4), as upstream and tests/gpu/test_scan_gpu.py check them."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    inputs = scan_inputs(*shape)
    twin = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = selective_scan_chunked(**inputs, delta_softplus=True)
    want = selective_scan_fn(**twin, delta_softplus=True)
    torch.testing.assert_close(out, want, rtol=RTOL, atol=ATOL)
    if shape[1] != 4:
        return
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, list(inputs.values()), grad)
    expected = torch.autograd.grad(want, list(twin.values()), grad)
    for name, g, e in zip(inputs, got, expected, strict=True):
        rtol, atol = GRAD_TOL[name]
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol, msg=lambda m, name=name: f"d{name}: {m}")


def test_paper_size_mamba_runs_at_two_to_the_twenty(mamba_ssm):
    """Induction heads are tested up to 2^20 tokens (paper Table 11): batch 1, bf16 autocast."""
    built = build_model(SmallModelConfig("mamba"), "cuda")
    assert built.kernel == "mamba_ssm-cuda"
    tokens = torch.randint(0, 16, (1, 2**20), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = built.module(tokens)
    assert logits.shape == (1, 2**20, 16)
    assert torch.isfinite(logits).all()
