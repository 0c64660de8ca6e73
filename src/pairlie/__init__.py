"""pairlie: PairLIE low-light image enhancement (Fu et al., CVPR 2023) with Lightning and Hydra."""

__version__ = "0.1.0"
