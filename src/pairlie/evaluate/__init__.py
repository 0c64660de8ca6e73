"""Scoring: the paper's PSNR/SSIM protocol, NIQE and LOE, collapsed outputs, pairlie-test's scoring and its report.

May import :mod:`pairlie.io`, :mod:`pairlie.data`, :mod:`pairlie.model` and :mod:`pairlie.infer`.
"""
