"""The transformers backend: GPT-2, Pythia (GPT-NeoX) and transformers' own Mamba and Mamba-2.

Eager decoding uses transformers' default dynamic cache. With CUDA graphs, Transformers decode into a
static KV cache (fixed addresses, positions kept on the device) and ssmbench captures the step; this is the
fair counterpart of mamba_ssm's graph decoding that the Mamba paper's baseline lacked.

transformers renamed the cache argument across 5.x (`past_key_values`/`cache_params` became `cache`), so the
name is read off each model's forward signature rather than assumed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ssmbench.errors import JobError
from ssmbench.models.base import Decoder, LoadedModel
from ssmbench.models.common import (
    build_config,
    check_local_checkpoint,
    checkpoint_identity,
    local_checkpoint_error,
    offline_weights_error,
    torch_dtype,
)
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.zoo import ResolvedModel

CACHE_ARGUMENTS = ("cache", "past_key_values", "cache_params")


def load_hf(ref: ResolvedModel) -> HFModel:
    """Build (random weights, offline) or load (pretrained) a transformers causal LM on its device.

    A local `path:` loads from its directory; a hub id loads from the cache alone when cached, is downloaded
    when the hub answers, and otherwise fails at once with the remedies (models.hub)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ssmbench.models import hub

    dtype = torch_dtype(ref.dtype)
    if ref.weights == "random":
        torch.manual_seed(ref.seed)
        with torch.device(ref.device):
            module = AutoModelForCausalLM.from_config(build_config(ref), dtype=dtype)
    else:
        source = ref.hf_source
        if source is None:
            why = (f"its checkpoint {ref.path or ref.hf_id!r} is in mamba_ssm's format, which transformers "
                   "cannot load; run it with `backend: mamba_ssm` on a GPU" if ref.path or ref.hf_id else
                   "no transformers checkpoint is published"
                   f"{' (' + ref.spec.notes + ')' if ref.spec.notes else ''}; use backend: mamba_ssm on a GPU, "
                   "give a local `path:`, or `weights: random`")
            raise JobError(f"model {ref.name!r}: {why}")
        if ref.path:
            check_local_checkpoint(ref, ref.path)
            try:
                module = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype).to(ref.device)
            except (OSError, ValueError) as exc:  # ValueError: a config.json transformers cannot use
                raise local_checkpoint_error(ref, ref.path, exc) from None
        else:
            try:
                module = hub.from_hub(source, lambda local: AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, local_files_only=local)).to(ref.device)
            except (OSError, ValueError) as exc:
                raise offline_weights_error(ref, source, exc) from None
    module.eval()
    n_params = sum(p.numel() for p in module.parameters())
    identity = checkpoint_identity(ref, "hf", getattr(module.config, "model_type", None))
    return HFModel(ref=ref, module=module, kernel=hf_kernel(ref, module), backend="hf", n_params=n_params,
                   **identity)


def hf_kernel(ref: ResolvedModel, module: Any) -> str:
    """Name the code path transformers will take for this model's sequence mixer."""
    if ref.spec.family == "transformer":
        return f"hf-{module.config._attn_implementation}"
    if ref.device == "cuda" and fused_mamba_kernels():
        return "hf-mamba_ssm-kernels"
    return "hf-torch"


def cache_argument(module: Any) -> str:
    params = inspect.signature(module.forward).parameters
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    raise RuntimeError(f"{type(module).__name__}.forward takes none of {CACHE_ARGUMENTS}")


@dataclass
class HFModel(LoadedModel):
    def decoder(self, batch: int, max_len: int, cuda_graphs: bool, static_cache: bool | None = None) -> Decoder:
        """`static_cache` defaults to `cuda_graphs`; tests set it alone to check the static path on CPU."""
        static = cuda_graphs if static_cache is None else static_cache
        return HFDecoder(self, batch, max_len, cuda_graphs, static)

    def library_generate(self, input_ids: Any, new_tokens: int, cuda_graphs: bool) -> Any:
        if cuda_graphs:
            raise ValueError("transformers.generate is timed eager only (its graph path needs torch.compile)")
        return self.module.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=0)[:, input_ids.shape[1]:]

    @property
    def library_generate_label(self) -> str:
        return "transformers.generate"


class HFDecoder(Decoder):
    def __init__(self, model: HFModel, batch: int, max_len: int, cuda_graphs: bool, static_cache: bool):
        super().__init__(batch, max_len, model.ref.device, cuda_graphs)
        if cuda_graphs and not static_cache:
            raise ValueError("CUDA-graph decoding needs the static cache")
        if static_cache and model.ref.spec.family != "transformer":
            raise ValueError("transformers' Mamba keeps a fixed-size state already; no static cache to choose")
        self.module = model.module
        self.static_cache = static_cache
        self._cache_arg = cache_argument(model.module)
        self._cache: Any = None

    def _new_cache(self) -> Any:
        from transformers import DynamicCache, StaticCache

        config = self.module.config
        if self.static_cache:
            return StaticCache(config=config, max_cache_len=self.max_len)
        return DynamicCache(config=config)

    def start(self) -> None:
        if self.static_cache and self._cache is not None:
            self._cache.reset()  # in place: a captured graph keeps pointing at the same buffers
        else:
            self._cache = self._new_cache()

    def _forward(self, input_ids: Any) -> Any:
        return self.module(input_ids=input_ids, use_cache=True, logits_to_keep=1,
                           **{self._cache_arg: self._cache}).logits[:, -1]

    def _prompt_logits(self, input_ids: Any) -> Any:
        if self._cache is None:
            self.start()
        return self._forward(input_ids)

    def _step(self) -> None:
        self._token.copy_(self._forward(self._token[:, None]).argmax(-1))
