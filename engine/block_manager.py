"""Paged KV-cache bookkeeping: ref-counted blocks, prefix sharing by hash, copy-on-write.

A block's key hashes its tokens, the key of the block before it and, for blocks holding
image tokens, the image's content hash; equal keys mean equal K/V. Keys of full blocks are
registered when the step that computes them is scheduled (the forward stores every token's
K/V before any attention reads, so a path scheduled in the same step may already share
them). The tail block of a completed prompt is registered too, under a key of its partial
contents: that is how all unconditional paths share one instruction-only prompt and the two
responses of an image share the image + instruction prompt even when it does not fill a
block. Writing into a block that others share first copies it (copy-on-write).
Freed blocks keep their key until reused, so a later path can still revive them.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

from judgefree.engine.response import ResponsePath


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    key: bytes | None = None


class BlockManager:
    """Allocates blocks to response paths; ``copies`` collects (src, dst) copy-on-write pairs for
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
    def _key(self, path: ResponsePath, index: int, end: int, prev: bytes) -> bytes:
        start = index * self.block_size
        digest = hashlib.blake2b(prev, digest_size=16)
        digest.update(array("q", path.tokens(start, end)).tobytes())
        if path.touches_image(start, end):
            digest.update(b"image:" + path.image_hash.encode())
        return digest.digest()

    def _full_keys(self, path: ResponsePath, num_blocks: int) -> list[bytes]:
        """Keys of (at least) the first ``num_blocks`` full blocks: the list cached on the
        path, which may run longer; callers read only its first ``num_blocks`` entries."""
        keys = path.block_keys
        while len(keys) < num_blocks:
            i = len(keys)
            keys.append(self._key(path, i, (i + 1) * self.block_size, keys[-1] if keys else b""))
        return keys

    def _prompt_keys(self, path: ResponsePath) -> list[bytes]:
        """Keys of every block of the path as it stands, the partial tail included."""
        full, tail = divmod(len(path), self.block_size)
        keys = self._full_keys(path, full)[:full]
        if tail:
            keys.append(self._key(path, full, len(path), keys[-1] if keys else b""))
        return keys

    # -- allocation -------------------------------------------------------------------------
    def _cached_prefix(self, path: ResponsePath) -> list[int]:
        """Block ids holding the longest cached prefix of ``path``."""
        if not self.prefix_caching:
            return []
        found = []
        for key in self._prompt_keys(path):
            block_id = self.key_to_block.get(key)
            if block_id is None:
                break
            found.append(block_id)
        return found

    def blocks_needed(self, path: ResponsePath) -> int:
        """Free blocks that ``allocate(path)`` would take (revived cached blocks count)."""
        cached = self._cached_prefix(path)
        total = -(-len(path) // self.block_size)
        return total - len(cached) + sum(1 for b in cached if self.blocks[b].ref_count == 0)

    def allocate(self, path: ResponsePath) -> None:
        """Give ``path`` blocks for all its tokens, sharing its cached prefix; sets
        ``num_computed`` to the cached token count."""
        assert not path.block_table, "path already holds blocks"
        cached = self._cached_prefix(path)
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
            path.block_table.append(block_id)
        path.num_computed = min(len(cached) * self.block_size, len(path))
        total = -(-len(path) // self.block_size)
        for _ in range(total - len(cached)):
            path.block_table.append(self._take_free())

    def _take_free(self) -> int:
        block_id = next(iter(self.free))
        del self.free[block_id]
        block = self.blocks[block_id]
        if block.key is not None and self.key_to_block.get(block.key) == block_id:
            del self.key_to_block[block.key]
        block.key = None
        block.ref_count = 1
        return block_id

    def release(self, path: ResponsePath) -> None:
        """Drop ``path``'s references; blocks nobody holds return to the free pool (keys kept)."""
        for block_id in reversed(path.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
        path.block_table.clear()
        path.num_computed = 0

    # -- decode -----------------------------------------------------------------------------
    def append_cost(self, path: ResponsePath) -> int:
        """Free blocks needed to write the token at position len(path) - 1: a new block, or a
        private copy of a shared one."""
        index = (len(path) - 1) // self.block_size
        if index == len(path.block_table):
            return 1
        return int(self.blocks[path.block_table[index]].ref_count > 1)

    def prepare_append(self, path: ResponsePath, copies: list[tuple[int, int]]) -> None:
        """Make the block of position len(path) - 1 exist and be ``path``'s alone."""
        index = (len(path) - 1) // self.block_size
        if index == len(path.block_table):
            path.block_table.append(self._take_free())
            return
        block = self.blocks[path.block_table[index]]
        if block.ref_count > 1:
            new_id = self._take_free()
            block.ref_count -= 1
            path.block_table[index] = new_id
            copies.append((block.block_id, new_id))

    # -- registration -----------------------------------------------------------------------
    def register(self, path: ResponsePath, upto: int, start: int = 0) -> None:
        """Publish the keys of ``path``'s blocks whose K/V will be complete once positions
        [0, upto) are computed; a completed prompt's partial tail block too. ``start``: the
        first position this step computes; blocks ending before it were published by earlier
        steps (a decode step passes it, so its cost does not grow with the sequence)."""
        if not self.prefix_caching:
            return
        full = upto // self.block_size
        keys = self._full_keys(path, full)
        for index in range(start // self.block_size, full):
            self._publish(path.block_table[index], keys[index])
        if upto == len(path) and upto % self.block_size and not path.output_ids:
            self._publish(path.block_table[full], self._prompt_keys(path)[-1])

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
