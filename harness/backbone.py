"""The shared decoder backbone under the import path plugins use (`from harness.backbone import
DecoderLM`); it is defined in harness.model.backbone."""

from harness.model.backbone import (
    Block,
    DecoderLM,
    RMSNorm,
    SwiGLU,
    count_params,
    sample,
)

__all__ = ["Block", "DecoderLM", "RMSNorm", "SwiGLU", "count_params", "sample"]
