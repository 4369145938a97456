"""Read templates from runtimes/ and compare registered versions. Reads only; see actions.py for writes."""

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from templating.manifest import MANIFEST_NAME, Manifest, ManifestError, check_files, parse_manifest
from templating.models import decode_file

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
