"""Paged KV-cache bookkeeping: ref-counted blocks, prefix sharing by hash, copy-on-write.

A block's key hashes its tokens, the key of the block before it and, for blocks holding
image tokens, the image's content hash; equal keys mean equal K/V. Keys of full blocks are
registered when the step that computes them is scheduled (the forward stores every token's
K/V before any attention reads, so a sequence scheduled in the same step may already share
them). The tail block of a completed prompt is registered too, under a key of its partial
contents: that is how all unconditional paths share one instruction-only prompt and the two
responses of an image share the image + instruction prompt even when it does not fill a
block. Writing into a block that others share first copies it (copy-on-write).
Freed blocks keep their key until reused, so a later sequence can still revive them.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

from judgefree.engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    key: bytes | None = None


class BlockManager:
    """Allocates blocks to sequences; ``copies`` collects (src, dst) copy-on-write pairs for
    the model runner to apply before the next forward."""

    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: dict[int, None] = dict.fromkeys(range(num_blocks))  # ordered: oldest first
        self.key_to_block: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        return len(self.free)

    # -- keys -------------------------------------------------------------------------------
    def _key(self, seq: Sequence, index: int, end: int, prev: bytes) -> bytes:
        start = index * self.block_size
        digest = hashlib.blake2b(prev, digest_size=16)
        digest.update(array("q", seq.tokens(start, end)).tobytes())
        if seq.touches_image(start, end):
            digest.update(b"image:" + seq.image_hash.encode())
        return digest.digest()

    def _full_keys(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """Keys of (at least) the first ``num_blocks`` full blocks: the list cached on the
        sequence, which may run longer; callers read only its first ``num_blocks`` entries."""
        keys = seq.block_keys
        while len(keys) < num_blocks:
            i = len(keys)
            keys.append(self._key(seq, i, (i + 1) * self.block_size, keys[-1] if keys else b""))
        return keys

    def _prompt_keys(self, seq: Sequence) -> list[bytes]:
        """Keys of every block of the sequence as it stands, the partial tail included."""
        full, tail = divmod(len(seq), self.block_size)
        keys = self._full_keys(seq, full)[:full]
        if tail:
            keys.append(self._key(seq, full, len(seq), keys[-1] if keys else b""))
        return keys

    # -- allocation -------------------------------------------------------------------------
    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding the longest cached prefix of ``seq``."""
        if not self.prefix_caching:
            return []
        found = []
        for key in self._prompt_keys(seq):
            block_id = self.key_to_block.get(key)
            if block_id is None:
                break
            found.append(block_id)
        return found

    def blocks_needed(self, seq: Sequence) -> int:
        """Free blocks that ``allocate(seq)`` would take (revived cached blocks count)."""
        cached = self._cached_prefix(seq)
        total = -(-len(seq) // self.block_size)
        return total - len(cached) + sum(1 for b in cached if self.blocks[b].ref_count == 0)

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` blocks for all its tokens, sharing its cached prefix; sets
        ``num_computed`` to the cached token count."""
        assert not seq.block_table, "sequence already holds blocks"
        cached = self._cached_prefix(seq)
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
        seq.num_computed = min(len(cached) * self.block_size, len(seq))
        total = -(-len(seq) // self.block_size)
        for _ in range(total - len(cached)):
            seq.block_table.append(self._take_free())

    def _take_free(self) -> int:
        block_id = next(iter(self.free))
        del self.free[block_id]
        block = self.blocks[block_id]
        if block.key is not None and self.key_to_block.get(block.key) == block_id:
            del self.key_to_block[block.key]
        block.key = None
        block.ref_count = 1
        return block_id

    def release(self, seq: Sequence) -> None:
        """Drop ``seq``'s references; blocks nobody holds return to the free pool (keys kept)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table.clear()
        seq.num_computed = 0

    # -- decode -----------------------------------------------------------------------------
    def append_cost(self, seq: Sequence) -> int:
        """Free blocks needed to write the token at position len(seq) - 1: a new block, or a
        private copy of a shared one."""
        index = (len(seq) - 1) // self.block_size
        if index == len(seq.block_table):
            return 1
        return int(self.blocks[seq.block_table[index]].ref_count > 1)

    def prepare_append(self, seq: Sequence, copies: list[tuple[int, int]]) -> None:
        """Make the block of position len(seq) - 1 exist and be ``seq``'s alone."""
        index = (len(seq) - 1) // self.block_size
        if index == len(seq.block_table):
            seq.block_table.append(self._take_free())
            return
        block = self.blocks[seq.block_table[index]]
        if block.ref_count > 1:
            new_id = self._take_free()
            block.ref_count -= 1
            seq.block_table[index] = new_id
            copies.append((block.block_id, new_id))

    # -- registration -----------------------------------------------------------------------
    def register(self, seq: Sequence, upto: int, start: int = 0) -> None:
        """Publish the keys of ``seq``'s blocks whose K/V will be complete once positions
        [0, upto) are computed; a completed prompt's partial tail block too. ``start``: the
        first position this step computes; blocks ending before it were published by earlier
        steps (a decode step passes it, so its cost does not grow with the sequence)."""
        if not self.prefix_caching:
            return
        full = upto // self.block_size
        keys = self._full_keys(seq, full)
        for index in range(start // self.block_size, full):
            self._publish(seq.block_table[index], keys[index])
        if upto == len(seq) and upto % self.block_size and not seq.output_ids:
            self._publish(seq.block_table[full], self._prompt_keys(seq)[-1])

    def _publish(self, block_id: int, key: bytes) -> None:
        block = self.blocks[block_id]
        if block.key == key:
            return
        owner = self.key_to_block.get(key)
        if owner is not None and owner != block_id:
            return  # an identical block is already published; keep that one
        if block.key is not None and self.key_to_block.get(block.key) == block_id:
            del self.key_to_block[block.key]  # e.g. a partial tail that has now filled up
        block.key = key
        self.key_to_block[key] = block_id
