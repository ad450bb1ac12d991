"""mkdocs hook: the site serves its own copy of Mermaid, so diagrams render offline.

Material for MkDocs draws ``mermaid`` blocks with the global ``mermaid`` object and fetches it
from a CDN only when the page has none. This hook puts the pinned release from the npm registry
(``npm pack``, checked by npm against the registry's integrity hash) under
``docs/assets/javascripts/`` (ignored by git; fetched once) and adds it to ``extra_javascript``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Final

VERSION: Final = "11.4.1"
#: Where the script goes, relative to docs_dir (and so to the site's root).
SCRIPT: Final = f"assets/javascripts/mermaid-{VERSION}.min.js"
MEMBER: Final = "package/dist/mermaid.min.js"

log = logging.getLogger("mkdocs.hooks.mermaid_bundle")


def fetch(target: Path) -> None:
    """Download mermaid@VERSION from the npm registry and keep its minified bundle at target."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed once to fetch Mermaid for the docs (Debian: apt-get install npm)"
        )
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [npm, "pack", f"mermaid@{VERSION}", "--silent", "--pack-destination", folder],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (tarball,) = Path(folder).glob("mermaid-*.tgz")
        with tarfile.open(tarball) as archive:
            source = archive.extractfile(MEMBER)
            if source is None:
                raise RuntimeError(f"{tarball.name} has no {MEMBER}")
            data = source.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    part.write_bytes(data)
    part.replace(target)
    log.info("fetched Mermaid %s from the npm registry (%d bytes)", VERSION, len(data))


def on_config(config: Any) -> Any:
    target = Path(config["docs_dir"]) / SCRIPT
    if not target.is_file():
        fetch(target)
    if SCRIPT not in [str(script) for script in config["extra_javascript"]]:
        config["extra_javascript"].append(SCRIPT)
    return config
