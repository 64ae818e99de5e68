"""Write the ONNX graphs the ONNX Runtime backend runs.

encoder.onnx:  image (1, 3, 1024, 1024) float32, normalised + padded  -> image_embeddings (1, 256, 64, 64)
decoder.onnx:  image_embeddings (1, 256, 64, 64), point_coords (B, N, 2) float32 in the 1024 frame,
               point_labels (B, N) float32 (1/0 points, 2/3 box corners, -1 padding),
               mask_input (B, 1, 256, 256) low-res logits, has_mask_input (B,) 0/1
               -> low_res_masks (B, 4, 256, 256), iou_predictions (B, 4)
B (prompts) and N (tokens) are dynamic. The decoder graph is the exact fast decoder (one embedding
shared by all B prompts, no per-prompt copy); upsampling to the image size stays outside the graph.
encoder_int8.onnx (optional, `quantize_encoder`): encoder.onnx with dynamic int8 MatMuls.

TensorRT. Opset 17: every LayerNorm, SAM's LayerNorm2d included, is one LayerNormalization node
(the encoder has no ReduceMean/Pow/Sqrt left). The encoder is fully static (1x3x1024x1024); its
only shape ops are the constant pads of TinyViT's windows. In the decoder, channel, head and
image-token sizes are frozen constants (runtime/fast_decoder.py), so the remaining int64 shape
arithmetic only reads B and N (37 Shape nodes, down from 117; 801 nodes, down from 1343).
Decoder optimisation profile: B in [1, 32] prompts (opt 32), N in [2, 16] tokens (opt 2); the
numbers and their reasons live in runtime/ort_providers.py (PROFILE_*), which hands them to
TensorRT. In trtexec syntax (image_embeddings is always 1x256x64x64):
  --minShapes=point_coords:1x2x2,point_labels:1x2,mask_input:1x1x256x256,has_mask_input:1
  --optShapes=point_coords:32x2x2,point_labels:32x2,mask_input:32x1x256x256,has_mask_input:32
  --maxShapes=point_coords:32x16x2,point_labels:32x16,mask_input:32x1x256x256,has_mask_input:32
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn

from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder
from mobilesam_ros.core.modeling.sam import Sam
from mobilesam_ros.core.runtime.onnx_backend import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUT, ENCODER_OUTPUT

OPSET = 17


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder over the unified token layout, all four mask tokens out.

    Every prompt takes the fast decoder's per-prompt path (a dense embedding is always given:
    the mask input or the no-mask embedding, chosen by has_mask_input), which reads only the raw
    image tokens. So `prepare`'s per-frame projections (k0, q0, v0, z) feed no output and the
    exporter drops them: the only per-frame work left in decoder.onnx is re-laying the embedding
    out (Gather/Flatten/Transpose, 4 MB), checked by test_ort_providers. Using the shared per-frame
    path in ONNX would need those tensors as graph inputs (a prepare graph): not done.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam
        self.fast = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        pe = self.sam.prompt_encoder
        sparse = pe.embed_tokens(point_coords, point_labels)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has * pe.embed_masks(mask_input) + (1 - has) * no_mask
        ctx = self.fast.prepare(image_embeddings)
        return self.fast.decode(ctx, sparse, dense, multimask=None)


def export_encoder(sam: Sam, path: str) -> str:
    x = torch.zeros(1, 3, 1024, 1024)
    _export(sam.image_encoder, (x,), path, [ENCODER_INPUT], [ENCODER_OUTPUT], None)
    return path


def export_decoder(sam: Sam, path: str) -> str:
    b, n = 2, 3
    args = (torch.zeros(1, 256, 64, 64), torch.rand(b, n, 2) * 1024,
            torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]]), torch.zeros(b, 1, 256, 256),
            torch.zeros(b))
    dyn = {"point_coords": {0: "prompts", 1: "tokens"}, "point_labels": {0: "prompts", 1: "tokens"},
           "mask_input": {0: "prompts"}, "has_mask_input": {0: "prompts"},
           "low_res_masks": {0: "prompts"}, "iou_predictions": {0: "prompts"}}
    _export(DecoderGraph(sam).eval(), args, path, list(DECODER_INPUTS), list(DECODER_OUTPUTS), dyn)
    return path


def quantize_encoder(fp32_path: str, out_path: str) -> str:
    """encoder.onnx -> an int8 copy (ONNX Runtime dynamic quantization), same input and output.

    Only MatMul/Gemm weights are quantized (int8, per output channel; activations are quantized
    per call from their own range): the 29 convolutions stay fp32, since ConvInteger has no fast
    CPU kernel in ONNX Runtime. Errors against fp32 and speed: README "int8 encoder".
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    quantize_dynamic(fp32_path, out_path, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                     weight_type=QuantType.QInt8)
    return out_path


def _export(module, args, path, inputs, outputs, dynamic_axes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints in shapes are expected
        # the TorchScript exporter: dynamic_axes, no onnxscript dependency
        torch.onnx.export(module.eval(), args, path, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)


# The golden tolerances (../shared/fixtures/README.md) an exported pair must meet against torch.
EXPORT_TOLERANCES = {"embedding": 1e-3, "low_res": 5e-3, "iou": 1e-3}


def check_export(sam: Sam, encoder_path: str, decoder_path: str) -> dict[str, float]:
    """Max abs differences between the ONNX graphs and the torch backend on a seeded random image
    with a box + point prompt and a point-only prompt batch."""
    from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    x = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
    tb, ob = TorchBackend(sam), OnnxBackend(encoder_path, decoder_path)
    ht, ho = tb.encode(x), ob.encode(x)
    coords = np.array([[[100, 200], [50, 60], [700, 800]], [[300, 300], [600, 400], [0, 0]]], np.float32)
    labels = np.array([[1, 2, 3], [1, 0, -1]], np.float32)
    lt, it = tb.decode(ht, coords, labels, None, True)
    lo, io = ob.decode(ho, coords, labels, None, True)
    return {"embedding": float(np.abs(tb.embedding(ht) - ob.embedding(ho)).max()),
            "low_res": float(np.abs(lt - lo).max()), "iou": float(np.abs(it - io).max())}


def export_matches(err: dict[str, float]) -> bool:
    """True when `check_export`'s differences are all within EXPORT_TOLERANCES (NaN fails)."""
    return all(err[k] <= tol for k, tol in EXPORT_TOLERANCES.items())
