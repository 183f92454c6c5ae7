"""Inference engines: a module `module(x, observed)` (a tuple of tensors) run for fixed weights.

params.yaml `inference` picks one (bench/inference_engines.py measured them on 2 cores):
* `torchscript` (default): trace + freeze, bit-identical to eager;
* `inductor`: torch.compile for one fixed batch, within ENGINE_TOLERANCE of eager;
* `onnxruntime` (opt-in, CPU, float32): within ENGINE_TOLERANCE; needs onnxruntime, onnx, onnxscript;
* `eager`: plain PyTorch;
and `bf16`: any torch engine under bfloat16 autocast, within BF16_TOLERANCE.
No fallback: an unavailable engine is an error. An engine is for inference only: training (and
anything else that changes the weights) runs the eager model and refuses one run by an engine
(`require_eager`). The model (lib.model.ttm) hands its backbone to `freeze_backbone`.
"""
import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from lib.core.errors import PipelineError
from lib.core.params import INFERENCE_ENGINES, TTM_CONTEXT

# Windows per backbone call at inference: small batches stay in the CPU's caches (bench/RESULTS.md:
# 64 runs ~20 % faster than 512 on 2 cores); the HDF5 reads stay large.
BACKBONE_BATCH = 64
EAGER = "eager"
ENGINES = INFERENCE_ENGINES
# onnxruntime's largest |difference| from eager measured on real and random windows (bench/inference_engines.py,
# tests/test_inference_engine.py): ~4e-5 on the last hidden state, well below what any metric resolves.
ENGINE_TOLERANCE = 1e-3
# bfloat16 keeps 8 bits of mantissa: measured |difference| from float32 up to ~0.04 on embeddings and
# logits (bench/inference_engines.py), the val AUROC unchanged to 4 decimals; tests bound it by this.
BF16_TOLERANCE = 0.1


class BackboneOutputs(nn.Module):
    """The backbone's outputs the model uses, as a tuple (what TorchScript tracing needs)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, observed: torch.Tensor):
        out = self.backbone(past_values=x, past_observed_mask=observed)
        return out.last_hidden_state, out.loc, out.scale


@torch.no_grad()
def torchscript_freeze(module: nn.Module, example: torch.Tensor):
    """TorchScript trace + freeze of `module(x, observed)` (constants folded, ops fused), traced on
    `example` and an all-observed mask: bit-identical to eager. Used for the model's backbone and for
    the MAP forecaster (`lib.model.forecast.freeze_forecaster`)."""
    with warnings.catch_warnings():
        # TTM's shape checks and constant clamps trace as constants: right for fixed 512-sample inputs.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)   # torch 2.x: jit.trace/freeze are deprecated
        traced = torch.jit.trace(module, (example, torch.ones_like(example, dtype=torch.bool)), check_trace=False)
        return torch.jit.freeze(traced)


class CompiledModule:
    """`torch.compile` (Inductor) of `module(x, observed)` for one fixed batch size: Inductor fuses
    TTM's elementwise ops, norms and layout copies (three quarters of its CPU time; the matmuls are
    the rest) into generated kernels. A shorter batch is zero-padded to that size, so one compiled
    graph serves every call; outputs are within ENGINE_TOLERANCE of eager."""

    def __init__(self, module: nn.Module, example: torch.Tensor):
        self.batch = len(example)
        self.compiled = torch.compile(module, dynamic=False)
        with torch.no_grad():   # compile now, with the mask's dtype as fit_context gives it
            self.compiled(example, torch.ones_like(example))

    def __call__(self, x: torch.Tensor, observed: torch.Tensor):
        parts = []
        for start in range(0, len(x), self.batch):
            xb, ob = x[start:start + self.batch], observed[start:start + self.batch].to(x.dtype)
            n = len(xb)
            if n < self.batch:
                xb = torch.cat([xb, xb.new_zeros(self.batch - n, *xb.shape[1:])])
                ob = torch.cat([ob, ob.new_ones(self.batch - n, *ob.shape[1:])])
            parts.append(tuple(t[:n] for t in self.compiled(xb, ob)))
        return parts[0] if len(parts) == 1 else tuple(torch.cat(t) for t in zip(*parts))


class Bfloat16(nn.Module):
    """`module(x, observed)` under bfloat16 autocast (inference.bf16), outputs back in float32."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, observed: torch.Tensor):
        # cache_enabled=False: a traced graph must not keep autocast's cached weight casts
        with torch.autocast(x.device.type, dtype=torch.bfloat16, cache_enabled=False):
            out = self.module(x, observed)
        return tuple(t.float() for t in out)


def freeze(module: nn.Module, example: torch.Tensor, engine: str = "torchscript", bf16: bool = False):
    """`module(x, observed)` (a tuple of tensors) made ready for inference with fixed weights by
    `engine` (ENGINES), in float32 or under bfloat16 autocast: a callable of (x, observed)."""
    if engine not in ENGINES:
        raise PipelineError(f"inference engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if bf16 and engine == "onnxruntime":
        raise PipelineError("inference engine onnxruntime runs float32 only: set inference.bf16=false")
    module = (Bfloat16(module) if bf16 else module).eval()
    if engine == "eager":
        return module
    return {"torchscript": torchscript_freeze, "inductor": CompiledModule, "onnxruntime": OnnxModule}[engine](
        module, example)


class OnnxModule:
    """The backbone exported to ONNX (torch.export, any batch size) and run by ONNX Runtime on CPU.

    The legacy TorchScript-based exporter bakes the example's batch size into TTM's reshapes (the
    model then fails on other batches), hence the dynamo exporter with a dynamic batch dimension."""

    def __init__(self, module: nn.Module, example: torch.Tensor):
        try:
            import onnxruntime
        except ImportError as err:
            raise PipelineError("inference engine onnxruntime: not installed (it is opt-in, not in requirements.txt: "
                                "pip install onnxruntime onnx onnxscript)") from err
        if example.device.type != "cpu":
            raise PipelineError(f"inference engine onnxruntime: CPU only, not {example.device} (use torchscript)")
        batch = torch.export.Dim("batch", min=1)
        disabled = logging.root.manager.disable
        logging.disable(logging.INFO)   # the exporter's optimiser logs each pass at INFO
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # observed as fit_context gives it: float
            program = torch.onnx.export(module, (example, torch.ones_like(example)), dynamo=True,
                                        input_names=["x", "observed"], dynamic_shapes=({0: batch}, {0: batch}),
                                        verbose=False)
        logging.disable(disabled)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, observed: torch.Tensor):
        outputs = self.session.run(None, {"x": x.contiguous().numpy(), "observed": observed.contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)


def freeze_backbone(backbone: nn.Module, n_inputs: int, device, engine: str = "torchscript", bf16: bool = False):
    """A TTM backbone (`past_values`, `past_observed_mask`) → (last hidden state, loc, scale), run by
    `engine` (in float32 or under bfloat16 autocast) for fixed weights; None for plain eager float32
    (the model then calls its backbone itself). Traced on BACKBONE_BATCH random windows of
    `n_inputs` series."""
    if engine == EAGER and not bf16:
        return None
    example = torch.randn(BACKBONE_BATCH, TTM_CONTEXT, n_inputs, device=device)
    return freeze(BackboneOutputs(backbone), example, engine, bf16)


def engine_label(engine: str, bf16: bool) -> str:
    """How a frozen model is run, as `engine_of` reports it: e.g. torchscript, eager+bf16."""
    return f"{engine}+bf16" if bf16 else engine


def call_batch(frozen, n: int) -> int:
    """Windows per backbone call at inference: torch engines run best on small batches, ONNX Runtime
    on large ones (bench/inference_engines.py)."""
    return n if isinstance(frozen, OnnxModule) else BACKBONE_BATCH


def engine_of(model) -> str:
    """The engine that runs `model`: torchscript for a TorchScript module, inductor for a
    torch.compile'd one, what `freeze_for_inference` set on the project's model, else eager."""
    if isinstance(model, torch.jit.ScriptModule):
        return "torchscript"
    if type(model).__name__ == "OptimizedModule":   # torch.compile(module)
        return "inductor"
    return getattr(model, "inference_engine", EAGER)


def require_eager(model, who: str = "train") -> None:
    """Refuse, with one line, a model that an inference engine runs: gradients and changed weights
    need the eager model (an engine runs a traced, frozen or compiled copy of fixed weights)."""
    engine = engine_of(model)
    if engine != EAGER:
        raise PipelineError(f"{who}: the model is run by the inference engine {engine} (freeze_for_inference / "
                            "load_checkpoint); training needs the eager model: build it with lib.model.ttm.build_model")
