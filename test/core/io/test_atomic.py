"""core/io/atomic.py: the target holds the old content or the whole new one, never a mix, and no
temporary file is left behind."""
import json

import pytest
import torch

from mobilesam_ros.core.io.atomic import (atomic_path, atomic_save, atomic_write_bytes,
                                          atomic_write_json, atomic_write_text)


def test_writes_replace_the_target(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new bytes")
    assert p.read_bytes() == b"new bytes"
    atomic_write_text(tmp_path / "t.txt", "h\u00e9llo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9llo\n"
    atomic_write_json(tmp_path / "j.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2]}
    atomic_save({"w": torch.arange(3)}, tmp_path / "s.pt")
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin", "j.json", "s.pt", "t.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "state.pt"
    p.write_bytes(b"previous state")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half of the new st")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"previous state"
    assert [x.name for x in tmp_path.iterdir()] == ["state.pt"]
