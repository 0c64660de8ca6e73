"""Inference: the Enhancer, and the paths that make it exact and fast (streamed rows, bands, tiles, bf16, int8, Winograd).

Also what a net is made of (its receptive field, the paper's structure) and enhancing folders.
May import `pairlie.io` and `pairlie.model`.
"""
