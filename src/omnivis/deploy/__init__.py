"""Deployment: graphs that take uint8 images, ONNX export with int8, and the onnxruntime backend."""
