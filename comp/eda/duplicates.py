"""Duplicates and near-duplicates by 64-bit perceptual hash: multi-index hashing (sub-quadratic), or blockwise brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd

PAIR_COLUMNS = ["kind", "id_a", "id_b", "path_a", "path_b", "label_a", "label_b", "group_a", "group_b",
                "distance", "exact"]


def hashes_to_uint64(hex_hashes: pd.Series | list[str]) -> np.ndarray:
    """'00ff..' strings -> uint64 array (empty strings are not allowed here)."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def hamming_pairs(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    threshold: int = 6,
    block_cells: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) for every pair with Hamming distance <= threshold, ordered by (i, j).

    With b=None, pairs within a with i < j; otherwise i indexes a and j indexes b. Large inputs use
    multi-index hashing (sub-quadratic); small ones, or thresholds above MIH_MAX_THRESHOLD, the dense search.
    """
    n_b = len(a) if b is None else len(b)
    if threshold > MIH_MAX_THRESHOLD or len(a) * n_b <= block_cells:
        return dense_hamming_pairs(a, b, threshold=threshold, block_cells=block_cells)
    return mih_hamming_pairs(a, b, threshold=threshold)


MIH_CHUNKS = 4  # 16-bit substrings: a pair within distance t has a substring within t // 4 (pigeonhole)
MIH_MAX_THRESHOLD = 11  # up to 2 flipped bits per substring (137 probes); beyond, the dense search


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set."""
    from itertools import combinations

    masks = [sum(1 << k for k in combo) for r in range(radius + 1) for combo in combinations(range(bits), r)]
    return np.array(masks, dtype=np.uint64)


def _ranges_to_pairs(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index, sorted position) for every position in [starts[q], stops[q]) of every query q."""
    counts = stops - starts
    query = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return query, np.repeat(starts, counts) + offsets


def mih_hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, *,
                      threshold: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hamming_pairs by multi-index hashing: probe each 16-bit substring of a within t // 4 flips in b's sorted substrings."""
    a = np.asarray(a, dtype=np.uint64)
    same = b is None
    b = a if same else np.asarray(b, dtype=np.uint64)
    masks = _flip_masks(64 // MIH_CHUNKS, threshold // MIH_CHUNKS)
    found_i, found_j = [], []
    for c in range(MIH_CHUNKS):
        shift = np.uint64(16 * c)
        sub_b = ((b >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(sub_b, kind="stable")  # b's rows bucketed by this substring
        ends = np.cumsum(np.bincount(sub_b, minlength=1 << 16))
        starts = ends - np.bincount(sub_b, minlength=1 << 16)
        sub_a = ((a >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        for mask in masks.astype(np.int64):
            probe = sub_a ^ mask
            i, pos = _ranges_to_pairs(starts[probe], ends[probe])
            j = order[pos]
            keep = np.bitwise_count(a[i] ^ b[j]) <= threshold
            if same:
                keep &= i < j
            found_i.append(i[keep])
            found_j.append(j[keep])
    i, j = np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)
    key = np.unique(i * len(b) + j)  # a pair found through several substrings once, ordered by (i, j)
    i, j = key // len(b), key % len(b)
    return i, j, np.bitwise_count(a[i] ^ b[j]).astype(np.int64)


def dense_hamming_pairs(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    threshold: int = 6,
    block_cells: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hamming_pairs by brute force: each block of rows of a XORed against all of b (memory O(block_cells))."""
    a = np.asarray(a, dtype=np.uint64)
    same = b is None
    b = a if same else np.asarray(b, dtype=np.uint64)
    block = max(1, block_cells // max(len(b), 1))
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(a), block):
        rows = a[start : start + block]
        offset = start if same else 0  # within one set, columns before the block were paired already
        dist = np.bitwise_count(rows[:, None] ^ b[None, offset:])  # (block, len(b) - offset) uint8
        hit = dist <= threshold
        if same:  # in the diagonal square keep j > i only
            hit[:, : len(rows)] &= np.triu(np.ones((len(rows), len(rows)), dtype=bool), k=1)
        i, j = np.nonzero(hit)
        found_i.append(i + start)
        found_j.append(j + offset)
        found_d.append(dist[i, j])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
            np.concatenate(found_d).astype(np.int64))


def _side(frame: pd.DataFrame, idx: np.ndarray, suffix: str) -> dict[str, np.ndarray]:
    rows = frame.iloc[idx]
    none = np.full(len(idx), None, dtype=object)
    return {f"id_{suffix}": rows["id"].to_numpy(), f"path_{suffix}": rows["path"].to_numpy(),
            f"label_{suffix}": rows["label"].to_numpy() if "label" in rows else none,
            f"group_{suffix}": rows["group"].to_numpy() if "group" in rows else none}


def _pairs(kind: str, fa: pd.DataFrame, fb: pd.DataFrame, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"kind": kind, **_side(fa, i, "a"), **_side(fb, j, "b"), "distance": d})
    out["exact"] = fa["sha"].to_numpy()[i] == fb["sha"].to_numpy()[j]
    return out


def find_duplicates(train: pd.DataFrame, test: pd.DataFrame | None, *, threshold: int = 6) -> pd.DataFrame:
    """Near-duplicate pairs within train (kinds label / group / train) and between train and test.

    Kinds: 'label' = different labels (label noise); 'group' = same label, different groups
    (leak between folds); 'train' = same label, no group column (leak between folds);
    'test' = a train image and a test image (leak into the leaderboard). Same-group, same-label
    pairs are not leaks and are left out. Frames need id, path, dhash, sha [label, group].
    """
    tr = train[train["dhash"] != ""].reset_index(drop=True)
    h_tr = hashes_to_uint64(tr["dhash"])
    i, j, d = hamming_pairs(h_tr, threshold=threshold)
    within = _pairs("train", tr, tr, i, j, d)
    label_differs = within["label_a"].to_numpy() != within["label_b"].to_numpy()
    grouped = "group" in tr
    group_differs = within["group_a"].to_numpy() != within["group_b"].to_numpy() if grouped else None
    within.loc[label_differs, "kind"] = "label"
    if grouped:
        within.loc[~label_differs & group_differs, "kind"] = "group"
        within = within[label_differs | group_differs]
    frames = [within]
    if test is not None and len(test):
        te = test[test["dhash"] != ""].reset_index(drop=True)
        i, j, d = hamming_pairs(h_tr, hashes_to_uint64(te["dhash"]), threshold=threshold)
        frames.append(_pairs("test", tr, te, i, j, d))
    pairs = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if pairs is None:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    order = {"test": 0, "label": 1, "group": 2, "train": 3}
    pairs = pairs.assign(_k=pairs["kind"].map(order)).sort_values(["_k", "distance", "id_a", "id_b"], kind="stable")
    return pairs.drop(columns="_k").reset_index(drop=True)[PAIR_COLUMNS]
