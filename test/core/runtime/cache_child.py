"""A separate process that asks the ONNX cache for the graphs of one checkpoint (used by
test_onnx_cache_concurrency.py; not collected by pytest).

    python cache_child.py CHECKPOINT CACHE_ROOT GO_FILE MODE

Prints READY once imported, waits until GO_FILE exists (so that two children start the export
together), then prints the JSON of `cached_graphs` (the two paths). Logs go to stderr.
MODE: `real` exports with the real exporter; `quick` stands in for the exporter with one that
writes two small files and their manifest after 2 s (to test the locking, not the export);
`hang` prints `TMP <folder>` once its temporary folder has content and then sleeps (to be killed).
Every export, real or not, logs the cache's own "exporting ONNX graphs" line, which the tests count.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path


def quick_export(folder: Path, load_sam) -> None:
    from mobilesam_ros.core.runtime import onnx_cache

    for name in onnx_cache.FILES:
        (folder / name).write_bytes(os.urandom(4096))
    if MODE == "hang":
        print(f"TMP {folder}", flush=True)
        time.sleep(600)
    time.sleep(2.0)  # long enough for a second process to find the lock taken
    manifest = {"sha256": {f: onnx_cache.sha256_of(str(folder / f)) for f in onnx_cache.FILES}}
    (folder / onnx_cache.MANIFEST).write_text(json.dumps(manifest))


if __name__ == "__main__":
    checkpoint, root, go, MODE = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(process)d %(message)s")
    from mobilesam_ros.core.runtime import onnx_cache

    load = lambda: None  # noqa: E731  quick/hang never build the model
    if MODE == "real":
        from mobilesam_ros.core.io.checkpoints import load_mobile_sam

        load = lambda: load_mobile_sam(checkpoint)  # noqa: E731
    else:
        onnx_cache._export_into = quick_export
    print("READY", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    print(json.dumps(onnx_cache.cached_graphs([checkpoint], load, root)), flush=True)
