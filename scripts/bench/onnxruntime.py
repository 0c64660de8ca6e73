"""ONNX Runtime's columns: pairlie's exported model on the CPU execution provider, in fp32 and as static QDQ int8."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.column import GAMMA, ORT, ORT_INT8, Column, calibration_images, column
from bench.runtimes import cpu_runtime, onnx_model

LAST_BLOCK = ("layers.12", "layers.13", "layers.14")  # the official nets' last [pad, conv, sigmoid]


def qdq_model(data: Path) -> bytes:
    """pairlie's exported model with ONNX Runtime's static QDQ int8 quantisation of the layers pairlie's int8 runs
    in int8 (N's and L's ReLU layers; R and the last layers stay fp32), MinMax-calibrated on 256x256 crops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from pairlie.io.images import load_image

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            crops = [load_image(path)[None, :, :256, :256].numpy() for path in calibration_images(data)]
            self.feeds = iter({"image": crop} for crop in crops)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(onnx_model())
        import onnx

        nodes = [node.name for node in onnx.load(source).graph.node]
        # /net/<part>/layers/layers.<i>/<op>: the official net's last block is layers 12-14
        in_int8 = [n.split("/")[2:5:2] for n in nodes]
        float_nodes = [
            n
            for n, where in zip(nodes, in_int8, strict=True)
            if len(where) < 2 or where[0] not in ("denoiser", "illumination") or where[1] in LAST_BLOCK
        ]
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes,
        )  # fmt: skip
        return target.read_bytes()


@column(ORT, ORT_INT8)
class OnnxRuntime(Column):
    """ONNX Runtime, CPU execution provider, intra-op threads = torch's threads, on pairlie's exported model.

    ``onnxruntime_int8``: on its static QDQ int8 quantisation (:func:`qdq_model`).
    """

    def __init__(self, *args) -> None:
        super().__init__(*args)
        ort = cpu_runtime(self.device, "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # not the note that gamma, having a default, can be overridden
        model = qdq_model(self.data_dir) if self.kind == ORT_INT8 else onnx_model()
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.info.update(version=ort.__version__, intra_op_num_threads=options.intra_op_num_threads)

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        feed = {"image": image[None].numpy()}
        if "gamma" in self.inputs:
            feed["gamma"] = np.array(GAMMA, dtype=np.float32)
        return torch.from_numpy(self.session.run(None, feed)[0][0])
