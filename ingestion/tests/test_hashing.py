"""Hashes of ids: equal strings hash alike in whatever block and layout they come; repeats are counted."""
import numpy as np
import pyarrow as pa

from ingestion.hashing import HASHED_BYTES, count_repeats, hash_strings


def test_equal_strings_hash_alike_whatever_else_is_in_their_block():
    long = "x" * (HASHED_BYTES + 5)
    blocks = [
        ["abc", "abcdefghijkl", "", "q" * HASHED_BYTES, long, "abc"],  # mixed lengths, one long
        ["abc"],  # one length
        ["zzz", "abc", "a\0c"],  # one length, a NUL inside
        ["abcdefghijkl", long, "abc"],
    ]
    hashes = [dict(zip(block, hash_strings(pa.array(block)).tolist())) for block in blocks]

    for value in ("abc", "abcdefghijkl", long):
        assert len({found[value] for found in hashes if value in found}) == 1, value
    assert len(set(hashes[0].values()) | set(hashes[2].values())) == len(set(blocks[0]) | set(blocks[2]))


def test_a_sliced_array_hashes_like_a_fresh_one():
    values = pa.array([f"id-{i}" for i in range(100)])
    assert hash_strings(values.slice(40, 20)).tolist() == hash_strings(pa.array(values.slice(40, 20).to_pylist())).tolist()


def test_a_million_distinct_ids_get_distinct_hashes_and_repeats_are_counted():
    ids = [f"C{i:09d}" for i in range(1_000_000)]
    first = np.sort(hash_strings(pa.array(ids[:600_000])))
    second = np.sort(hash_strings(pa.array(ids[500_000:] + ["C000000007", "C000000007"])))

    assert count_repeats([first]) == 0
    # 100,000 ids in both blocks, and one id three times over.
    assert count_repeats([first, second]) == 100_000 + 2
