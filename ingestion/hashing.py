"""64-bit hashes of Arrow strings, computed from Arrow's buffers without making Python objects,
for counting repeated ids in files of millions of rows (8 bytes a row instead of the ids).

A string of up to HASHED_BYTES bytes is read as little-endian 64-bit words (the last one
padded with zeros) and folded into its length with a multiply-xorshift mix; longer strings
are hashed by pandas. Ids of one length, the usual case, are read straight off the text
buffer; a block with mixed lengths is first laid out in a zero-padded table.
"""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .buffers import string_buffers

HASHED_BYTES = 64
# Duplicate values are counted one range of hash values at a time, so counting needs only
# 1/HASH_RANGES more memory than the hashes themselves.
HASH_RANGES = 16
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_FINAL = np.uint64(0xBF58476D1CE4E5B9)


def hash_strings(values: pa.Array) -> np.ndarray:
    """One uint64 per string; equal strings get equal hashes, whatever block they come in."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = pc.fill_null(values, "").cast(pa.string())
    lengths = np.diff(string_buffers(values)[0])
    short = lengths <= HASHED_BYTES
    if short.all():
        return _hash_short(values)
    # Rare: ids this long are hashed one by one.
    hashes = np.empty(len(values), dtype=np.uint64)
    hashes[~short] = pd.util.hash_array(values.filter(pa.array(~short)).to_numpy(zero_copy_only=False))
    hashes[short] = _hash_short(values.filter(pa.array(short)))
    return hashes


def _hash_short(values: pa.Array) -> np.ndarray:
    """hash_strings for strings of at most HASHED_BYTES bytes."""
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    offsets, text = string_buffers(values)
    text, offsets = text[offsets[0]:offsets[-1]], offsets - offsets[0]
    lengths = np.diff(offsets)
    width = int(lengths.max())
    words = -(-width // 8)
    table = np.zeros((n, words * 8), dtype=np.uint8)
    if width and (lengths == width).all():
        table[:, :width] = text.reshape(n, width)
    elif width:
        rows = np.repeat(np.arange(n), lengths)
        columns = np.arange(len(text)) - np.repeat(offsets[:-1], lengths)
        table[rows, columns] = text
    hashes = lengths.astype(np.uint64) * _MULTIPLIER
    word_count = -(-lengths // 8)
    with np.errstate(over="ignore"):
        for j, word in enumerate(table.view(np.uint64).T):
            mixed = _mix(hashes ^ word)
            # A string mixes in its own words only, so the table's width never changes its hash.
            hashes = mixed if (word_count > j).all() else np.where(word_count > j, mixed, hashes)
        return _mix(hashes * _FINAL)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h * _MULTIPLIER
    return h ^ (h >> np.uint64(29))


def count_repeats(sorted_blocks: list[np.ndarray]) -> int:
    """How many values repeat an earlier one, over several sorted arrays of hashes."""
    edges = np.arange(1, HASH_RANGES, dtype=np.uint64) * np.uint64(2**64 // HASH_RANGES)
    splits = [np.concatenate(([0], np.searchsorted(block, edges), [len(block)])) for block in sorted_blocks]
    repeats = 0
    for part in range(HASH_RANGES):
        values = np.concatenate([block[split[part]:split[part + 1]] for block, split in zip(sorted_blocks, splits)])
        values.sort()
        repeats += int(np.count_nonzero(values[1:] == values[:-1]))
    return repeats
