"""Scoring: the paper's PSNR/SSIM protocol, NIQE and LOE, collapsed outputs, pairlie-test's scoring and its report.

May import `pairlie.io`, `pairlie.data`, `pairlie.model` and `pairlie.infer`.
"""
