"""The reference pages can be trusted: every public name on the API page with its signature and its
arguments documented, no raw Sphinx role anywhere, no link to nothing; every option of every config
group, with every key it sets, on the configuration page.
"""

from __future__ import annotations

import ast
import html
import importlib
import importlib.util
import inspect
import re
from importlib import resources

import pytest
import yaml

import pairlie
from helpers import REPO
from pairlie.infer.enhancer import Decomposition
from pairlie.model.losses import Step

pytestmark = pytest.mark.xdist_group("site")  # one documentation site per session (conftest.site)

NEEDS_MKDOCS = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason='needs MkDocs and Material for MkDocs: pip install -e ".[docs]" (make setup installs them)',
)
# the public surface: what `import pairlie` exports, and the two classes a user's code receives
PUBLIC = [f"pairlie.{name}" for name in pairlie.__all__] + [
    f"{cls.__module__}.{cls.__qualname__}" for cls in (Step, Decomposition)
]
# the loss-term contract: what a term of one's own reads from its Step
STEP_METHODS = [f"{Step.__module__}.Step.{name}" for name in ("illumination", "reflectance", "denoised", "enhanced")]
SPHINX_ROLE = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj|ref|py:\w+):(?=`|<code)")
HEADING = re.compile(
    r'<h(?P<level>[2-6]) id="(?P<id>[^"]+)" class="doc doc-heading">(?P<heading>.*?)</h(?P=level)>\s*'
    r'(?:<div class="doc-signature highlight">(?P<signature>.*?)</div>)?',
    flags=re.S,
)


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture(scope="module")
def api_objects(site) -> dict[str, dict]:
    """``{identifier: {"signature", "kind", "body"}}`` of every object the API page documents."""
    page = (site / "api" / "index.html").read_text()
    matches = list(HEADING.finditer(page))
    found = {}
    for match, after in zip(matches, [*matches[1:], None], strict=True):
        kind = re.search(r"doc-symbol-heading doc-symbol-(\w+)", match["heading"])
        found[match["id"]] = {
            "signature": text(match["signature"] or "").strip(),
            "kind": kind.group(1) if kind else "",
            "body": page[match.end() : after.start() if after else len(page)],
        }
    return found


def _object(identifier: str):
    """The Python object an API-page identifier names (``pairlie.model.losses.Step.illumination``)."""
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(identifier)


@NEEDS_MKDOCS
@pytest.mark.parametrize("identifier", PUBLIC + STEP_METHODS)
def test_every_public_name_is_on_the_api_page_with_its_signature(api_objects, identifier):
    if identifier not in api_objects:
        pytest.fail(f"{identifier}: not on the API page (docs/api.md: add ::: {identifier})")
    name, found = identifier.rsplit(".", 1)[-1], api_objects[identifier]
    if found["kind"] == "attribute":
        assert found["signature"].startswith(f"{name} ="), found["signature"]
    else:
        assert re.match(rf"{re.escape(name)}\(", found["signature"]), f"{identifier}: no signature on the API page"


@NEEDS_MKDOCS
def test_every_class_on_the_api_page_documents_each_argument(api_objects):
    classes = [identifier for identifier, found in api_objects.items() if found["kind"] == "class"]
    assert set(PUBLIC) - {"pairlie.__version__"} <= set(classes)
    for identifier in classes:
        parameters = [
            p for p in inspect.signature(_object(identifier)).parameters if p not in ("self", "args", "kwargs")
        ]
        body = api_objects[identifier]["body"]
        assert re.search(r'class="doc-section-title">(Parameters|Attributes):', body), f"{identifier}: no Args"
        undocumented = [
            p for p in parameters if not re.search(rf"<b><code>(<span[^>]*>)?{p}(</span>)?</code></b>", body)
        ]
        assert not undocumented, f"{identifier}: arguments without a line in its docstring's Args: {undocumented}"


@NEEDS_MKDOCS
def test_no_sphinx_role_is_left_on_the_built_site(site):
    raw = {page.relative_to(site).as_posix(): SPHINX_ROLE.findall(page.read_text()) for page in site.rglob("*.html")}
    assert not {page: roles for page, roles in raw.items() if roles}, "Sphinx roles shown as text (write Markdown)"


def test_no_docstring_of_the_package_uses_a_sphinx_role():
    """The package's docstrings are Markdown (Google style), which mkdocstrings renders and the code map quotes."""
    found = []
    for path in sorted((REPO / "src" / "pairlie").rglob("*.py")):
        tree = ast.parse(path.read_text())
        nodes = [
            tree,
            *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))),
        ]
        for node in nodes:
            doc = ast.get_docstring(node) or ""
            found += [f"{path.relative_to(REPO)}: {m}" for m in re.findall(r":\w+:`[^`]+`", doc)]
    assert not found, found


@NEEDS_MKDOCS
def test_every_link_on_the_api_page_leads_somewhere(site):
    page = site / "api" / "index.html"
    article = re.search(r"<article.*?</article>", page.read_text(), flags=re.S).group(0)
    links = set(re.findall(r'href="([^"]+)"', article))
    assert any(link.startswith("#pairlie.") for link in links)  # cross-references between objects
    broken = []
    for link in sorted(links):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        target = target / "index.html" if target.is_dir() else target
        if not target.is_file() or (anchor and f'id="{anchor}"' not in target.read_text()):
            broken.append(link)
    assert not broken, f"links from the API page to nothing: {broken}"


# --- the configuration reference -----------------------------------------------------------------


def _option_files() -> list[tuple[str, str]]:
    """``(group, option)`` of every config file below the top level of the config tree (model/optimizer, adamw)."""
    found = []

    def walk(folder, group: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{group}/{entry.name}" if group else entry.name)
            elif entry.name.endswith(".yaml") and group:
                found.append((group, entry.name[: -len(".yaml")]))

    walk(resources.files("pairlie.configs"), "")
    return found


def _keys(node, prefix: str) -> list[str]:
    if isinstance(node, dict) and node:
        return [key for name, value in node.items() for key in _keys(value, f"{prefix}{name}.")]
    return [prefix[:-1]]


def _section(page: str, heading: str) -> str:
    """The text under the heading that holds ``heading`` (e.g. `` `data=lol` ``), up to the next heading."""
    match = re.search(rf"^#+ [^\n]*{re.escape(heading)}[^\n]*\n(.*?)(?=^#)", page + "\n#", flags=re.S | re.M)
    return match.group(1) if match else ""


def test_the_config_tree_has_the_groups_the_page_must_show():
    groups = {group for group, _ in _option_files()}
    assert {"data", "model", "model/net", "model/optimizer", "model/scheduler", "trainer", "hydra/launcher"} <= groups
    assert {"adamw", "sgd"} <= {option for group, option in _option_files() if group == "model/optimizer"}


@pytest.mark.parametrize(("group", "option"), [pytest.param(g, o, id=f"{g}={o}") for g, o in _option_files()])
def test_every_key_of_every_option_of_every_group_is_on_the_configuration_page(group, option):
    page = (REPO / "docs" / "configuration.md").read_text()
    section = _section(page, f"`{group}={option}`")
    assert section, (
        f"{group}={option}: no section in docs/configuration.md (python scripts/config_reference.py --write)"
    )
    text = resources.files("pairlie.configs").joinpath(group, f"{option}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    data.pop("defaults", None)
    prefix = "" if "@package _global_" in text else group.replace("/", ".") + "."
    missing = [key for key in _keys(data, prefix) if f"| `{key}`" not in section] if data else []
    assert not missing, f"{group}={option}: keys not in its section of docs/configuration.md: {missing}"


def test_every_key_on_the_configuration_page_has_a_meaning():
    page = (REPO / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `([^`]+)`.* \| (.*) \|$", page, flags=re.M)
    assert len(rows) > 300
    empty = [key for key, meaning in rows if not meaning.strip()]
    assert not empty, f"keys without a meaning in docs/configuration.md (comment them in their YAML): {empty}"


def test_your_data_lists_exactly_the_image_formats_pairlie_reads():
    from pairlie.io.images import IMAGE_EXTENSIONS

    text = " ".join((REPO / "docs" / "your-data.md").read_text().split())
    listed = re.search(r"in a format pairlie reads: ([a-z, ]+) \(", text).group(1)
    assert {f".{name}" for name in listed.split(", ")} == IMAGE_EXTENSIONS
