"""OpenVINO's columns: pairlie's exported model on the CPU, in fp32 and in OpenVINO's default precision."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.column import GAMMA, OPENVINO, OPENVINO_DEFAULT, Column, column
from bench.runtimes import cpu_runtime, onnx_model


@column(OPENVINO, OPENVINO_DEFAULT)
class OpenVino(Column):
    """OpenVINO on the CPU, INFERENCE_NUM_THREADS = torch's threads, fp32, latency hint, on pairlie's exported model."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        ov = cpu_runtime(self.device, "openvino")
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        if self.kind == OPENVINO:
            config["INFERENCE_PRECISION_HINT"] = "f32"  # not bf16 where the CPU has it: the exact path's arithmetic
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pairlie.onnx"
            path.write_bytes(onnx_model())
            compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", config)
        self.request, self.output = compiled.create_infer_request(), compiled.outputs[0]
        # γ, having a default in the file, becomes a constant in OpenVINO's graph
        self.inputs = [port.get_any_name() for port in compiled.inputs]
        chosen = compiled.get_property("INFERENCE_PRECISION_HINT")  # what the default turned into on this CPU
        self.info.update(
            version=ov.__version__, inference_precision=str(chosen), **{k: str(v) for k, v in config.items()}
        )

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        feed = {"image": image[None].numpy()}
        if "gamma" in self.inputs:
            feed["gamma"] = np.array(GAMMA, dtype=np.float32)
        return torch.from_numpy(self.request.infer(feed)[self.output][0].copy())
