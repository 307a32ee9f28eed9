"""TensorRT engines (installed as sparkle_fast.engines): ONNX export, engine build and a runtime that drops in for
the PyTorch module it replaces. Empty until the first engine lands (the distilled I2V and SAM3 issues)."""
