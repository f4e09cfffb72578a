"""Running an exported graph with onnxruntime, behind the same call as the torch graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnivis.errors import BundleError


class OnnxGraph:
    """An ``omnivis export`` file as a callable: uint8 (N, C, S, S) tensor -> tuple of output tensors.

    The file's input is checked against the bundle it serves (channels and size), so a file exported
    from another bundle fails with one line instead of a shape error from inside onnxruntime.
    """

    def __init__(self, path: str | Path, channels: int, size: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError(f"{self.path}: no ONNX file here; write one with `omnivis export BUNDLE`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise BundleError(f"{self.path}: not a readable ONNX model ({str(error).splitlines()[0][:200]})") from None
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or list(shape[1:]) != [channels, size, size]:
            raise BundleError(f"{self.path}: takes input {shape}, but the bundle needs (N, {channels}, {size}, {size}) "
                              "uint8 images; export this bundle again")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        array = np.ascontiguousarray(images.cpu().numpy().astype(np.uint8, copy=False))
        return tuple(torch.from_numpy(out) for out in self.session.run(self.output_names, {self.input_name: array}))
