"""The transformers backend: GPT-2, Pythia (GPT-NeoX), OPT, GPT-Neo, GPT-J, RWKV-4 and transformers' own Mamba
and Mamba-2.

Eager decoding uses transformers' default dynamic cache. With CUDA graphs, Transformers decode into a
static KV cache (fixed addresses, positions kept on the device) and ssmbench captures the step; this is the
fair counterpart of mamba_ssm's graph decoding that the Mamba paper's baseline lacked. RWKV takes no cache
object but a list of state tensors (`state`): it has a decoder of its own (RwkvDecoder), which holds that
state at fixed addresses, with or without CUDA graphs.

transformers renamed the cache argument across 5.x (`past_key_values`/`cache_params` became `cache`), so the
name is read off each model's forward signature rather than assumed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ssmbench.errors import JobError
from ssmbench.models.base import Decoder, LoadedModel, NoGraphDecoding
from ssmbench.models.common import (
    build_config,
    check_local_checkpoint,
    checkpoint_identity,
    local_checkpoint_error,
    offline_weights_error,
    silence_mamba_fallback,
    silence_trust_checks,
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

    silence_trust_checks()
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
                module = AutoModelForCausalLM.from_pretrained(
                    ref.path, dtype=dtype, trust_remote_code=ref.trust_remote_code).to(ref.device)
            except (OSError, ValueError) as exc:  # ValueError: a config.json transformers cannot use
                raise local_checkpoint_error(ref, ref.path, exc) from None
        else:
            try:
                module = hub.from_hub(source, lambda local: AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, local_files_only=local, revision=ref.revision,
                    trust_remote_code=ref.trust_remote_code), revision=ref.revision).to(ref.device)
            except (OSError, ValueError) as exc:
                raise offline_weights_error(ref, source, exc) from None
    module.eval()
    n_params = sum(p.numel() for p in module.parameters())
    identity = checkpoint_identity(ref, "hf", getattr(module.config, "model_type", None))
    kernel = hf_kernel(ref, module)
    if runs_mamba_in_torch(kernel) and ref.spec.family in ("ssm", "hybrid"):
        silence_mamba_fallback()
    return HFModel(ref=ref, module=module, kernel=kernel, backend="hf", n_params=n_params, **identity)


def hf_kernel(ref: ResolvedModel, module: Any) -> str:
    """Name the code path transformers will take for this model's sequence mixer (a hybrid's two mixers: its
    attention's, then its Mamba's, joined with '+', e.g. hf-sdpa+mamba_ssm-kernels)."""
    attention = f"hf-{module.config._attn_implementation}"
    if ref.spec.family == "transformer":
        return attention
    if ref.spec.arch == "rwkv":
        return "hf-rwkv-wkv-cuda" if ref.device == "cuda" and rwkv_wkv_kernel_loaded() else "hf-torch"
    mamba = "mamba_ssm-kernels" if ref.device == "cuda" and fused_mamba_kernels() else "torch"
    return f"{attention}+{mamba}" if ref.spec.family == "hybrid" else f"hf-{mamba}"


def runs_mamba_in_torch(kernel: str) -> bool:
    """Whether a kernel label says transformers' Mamba (alone or in a hybrid) takes its PyTorch path."""
    return kernel == "hf-torch" or kernel.endswith("+torch")


def rwkv_wkv_kernel_loaded() -> bool:
    """Whether transformers loaded its WKV CUDA kernel for RWKV (from the hub's `kernels`, when it can): the
    prompt pass then runs in it; single-token decode steps take the PyTorch path either way."""
    from transformers.models.rwkv import modeling_rwkv

    return getattr(modeling_rwkv, "rwkv_cuda_kernel", None) is not None


def cache_argument(module: Any) -> str:
    params = inspect.signature(module.forward).parameters
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    raise RuntimeError(f"{type(module).__name__}.forward takes none of {CACHE_ARGUMENTS}")


@dataclass
class HFModel(LoadedModel):
    @property
    def graph_decoding(self) -> bool:
        return self.ref.spec.family != "hybrid"  # HybridDecoder says why

    def decoder(self, batch: int, max_len: int, cuda_graphs: bool, static_cache: bool | None = None) -> Decoder:
        """`static_cache` defaults to `cuda_graphs`; tests set it alone to check the static path on CPU. RWKV's
        state is fixed in size and address already: there is no static cache to ask it for."""
        if self.ref.spec.arch == "rwkv":
            if static_cache:
                raise ValueError("RWKV keeps a fixed-size recurrent state at fixed addresses; no static cache to "
                                 "choose")
            return RwkvDecoder(self, batch, max_len, cuda_graphs)
        if self.ref.spec.family == "hybrid":
            return HybridDecoder(self, batch, max_len, cuda_graphs, bool(static_cache))
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
        self._token.copy_(self.pick(self._forward(self._token[:, None])))


class RwkvDecoder(Decoder):
    """RWKV-4 through transformers' RwkvForCausalLM, its recurrent state held by the decoder.

    RwkvForCausalLM takes `state` (five tensors [batch, hidden_size, layers]: the feed-forward and time-mixing
    token shifts in the model's dtype, the WKV numerator, denominator and maximum in float32) rather than a
    cache object, and writes every layer's new state into those tensors in place. Allocated once here, as
    RwkvModel itself would allocate them, they keep their addresses from step to step, so a CUDA graph of the
    step stays valid: the counterpart of the Transformers' static KV cache.

    The prompt runs in chunks of at most `context_length` tokens, the longest single pass transformers' WKV
    CUDA kernel accepts; the state carries across chunks, so this equals one pass over the whole prompt.
    """

    def __init__(self, model: HFModel, batch: int, max_len: int, cuda_graphs: bool):
        super().__init__(batch, max_len, model.ref.device, cuda_graphs)
        self.module = model.module
        if "state" not in inspect.signature(model.module.forward).parameters:
            raise ValueError(f"{type(model.module).__name__}.forward takes no `state`: not transformers' RWKV-4")
        self._chunk = int(self.module.config.context_length)
        self._state: list[Any] | None = None

    def _new_state(self) -> list[Any]:
        import torch

        config = self.module.config
        shape = (self.batch, config.hidden_size, config.num_hidden_layers)
        dtype = self.module.get_input_embeddings().weight.dtype
        return [torch.empty(shape, dtype=dtype if i <= 1 else torch.float32, device=self.device) for i in range(5)]

    def start(self) -> None:
        if self._state is None:
            self._state = self._new_state()
        for tensor in self._state[:4]:  # in place: a captured graph keeps pointing at the same buffers
            tensor.zero_()
        self._state[4].fill_(-1e30)  # the running maximum starts below any key, as RwkvModel starts it

    def _forward(self, input_ids: Any) -> Any:
        out = self.module(input_ids=input_ids, state=self._state, use_cache=True, logits_to_keep=1)
        if out.state is not None and any(new is not ours for new, ours in zip(out.state, self._state, strict=True)):
            for ours, new in zip(self._state, out.state, strict=True):  # a version that returns new tensors
                ours.copy_(new)
        return out.logits[:, -1]

    def _prompt_logits(self, input_ids: Any) -> Any:
        if self._state is None:
            self.start()
        logits = None
        for begin in range(0, input_ids.shape[1], self._chunk):
            logits = self._forward(input_ids[:, begin:begin + self._chunk])
        return logits

    def _step(self) -> None:
        self._token.copy_(self.pick(self._forward(self._token[:, None])))


class HybridDecoder(HFDecoder):
    """A hybrid's cache holds attention's keys and values and Mamba's states, in a class that transformers
    has changed across releases (a model-specific hybrid cache, then DynamicCache with per-layer types): the
    model builds its own on the prompt pass and the decoder keeps what it returns. transformers has no
    static form of it, so there is no graph-captured decoding either, and the error says so."""

    def __init__(self, model: HFModel, batch: int, max_len: int, cuda_graphs: bool, static_cache: bool):
        if static_cache or (cuda_graphs and model.ref.device == "cuda"):  # on the CPU the base refuses graphs
            raise NoGraphDecoding(f"{type(model.module).__name__} has no static cache in transformers (its Mamba "
                                  "state and KV cache live in one dynamic cache): hybrids decode eagerly only")
        super().__init__(model, batch, max_len, cuda_graphs, static_cache)

    def start(self) -> None:
        self._cache = None

    def _forward(self, input_ids: Any) -> Any:
        passed = {self._cache_arg: self._cache} if self._cache is not None else {}
        out = self.module(input_ids=input_ids, use_cache=True, logits_to_keep=1, **passed)
        returned = (getattr(out, name, None) for name in (*CACHE_ARGUMENTS, "past_key_values"))
        self._cache = next((cache for cache in returned if cache is not None), None)
        if self._cache is None:  # transformers 4.x hybrids returned none unless handed their own cache class
            raise RuntimeError(f"{type(self.module).__name__} returned no cache with use_cache=True; this "
                               "transformers version needs its own hybrid cache class (transformers >= 5 builds one)")
        return out.logits[:, -1]
