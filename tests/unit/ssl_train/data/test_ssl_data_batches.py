"""Each process's share of every iteration's global batch."""

from __future__ import annotations

from ssl_train.data.batches import epoch_batches


def test_epoch_batches_shard_the_global_batch() -> None:
    one = epoch_batches(10, batch_size=4, seed=3, epoch=1, rank=0, world=1, iterations=2)
    r0 = epoch_batches(10, batch_size=2, seed=3, epoch=1, rank=0, world=2, iterations=2)
    r1 = epoch_batches(10, batch_size=2, seed=3, epoch=1, rank=1, world=2, iterations=2)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one
    assert len(set(one[0] + one[1])) == 8  # no repeats within an epoch
    assert one != epoch_batches(10, batch_size=4, seed=3, epoch=2, rank=0, world=1, iterations=2)
    longer = epoch_batches(3, batch_size=2, seed=0, epoch=0, rank=0, world=1, iterations=4)
    assert len(longer) == 4 and all(len(b) == 2 for b in longer)
