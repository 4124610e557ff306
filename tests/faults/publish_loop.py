"""Publish copies of one version folder into a store, over and over, until killed.

``python publish_loop.py STORE SOURCE TAG`` prints each published version number. The
fault tests SIGKILL it at random moments, so every step of a publish (copy, sha256,
metadata, fsync, rename, high-water mark) is cut short somewhere over the repeats.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from squarenet.store import METADATA_FILE, ModelStore

PAUSE = 0.01  # seconds between publishes: keeps the store small, kills still land mid-publish


def main(argv: list[str]) -> int:
    """Publish forever (or ``argv[3]`` times when given)."""
    store, source, tag = ModelStore(argv[0]), Path(argv[1]), argv[2]
    times = int(argv[3]) if len(argv) > 3 else -1
    metadata = json.loads((source / METADATA_FILE).read_text(encoding="utf-8"))
    for key in ("files", "version", "format", "model_name"):
        metadata.pop(key, None)
    while times != 0:
        staging = store.staging_dir(tag=tag)
        shutil.copytree(
            source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(METADATA_FILE)
        )
        published = store.publish_version(staging, metadata)
        print(published.version, flush=True)
        times -= 1
        time.sleep(PAUSE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
