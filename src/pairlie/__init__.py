"""pairlie: PairLIE low-light image enhancement (Fu et al., CVPR 2023) with Lightning and Hydra."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:  # one home for the version: pyproject.toml, through the installed package's metadata
    __version__ = version("pairlie")
    """The installed pairlie's version, as pyproject.toml gives it (`"0+unknown"` for a source tree not installed)."""
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["Enhancer", "__version__"]

if TYPE_CHECKING:  # for type checkers and the API reference; at run time __getattr__ imports it on first use
    from pairlie.infer.enhancer import Enhancer

# dotted paths from before the sub-packages (pairlie.nets.PairLIENet in older checkpoints) keep working
from pairlie._aliases import install as _install_aliases  # noqa: E402

_install_aliases()

# the configs' ${pairlie.*} resolvers; cheap, and needed before Hydra reads pkg://pairlie.configs
from pairlie.train.resolvers import register as _register_resolvers  # noqa: E402

_register_resolvers()


def __getattr__(name: str):
    # Lazy, so that `import pairlie` stays cheap for the CLIs' config lookups.
    if name == "Enhancer":
        from pairlie.infer.enhancer import Enhancer

        return Enhancer
    raise AttributeError(f"module 'pairlie' has no attribute {name!r}")
