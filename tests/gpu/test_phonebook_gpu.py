"""Phonebook decoding on CUDA: generate_until through CUDA graphs gives the eager path's answers, for GPT-2
on transformers' static cache and for Mamba on mamba_ssm's fused kernels (random weights: the answers are
nonsense, but they must be the same nonsense).

Run on the GPU machine: `python -m pytest -q tests/gpu/test_phonebook_gpu.py`.
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.data.phonebook import make_queries
from ssmbench.models import load_model
from ssmbench.models.generate import generate_until
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.models.tokenizers import byte_tokenizer
from ssmbench.zoo import MODELS, ResolvedModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("name", ["gpt2", "mamba-130m"])
def test_graph_decoding_answers_as_eager_decoding(name: str):
    if name.startswith("mamba") and not fused_mamba_kernels():
        pytest.skip("mamba_ssm kernels unavailable")
    ref = ResolvedModel(name=name, spec=MODELS[name], weights="random", dtype="float16", device="cuda")
    model = load_model(ref)
    assert model.kernel == ("mamba_ssm-cuda" if name.startswith("mamba") else "hf-sdpa")
    prompts = [q.prompt for q in make_queries(20, 6, "random", "standard", seed=0)]
    tokenizer = byte_tokenizer()  # random weights: any tokenizer gives prompts of the right length
    eager = generate_until(model, prompts, 12, cuda_graphs=False, tokenizer=tokenizer)
    graphs = generate_until(model, prompts, 12, cuda_graphs=True, tokenizer=tokenizer)
    assert [g.text for g in graphs] == [g.text for g in eager]
