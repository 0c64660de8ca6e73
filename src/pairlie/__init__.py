"""pairlie: PairLIE low-light image enhancement (Fu et al., CVPR 2023) with Lightning and Hydra."""

__version__ = "0.1.0"

__all__ = ["Enhancer", "__version__"]

# the configs' ${pairlie.*} resolvers; cheap, and needed before Hydra reads pkg://pairlie.configs
from pairlie.resolvers import register as _register_resolvers  # noqa: E402

_register_resolvers()


def __getattr__(name: str):
    # Lazy, so that `import pairlie` stays cheap for the CLIs' config lookups.
    if name == "Enhancer":
        from pairlie.inference import Enhancer

        return Enhancer
    raise AttributeError(f"module 'pairlie' has no attribute {name!r}")
