import threading

import pytest

from mobilesam_ros.core.engine.embedding_cache import EmbeddingCache, FrameNotCachedError


def test_nearest_stamp_within_tolerance_and_eviction():
    c = EmbeddingCache(capacity=3)
    for i, s in enumerate([100, 200, 300, 400]):
        c.put(s, f"emb{i}")
    assert c.stamps() == [200, 300, 400]  # 100 evicted first
    assert c.get(290, tolerance_ns=20) == "emb2"
    assert c.get(None) == "emb3" and c.latest() == "emb3"
    with pytest.raises(FrameNotCachedError, match="no cached frame within"):
        c.get(100, tolerance_ns=50)  # evicted: nearest is 200, 100 ns away
    assert c.find(100, tolerance_ns=100) == (200, "emb1")


def test_empty_and_bad_capacity():
    with pytest.raises(FrameNotCachedError, match="no frame has been encoded"):
        EmbeddingCache().get(5)
    with pytest.raises(ValueError):
        EmbeddingCache(capacity=0)


def test_reinsert_same_stamp_moves_to_newest_and_threads():
    c = EmbeddingCache(capacity=2)
    c.put(1, "a")
    c.put(2, "b")
    c.put(1, "a2")
    c.put(3, "c")  # evicts 2, not the re-inserted 1
    assert c.stamps() == [1, 3] and c.get(1) == "a2"

    def writer(base):
        for k in range(500):
            c.put(base + k, k)
    ts = [threading.Thread(target=writer, args=(b,)) for b in (10_000, 20_000)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(c) == 2


