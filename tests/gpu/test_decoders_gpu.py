"""Correctness guards for the decoders on CUDA: the graph path must produce the eager path's tokens.

Run on the GPU machine: `python -m pytest -q tests/gpu`. Skipped without CUDA. Models are real
architectures with random weights in float32, where eager and graph replays must agree token for token.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ssmbench.models import load_model
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.zoo import MODELS, ResolvedModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

PROMPT, NEW, BATCH = 48, 24, 3


def cuda_ref(name: str, backend: str = "auto", dtype: str = "float32", layers: int = 4) -> ResolvedModel:
    spec = MODELS[name]
    key = "n_layer" if "n_layer" in spec.config else "num_hidden_layers"
    spec = dataclasses.replace(spec, config={**spec.config, key: layers})  # real widths, fewer layers: fast
    return ResolvedModel(name=name, spec=spec, weights="random", dtype=dtype, device="cuda", backend=backend)


def prompt(vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (BATCH, PROMPT), generator=gen).cuda()


def generate(model, graphs: bool, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        decoder = model.decoder(BATCH, PROMPT + NEW, graphs, **kwargs)
        first = decoder.generate(prompt(model.vocab_size), NEW)
        again = decoder.generate(prompt(model.vocab_size), NEW)  # reuse: caches and graphs reset properly
    assert torch.equal(first, again)
    return first


@pytest.mark.parametrize("name", ["gpt2", "pythia-160m"])
def test_transformer_graph_tokens_equal_eager(name: str) -> None:
    model = load_model(cuda_ref(name))
    eager = generate(model, graphs=False)
    static_eager = generate(model, graphs=False, static_cache=True)
    graphs = generate(model, graphs=True)
    assert torch.equal(static_eager, eager)
    assert torch.equal(graphs, eager)


@pytest.mark.parametrize("name", ["gpt2", "pythia-160m"])
def test_transformer_loop_equals_transformers_generate(name: str) -> None:
    model = load_model(cuda_ref(name))
    ours = generate(model, graphs=False)
    with torch.inference_mode():
        theirs = model.library_generate(prompt(model.vocab_size), NEW, cuda_graphs=False)
    assert torch.equal(ours, theirs)


@pytest.mark.skipif(not fused_mamba_kernels(), reason="mamba_ssm kernels unavailable")
@pytest.mark.parametrize("name", ["mamba-130m", "mamba2-130m"])
def test_mamba_ssm_graph_tokens_equal_eager_and_library(name: str) -> None:
    model = load_model(cuda_ref(name, backend="mamba_ssm"))
    assert model.kernel == "mamba_ssm-cuda"
    eager = generate(model, graphs=False)
    graphs = generate(model, graphs=True)
    assert torch.equal(graphs, eager)
    with torch.inference_mode():
        library = model.library_generate(prompt(model.vocab_size), NEW, cuda_graphs=True)
    assert torch.equal(graphs, library)


@pytest.mark.skipif(not fused_mamba_kernels(), reason="mamba_ssm kernels unavailable")
def test_transformers_mamba_runs_on_the_fused_kernels() -> None:
    model = load_model(cuda_ref("mamba-130m", backend="hf"))
    assert model.kernel == "hf-mamba_ssm-kernels"
    ours = generate(model, graphs=False)
    with torch.inference_mode():
        theirs = model.library_generate(prompt(model.vocab_size), NEW, cuda_graphs=False)
    assert torch.equal(ours, theirs)


@pytest.mark.skipif(not fused_mamba_kernels(), reason="mamba_ssm kernels unavailable")
def test_the_hybrid_decodes_on_the_fused_kernels_what_transformers_generates() -> None:
    """Falcon-H1 (real widths, 4 layers): its Mamba-2 mixer on the fused kernels, the label says so, and
    ssmbench's eager loop gives transformers.generate's tokens."""
    model = load_model(cuda_ref("falcon-h1-0.5b"))
    assert model.kernel == "hf-sdpa+mamba_ssm-kernels" and model.ref.spec.family == "hybrid"
    ours = generate(model, graphs=False)
    with torch.inference_mode():
        theirs = model.library_generate(prompt(model.vocab_size), NEW, cuda_graphs=False)
    assert torch.equal(ours, theirs)
