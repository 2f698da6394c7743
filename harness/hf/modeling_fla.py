"""The model classes of a `harness export` folder of an fla-backed model (gla, retnet, hgrn2, deltanet,
gated_deltanet): fla's own, imported from flash-linear-attention. config.json's auto_map names this file,
so that `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` (and lm-eval's hf model)
imports fla, which registers its model types with transformers; nothing of swat-harness is needed."""

try:  # guarded: transformers' own check of a remote file's imports would say `pip install fla`
    from fla.models import (
        DeltaNetConfig,
        DeltaNetForCausalLM,
        GatedDeltaNetConfig,
        GatedDeltaNetForCausalLM,
        GLAConfig,
        GLAForCausalLM,
        HGRN2Config,
        HGRN2ForCausalLM,
        RetNetConfig,
        RetNetForCausalLM,
    )
except ImportError as err:
    raise ImportError(f"this model is flash-linear-attention's (fla) and needs it installed: pip install "
                      f"flash-linear-attention (or pip install 'swat-harness[fla]'); its layers run on a CUDA GPU "
                      f"({err})") from None

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "GatedDeltaNetConfig", "GatedDeltaNetForCausalLM", "GLAConfig",
           "GLAForCausalLM", "HGRN2Config", "HGRN2ForCausalLM", "RetNetConfig", "RetNetForCausalLM"]
