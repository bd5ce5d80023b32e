"""The fused backend: mamba_ssm's MambaLMHeadModel (selective-scan CUDA kernel, causal-conv1d, Triton state
update) for Mamba and Mamba-2, on CUDA only.

Decode steps run through the model's own single-token path (`inference_params.seqlen_offset > 0`), which
updates the conv and SSM states in place, so the same step can be replayed from a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssmbench.errors import JobError
from ssmbench.models.base import Decoder, LoadedModel
from ssmbench.models.common import (
    check_local_checkpoint,
    checkpoint_identity,
    local_checkpoint_error,
    offline_weights_error,
    torch_dtype,
)
from ssmbench.zoo import ModelSpec, ResolvedModel


def mamba_ssm_config(spec: ModelSpec) -> Any:
    """The zoo's transformers-style config translated to mamba_ssm's MambaConfig."""
    from mamba_ssm.models.config_mamba import MambaConfig

    cfg = spec.config
    ssm_cfg: dict[str, Any] = {"d_state": cfg["state_size"], "d_conv": cfg["conv_kernel"], "expand": cfg["expand"]}
    if spec.arch == "mamba2":
        ssm_cfg.update(layer="Mamba2", headdim=cfg["head_dim"], ngroups=cfg["n_groups"], chunk_size=cfg["chunk_size"])
    # The zoo's vocab sizes are already padded (mamba: 50277 -> 50280, mamba2: -> 50288).
    return MambaConfig(d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"], vocab_size=cfg["vocab_size"],
                       ssm_cfg=ssm_cfg, rms_norm=True, residual_in_fp32=cfg.get("residual_in_fp32", True),
                       fused_add_norm=True, pad_vocab_size_multiple=8,
                       tie_embeddings=cfg.get("tie_word_embeddings", True))


def load_mamba_ssm(ref: ResolvedModel) -> MambaSSMModel:
    import torch
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    from ssmbench.models import hub

    dtype = torch_dtype(ref.dtype)
    if ref.weights == "random":
        torch.manual_seed(ref.seed)
        module = MambaLMHeadModel(mamba_ssm_config(ref.spec), device=ref.device, dtype=dtype)
    else:
        source = ref.mamba_ssm_source
        if source is None:
            why = (f"its checkpoint {ref.path or ref.hf_id!r} is in transformers' format, which mamba_ssm cannot "
                   "load; use `backend: hf` (it calls the fused kernels when they are installed)"
                   if ref.path or ref.hf_id else "no mamba_ssm checkpoint is known; give a local `path:`")
            raise JobError(f"model {ref.name!r}: {why}")
        if ref.path:
            check_local_checkpoint(ref, ref.path)
            try:
                module = MambaLMHeadModel.from_pretrained(ref.path, device=ref.device, dtype=dtype)
            except (OSError, ValueError, TypeError) as exc:  # TypeError: a config mamba_ssm cannot read
                raise local_checkpoint_error(ref, ref.path, exc) from None
        else:
            # mamba_ssm's from_pretrained takes no local_files_only: a cached repository is loaded from its
            # snapshot directory, which makes no request at all.
            def load(local: bool) -> Any:
                where = hub.snapshot_dir(source) if local else None
                return MambaLMHeadModel.from_pretrained(where or source, device=ref.device, dtype=dtype)

            try:
                module = hub.from_hub(source, load)
            except OSError as exc:
                raise offline_weights_error(ref, source, exc) from None
    module.eval()
    n_params = sum(p.numel() for p in module.parameters())
    return MambaSSMModel(ref=ref, module=module, kernel="mamba_ssm-cuda", backend="mamba_ssm", n_params=n_params,
                         **checkpoint_identity(ref, "mamba_ssm", ref.spec.arch))


@dataclass
class MambaSSMModel(LoadedModel):
    def decoder(self, batch: int, max_len: int, cuda_graphs: bool) -> Decoder:
        return MambaSSMDecoder(self, batch, max_len, cuda_graphs)

    def library_generate(self, input_ids: Any, new_tokens: int, cuda_graphs: bool) -> Any:
        length = input_ids.shape[1] + new_tokens
        return self.module.generate(input_ids, max_length=length, cg=cuda_graphs, top_k=1)[:, input_ids.shape[1]:]

    @property
    def library_generate_label(self) -> str:
        return "mamba_ssm.generate"


class MambaSSMDecoder(Decoder):
    def __init__(self, model: MambaSSMModel, batch: int, max_len: int, cuda_graphs: bool):
        from mamba_ssm.utils.generation import InferenceParams

        super().__init__(batch, max_len, model.ref.device, cuda_graphs)
        self.module = model.module
        self.params = InferenceParams(max_seqlen=max_len, max_batch_size=batch)
        # Allocated up front so a captured graph and the eager path share the same state buffers.
        self.params.key_value_memory_dict = model.module.allocate_inference_cache(
            batch, max_len, dtype=torch_dtype(model.ref.dtype))

    def start(self) -> None:
        # The prompt pass overwrites the conv and SSM states entirely; only the offset needs resetting.
        self.params.seqlen_offset = 0

    def _prompt_logits(self, input_ids: Any) -> Any:
        self.params.seqlen_offset = 0
        logits = self.module(input_ids, inference_params=self.params, num_last_tokens=1).logits[:, -1]
        self.params.seqlen_offset = input_ids.shape[1]
        return logits

    def _step(self) -> None:
        # seqlen_offset stays > 0 and is not advanced: Mamba's step does not read it (no positions).
        logits = self.module(self._token[:, None], inference_params=self.params, num_last_tokens=1).logits
        self._token.copy_(self.pick(logits[:, -1]))
