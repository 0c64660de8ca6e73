"""Deployment: a checkpoint as one ONNX or TorchScript file, verified against pairlie's exact path.

May import :mod:`pairlie.io`, :mod:`pairlie.model` and :mod:`pairlie.infer`.
"""
