"""Read templates from runtimes/ and compare registered versions. Reads only; see actions.py for writes."""

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import tomlkit

from templating.manifest import MANIFEST_NAME, Manifest, ManifestError, parse_manifest
from templating.models import decode_file
from templating.render import jinja_environment, toml_key

TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class TemplateSource:
    """One template folder as read now, validated."""

    name: str
    manifest_text: str
    files: dict[str, bytes]
    manifest: Manifest
    digest: str


def template_digest(manifest_text: str, files: dict[str, bytes]) -> str:
    """sha256 over the manifest and every file, in path order; lengths make it unambiguous."""
    h = hashlib.sha256()
    for path, content in [(MANIFEST_NAME, manifest_text.encode("utf-8"))] + sorted(files.items()):
        h.update(f"{path}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def read_template(folder: Path) -> TemplateSource:
    name = folder.name
    if not TEMPLATE_NAME.match(name):
        raise ManifestError(str(folder), None, "template folder names are lowercase letters, digits and -")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(str(folder), None, f"has no {MANIFEST_NAME}")
    try:
        manifest_text = manifest_path.read_text("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(str(manifest_path), None, "is not UTF-8 text") from None
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        # A symlink would make the template's content depend on what it points at.
        if path.is_symlink():
            raise ManifestError(str(path), None, "is a symlink; templates hold plain files only")
        if path.is_file() and relative != MANIFEST_NAME:
            files[relative] = path.read_bytes()
    manifest = parse_manifest(manifest_text, source=str(manifest_path))
    check_files(manifest, files, source=str(manifest_path), folder=str(folder))
    return TemplateSource(name, manifest_text, files, manifest, template_digest(manifest_text, files))


def read_templates(root: Path) -> list[TemplateSource]:
    """Every template under `root`, all validated; the first malformed one raises ManifestError."""
    if not root.is_dir():
        raise ManifestError(str(root), None, "the runtimes folder does not exist")
    return [read_template(folder) for folder in sorted(root.iterdir()) if folder.is_dir()]


def diff_versions(a, b) -> str:
    """Unified diff of two registered versions' manifests and files (template text, not renderings)."""

    def lines(content: bytes) -> list[str]:
        try:
            return content.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            return [f"<binary, sha256 {hashlib.sha256(content).hexdigest()}>\n"]

    old = {MANIFEST_NAME: a.manifest.encode("utf-8"), **{p: decode_file(s) for p, s in a.files.items()}}
    new = {MANIFEST_NAME: b.manifest.encode("utf-8"), **{p: decode_file(s) for p, s in b.files.items()}}
    chunks = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) == new.get(path):
            continue
        chunks.extend(
            difflib.unified_diff(
                lines(old[path]) if path in old else [],
                lines(new[path]) if path in new else [],
                f"r{a.revision}/{path}" if path in old else "/dev/null",
                f"r{b.revision}/{path}" if path in new else "/dev/null",
            )
        )
    return "".join(chunks)


def check_files(manifest: Manifest, files: dict[str, bytes], *, source: str, folder: str) -> None:
    """Check the manifest against the template's files: listed == present, and each renders."""
    for path in sorted(files):
        if path not in manifest.files:
            if manifest.is_user_path(path):
                raise ManifestError(source, f'files."{path}"', "user paths are never written; do not ship a file there")
            raise ManifestError(f"{folder}/{path}", None, f"not listed in {MANIFEST_NAME} (every file needs a policy)")
    for path, spec in sorted(manifest.files.items()):
        key = f'files."{path}"'
        if path not in files:
            raise ManifestError(source, key, f"listed, but {folder}/{path} does not exist")
        if spec.render == "copy":
            continue
        try:
            text = files[path].decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(source, f"{key}.render", f'{path} is not UTF-8 text; use render = "copy"') from None
        if spec.render == "jinja":
            try:
                jinja_environment().parse(text)
            except jinja2.TemplateSyntaxError as error:
                raise ManifestError(f"{folder}/{path}", f"line {error.lineno}", error.message) from None
        else:
            try:
                document = tomlkit.parse(text)
            except tomlkit.exceptions.ParseError as error:
                raise ManifestError(f"{folder}/{path}", None, f"not valid TOML ({error})") from None
            for dotted, expression in spec.set.items():
                if toml_key(document, dotted) is None:
                    raise ManifestError(source, f'{key}.set."{dotted}"', f"{path} has no key {dotted} to set")
                try:
                    jinja_environment().parse(expression)
                except jinja2.TemplateSyntaxError as error:
                    raise ManifestError(source, f'{key}.set."{dotted}"', error.message) from None
