"""Deployment: a checkpoint as one ONNX or TorchScript file, verified against pairlie's exact path.

May import `pairlie.io`, `pairlie.model` and `pairlie.infer`.
"""
