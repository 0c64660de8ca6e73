"""The configs as pairlie knows them: composing a command line, its keys and comments, group options, help pages.

Read by the CLIs (checked before Hydra runs: a help page per CLI, one line for each mistake) and by
scripts/config_reference.py, which generates docs/configuration.md from the same knowledge.

Hydra reports a misspelled key, a missing plugin or a mandatory key left out with a stack trace or
a page of config paths, and it creates a run folder first. Here the overrides are composed once,
in memory, and any mistake becomes ``error: <key>: <what is wrong>; <the fix>`` with exit status 2.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pairlie.errors import ConfigError
from pairlie.errors import first_line as _first_line
from pairlie.trust import add_working_folder_for, targets, trusted_modules

CONFIG_MODULE = "pairlie.configs"
SWEEP_EXTRA = 'pip install "pairlie[sweep]"'
# Hydra's own flags; the ones in the second set take a value
HYDRA_FLAGS = {"--hydra-help", "--version", "--resolve", "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc"}
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
HYDRA_VALUE_FLAGS |= {"--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


@dataclass
class CliSpec:
    """What a CLI's help page says: its purpose, usage, examples and the keys it reads."""

    name: str
    config_name: str
    summary: str
    usage: str
    examples: list[str]
    groups: list[str] = field(default_factory=list)
    # (config file, key prefix[, only these keys]) whose keys and comments the help lists, in this order
    key_files: list[tuple] = field(default_factory=list)
    extra_keys: list[str] = field(default_factory=list)
    # builds what the composed config names (a _target_ that does not import or fit: one line, before any run folder)
    check_parts: Callable[[DictConfig], None] | None = None


def config_dirs(argv: list[str]) -> list[str]:
    """The folders given with ``--config-dir``/``-cd`` (Hydra adds them to the config search path), as absolute paths."""
    found = []
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            found.append(os.path.abspath(os.path.expanduser(value)))
    return found


def split_args(argv: list[str], spec: CliSpec) -> list[str]:
    """The overrides in ``argv``; an option pairlie does not take, or a bare word, is a one-line error."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in HYDRA_FLAGS or (flag in HYDRA_VALUE_FLAGS and "=" in arg):
            continue
        if flag in HYDRA_VALUE_FLAGS:
            skip = True
            continue
        if arg.startswith("-"):
            key = arg.lstrip("-").split("=", 1)[0].replace("-", "_") or "KEY"
            raise ConfigError(
                f"{arg}: {spec.name} takes key=value overrides, not --options: write {key}=VALUE "
                f"(see {spec.name} --help)"
            )
        if "=" not in arg and not arg.startswith("~"):
            if arg.lower().endswith((".ckpt", ".pth", ".pt")):
                hint = f"ckpt_path={arg}"
            else:
                hint = f"input={arg}" if "input" in _own_keys(spec) else f"KEY={arg}"
            raise ConfigError(f"{arg}: {spec.name} takes key=value overrides: write {hint} (see {spec.name} --help)")
        overrides.append(arg)
    return overrides


def _own_keys(spec: CliSpec) -> set[str]:
    return {key for file, prefix, *_ in spec.key_files for key in yaml_comments(file, prefix)}


def check(argv: list[str], spec: CliSpec) -> DictConfig:
    """Raise a one-line `ConfigError` for any mistake in ``argv``; print the help page for ``--help``.

    Returns the config composed from ``argv`` (a sweep's first values), unresolved.
    """
    if "--help" in argv or "-h" in argv:
        print(help_page(spec))
        sys.exit(0)
    overrides = split_args(argv, spec)
    _config_dirs[:] = config_dirs(argv)
    for folder in config_dirs(argv):
        if not os.path.isdir(folder):
            raise ConfigError(f"--config-dir {folder}: no such folder; give the folder that holds your config groups")
    if config_dirs(argv):  # what Hydra does with --config-dir, for the composition checked here
        overrides = ["hydra.searchpath=[" + ",".join(f"'file://{d}'" for d in config_dirs(argv)) + "]", *overrides]
    parser, parsed = OverridesParser.create(), []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except HydraException as exc:
            raise ConfigError(
                f"{override}: cannot parse ({_first_line(exc)}); quote values with brackets or commas"
            ) from None
    plain, swept = [], []
    for override in parsed:
        if not override.is_sweep_override():
            plain.append(override.input_line)
            continue
        swept.append(override)
        try:  # compose with the sweep's first value; an interval (Optuna) is checked by its key alone
            plain.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        except Exception:
            pass
    cfg = _compose(spec, plain)
    # modules of one's own that the config or trust= names, found in the working folder (after installed packages)
    add_working_folder_for([*targets(cfg), *trusted_modules(OmegaConf.select(cfg, "trust", default=None))])
    for override in swept:
        key = override.key_or_group
        if (
            not override.is_add()
            and not override.is_force_add()
            and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING
        ):
            raise ConfigError(_unknown_key(key, cfg, spec))
    missing = [key for key in _missing_keys(cfg) if not key.startswith("hydra.")]
    if missing:
        given = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{', '.join(missing)}: required; usage: {spec.usage} (missing: {given})")
    if spec.check_parts is not None:
        spec.check_parts(cfg)
    return cfg


_MISSING = object()
_config_dirs: list[str] = []  # the command line's --config-dir folders, for "no such choice" messages


def _missing_keys(cfg: DictConfig) -> list[str]:
    """Keys whose value is ``???`` (not resolving anything: Hydra's runtime values are not set yet)."""
    return [key for key in leaf_keys(cfg) if _node(cfg, key)._is_missing()]


def _node(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node._get_node(part)
    return node


def _compose(spec: CliSpec, overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=spec.config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as exc:
        raise ConfigError(_missing_config(exc, spec)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        text = str(exc)
        match = re.search(r"Could not (?:override|append to config|delete from config)\. '?([\w./@-]+)", text)
        match = match or re.search(r"Could not override '([^']+)'", text)
        if match:
            key = match.group(1)
            rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
            try:
                with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
                    base = compose(config_name=spec.config_name, overrides=rest, return_hydra_config=True)
            except Exception:
                base = None
            if base is not None:
                raise ConfigError(_unknown_key(key, base, spec)) from None
        raise ConfigError(f"{_first_line(exc)} (see {spec.name} --help)") from None


def _missing_config(exc: MissingConfigException, spec: CliSpec) -> str:
    text = str(exc)
    if re.search(r"hydra/(sweeper/optuna|launcher/(submitit|slurm))", text):
        plugin = "the Optuna sweeper" if "optuna" in text else "the submitit launcher"
        return f"{plugin} is not installed: {SWEEP_EXTRA} (for hparams_search=..., hydra/launcher=slurm|submitit_local)"
    match = re.search(r"Could not find '([\w/]+)/([^'/]+)'", text)
    if match:
        group, choice = match.groups()
        options = group_options(group, _config_dirs)
        if options:
            close = [o for o in options if o.lower() == choice.lower()] or difflib.get_close_matches(
                choice, options, n=1
            )
            hint = f"did you mean {group}={close[0]}? " if close else ""
            return f"{group}={choice}: no such choice; {hint}choose one of {', '.join(options)}"
    return f"{_first_line(exc)} (see {spec.name} --help)"


def _unknown_key(key: str, cfg: DictConfig, spec: CliSpec) -> str:
    """``<key>: no such key; did you mean <close match>?`` (never a ``+`` for a key that cannot exist)."""
    known = sorted(leaf_keys(cfg, include_hydra=key.startswith("hydra.")))
    parent, _, name = key.rpartition(".")
    target = OmegaConf.select(cfg, f"{parent}._target_", default=None) if parent else None
    arguments = _arguments(target) if isinstance(target, str) else []
    if name in arguments:
        # any argument of the class a node instantiates is a valid key there, not only the preset's
        kind = target.rsplit(".", 1)[-1]
        return f"{key}: not in the preset; add it with +{key}=VALUE (an argument of {kind})"
    known = sorted(set(known) | {f"{parent}.{a}" for a in arguments})
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    # a key given without its group (gamma for model.gamma)
    close = close or sorted((k for k in known if k.endswith(f".{key}")), key=lambda k: not k.startswith("model."))[:1]
    if close:
        return f"{key}: no such key; did you mean {close[0]}?"
    return f"{key}: no such key in {spec.name}'s config; see {spec.name} --help for the keys it takes"


def _arguments(target: str) -> list[str]:
    """The keyword arguments of the class or function a config node's ``_target_`` names."""
    try:
        from hydra.utils import get_object

        obj = get_object(target)
        signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.name != "self" and p.kind in kinds]


def leaf_keys(cfg: DictConfig, prefix: str = "", include_hydra: bool = False) -> Iterable[str]:
    """Dotted paths of every leaf of ``cfg`` (values not resolved)."""
    for key in cfg.keys():
        if not include_hydra and not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        node = cfg._get_node(key)
        if (
            isinstance(node, DictConfig)
            and not node._is_none()
            and not node._is_missing()
            and not node._is_interpolation()
        ):
            yield from leaf_keys(node, f"{path}.", include_hydra)
        else:
            yield path


def group_options(group: str, extra_dirs: Iterable[str] = ()) -> list[str]:
    """The config files of a group (``data`` -> default, demo, lol, sice), with those in ``extra_dirs`` (``--config-dir``)."""
    found = set()
    try:
        folder = resources.files(CONFIG_MODULE).joinpath(group)
        found |= {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")}
    except (FileNotFoundError, NotADirectoryError):
        pass
    for extra in extra_dirs:
        folder = os.path.join(extra, group)
        if os.path.isdir(folder):
            found |= {name[:-5] for name in os.listdir(folder) if name.endswith(".yaml")}
    return sorted(found)


def yaml_comments(file: str, prefix: str = "") -> dict[str, tuple[str, str]]:
    """``{dotted key: (default, comment)}`` of a config file's own keys, read from its text.

    The comment is the one at the end of the key's line, else the comment lines just above it.
    """
    text = resources.files(CONFIG_MODULE).joinpath(file).read_text()
    found, stack, above = {}, [], []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            above.append(line.strip().lstrip("#").strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z_]\w*):(?:\s+(.*?))?\s*$", line.split(" #")[0].rstrip())
        comment = line.split(" #", 1)[1].strip() if " #" in line else " ".join(above)
        above = []
        if not match or match.group(2) in (
            "defaults",
            "hydra",
            "_target_",
            "_convert_",
            "_recursive_",
            "_partial_",
            "task_name",
        ):
            if match and not match.group(1):
                stack = [(0, None)]  # a skipped top-level block hides its children
            continue
        indent, key, value = len(match.group(1)), match.group(2), match.group(3) or ""
        stack = [(i, k) for i, k in stack if i < indent]
        if any(k is None for _, k in stack):
            continue
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if value:
            found[f"{prefix}{path}"] = (value, comment)
    return found


def _shown(value) -> str:
    """A config value as a command line would write it (``null``, ``true``, ``[0.9,0.999]``)."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def help_page(spec: CliSpec) -> str:
    lines = [f"{spec.name}: {spec.summary}", "", f"usage: {spec.usage}", "", "examples:"]
    lines += [f"  {example}" for example in spec.examples]
    if spec.groups:
        lines += ["", "config groups (group=choice):"]
        for group in spec.groups:
            lines.append(f"  {group:<15} {' | '.join(group_options(group))}")
    lines += ["", "keys (key=value; the values a bare run uses):"]
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=spec.config_name)
    except Exception:
        cfg = None
    for file, prefix, *only in spec.key_files:
        for key, (value, comment) in yaml_comments(file, prefix).items():
            if only and key not in only[0]:
                continue
            if value == "???":
                value = "(required)"
            elif cfg is not None:  # what a bare run uses: presets such as the demo's schedule included
                try:
                    value = _shown(OmegaConf.select(cfg, key, default=value, throw_on_resolution_failure=True))
                except Exception:
                    pass
            lines.append(f"  {key}={value}".ljust(36) + (f"  {comment}" if comment else ""))
    for key in spec.extra_keys:
        lines.append(f"  {key}")
    lines.append("")
    if spec.config_name in ("train", "test"):  # the commands that write run folders
        lines.append(
            "A multirun sweeps comma-separated values: -m key=a,b. Paths: see paths.log_dir (PAIRLIE_LOG_DIR)."
        )
    lines.append(
        "--cfg job prints the composed config; --hydra-help is Hydra's own help. Docs: README.md and docs/ (the site)."
    )
    return "\n".join(lines)
