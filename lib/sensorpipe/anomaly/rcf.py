"""A streaming Random Cut Forest (Guha, Mishra, Roy, Schrijvers, ICML 2016), compiled with numba.

Each tree keeps a time-decayed reservoir sample of the shingled points it has seen (the
weighted reservoir of AWS's implementation: a point's priority is ``-lambda * t + log(-log U)``;
the `sample_size` lowest priorities stay, so recent points are slightly favoured over a long
history rather than kept in a sliding window) and a random cut tree over that sample, updated by
insertion and deletion. A point is scored before it is inserted, so scores are causal.

The score is AWS's: descend to the leaf the point would reach, score ``1/(depth+1)`` there (or
``damp * 1/(depth + log2(mass+1))`` if the point duplicates the leaf), and on the way back up mix
in ``1/(depth+1)`` with the probability that a random cut of the node's box grown by the point
separates the point (the displacement the point would cause); times ``log2(tree mass + 1)``,
averaged over trees. `score01` divides by ``log2(sample_size)``, as AWS's NAB run did.

Memory per detector: trees x (2 x sample_size) nodes, each with a box (a leaf's box is its
point, so no point array). Randomness comes from a per-tree splitmix64 state kept in the
arrays, so the whole state serialises to bytes and a restored forest continues exactly as the
original would have.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np

NONE = -1


@nb.njit(cache=True, inline="always")
def _next_u64(rng: np.ndarray, t: int) -> np.uint64:
    rng[t] = rng[t] + np.uint64(0x9E3779B97F4A7C15)
    z = rng[t]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, inline="always")
def _uniform(rng: np.ndarray, t: int) -> float:
    # 53 random bits -> [0, 1); never exactly 0 for the log(-log U) priorities below.
    return ((_next_u64(rng, t) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@nb.njit(cache=True)
def _alloc(free: np.ndarray, free_top: np.ndarray, t: int) -> int:
    free_top[t] -= 1
    return free[t, free_top[t]]


@nb.njit(cache=True)
def _release(free: np.ndarray, free_top: np.ndarray, t: int, node: int) -> None:
    free[t, free_top[t]] = node
    free_top[t] += 1


@nb.njit(cache=True)
def _same_point(lo: np.ndarray, t: int, node: int, x: np.ndarray) -> bool:
    """Whether leaf `node` holds x (a leaf's box is its point: `lo` holds it)."""
    for k in range(x.shape[0]):
        if lo[t, node, k] != x[k]:
            return False
    return True


@nb.njit(cache=True)
def _score_tree(t, x, root, left, right, cut_dim, cut_val, lo, hi, mass, is_leaf):
    node = root[t]
    if node == NONE:
        return 0.0
    # Descend, remembering the path.
    path = np.empty(64, dtype=np.int64)
    depth = 0
    while not is_leaf[t, node]:
        if depth >= 64:
            break
        path[depth] = node
        depth += 1
        if x[cut_dim[t, node]] <= cut_val[t, node]:
            node = left[t, node]
        else:
            node = right[t, node]
    tree_mass = mass[t, root[t]]
    leaf_mass = mass[t, node]
    if _same_point(lo, t, node, x):
        damp = 1.0 - leaf_mass / (2.0 * tree_mass)
        score = damp / (depth + math.log2(leaf_mass + 1.0))
    else:
        score = 1.0 / (depth + 1.0)
    d = x.shape[0]
    for level in range(depth - 1, -1, -1):
        n = path[level]
        grown = 0.0
        base = 0.0
        for k in range(d):
            a = lo[t, n, k]
            b = hi[t, n, k]
            base += b - a
            grown += max(b, x[k]) - min(a, x[k])
        if grown > base:
            p = (grown - base) / grown
            score = (1.0 - p) * score + p / (level + 1.0)
    return score * math.log2(tree_mass + 1.0)


@nb.njit(cache=True)
def _recompute_boxes(root, left, right, is_leaf, lo, hi):
    """Every live node's bounding box from its subtree: a leaf's is its point (which `lo`
    holds), an inner node's the union of its children's (exactly what the updates maintain, so
    the state need not carry `hi`). Free nodes are left alone: nothing reads them before
    writing them."""
    trees, capacity, d = lo.shape
    order = np.empty(capacity, np.int64)
    stack = np.empty(capacity, np.int64)
    for t in range(trees):
        if root[t] == NONE:
            continue
        stack[0] = root[t]
        top, count = 1, 0
        while top > 0:
            top -= 1
            node = stack[top]
            order[count] = node
            count += 1
            if not is_leaf[t, node]:
                stack[top] = left[t, node]
                stack[top + 1] = right[t, node]
                top += 2
        for i in range(count - 1, -1, -1):  # children before their parents
            node = order[i]
            for k in range(d):
                if is_leaf[t, node]:
                    hi[t, node, k] = lo[t, node, k]
                else:
                    lo[t, node, k] = min(lo[t, left[t, node], k], lo[t, right[t, node], k])
                    hi[t, node, k] = max(hi[t, left[t, node], k], hi[t, right[t, node], k])


@nb.njit(cache=True)
def _refresh_up(t, node, left, right, parent, lo, hi, mass, d):
    """Recompute boxes and masses from `node` up to the root."""
    while node != NONE:
        a = left[t, node]
        b = right[t, node]
        for k in range(d):
            lo[t, node, k] = min(lo[t, a, k], lo[t, b, k])
            hi[t, node, k] = max(hi[t, a, k], hi[t, b, k])
        mass[t, node] = mass[t, a] + mass[t, b]
        node = parent[t, node]


@nb.njit(cache=True)
def _insert(
    t,
    x,
    root,
    left,
    right,
    parent,
    cut_dim,
    cut_val,
    lo,
    hi,
    mass,
    is_leaf,
    free,
    free_top,
    rng,
):
    """Insert x into tree t; return the leaf holding it."""
    d = x.shape[0]
    if root[t] == NONE:
        leaf = _alloc(free, free_top, t)
        is_leaf[t, leaf] = True
        parent[t, leaf] = NONE
        mass[t, leaf] = 1
        for k in range(d):
            lo[t, leaf, k] = x[k]
            hi[t, leaf, k] = x[k]
        root[t] = leaf
        return leaf
    node = root[t]
    while True:
        if is_leaf[t, node] and _same_point(lo, t, node, x):
            mass[t, node] += 1
            up = parent[t, node]
            while up != NONE:
                mass[t, up] += 1
                up = parent[t, up]
            return node
        total = 0.0
        for k in range(d):
            total += max(hi[t, node, k], x[k]) - min(lo[t, node, k], x[k])
        u = _uniform(rng, t) * total
        dim = 0
        cut = 0.0
        for k in range(d):
            a = min(lo[t, node, k], x[k])
            span = max(hi[t, node, k], x[k]) - a
            if u < span or k == d - 1:
                dim = k
                cut = a + min(u, span)
                break
            u -= span
        separates = (cut < lo[t, node, dim] and x[dim] <= cut) or (
            cut >= hi[t, node, dim] and x[dim] > cut
        )
        if separates:
            leaf = _alloc(free, free_top, t)
            inner = _alloc(free, free_top, t)
            is_leaf[t, leaf] = True
            mass[t, leaf] = 1
            for k in range(d):
                lo[t, leaf, k] = x[k]
                hi[t, leaf, k] = x[k]
            is_leaf[t, inner] = False
            cut_dim[t, inner] = dim
            cut_val[t, inner] = cut
            up = parent[t, node]
            parent[t, inner] = up
            if x[dim] <= cut:
                left[t, inner] = leaf
                right[t, inner] = node
            else:
                left[t, inner] = node
                right[t, inner] = leaf
            parent[t, leaf] = inner
            parent[t, node] = inner
            if up == NONE:
                root[t] = inner
            elif left[t, up] == node:
                left[t, up] = inner
            else:
                right[t, up] = inner
            _refresh_up(t, inner, left, right, parent, lo, hi, mass, d)
            return leaf
        if x[cut_dim[t, node]] <= cut_val[t, node]:
            node = left[t, node]
        else:
            node = right[t, node]


@nb.njit(cache=True)
def _delete(t, leaf, root, left, right, parent, lo, hi, mass, is_leaf, free, free_top, d):
    """Remove one copy of the point at `leaf` from tree t."""
    if mass[t, leaf] > 1:
        node = leaf
        while node != NONE:
            mass[t, node] -= 1
            node = parent[t, node]
        return
    up = parent[t, leaf]
    _release(free, free_top, t, leaf)
    if up == NONE:
        root[t] = NONE
        return
    sibling = right[t, up] if left[t, up] == leaf else left[t, up]
    grand = parent[t, up]
    parent[t, sibling] = grand
    if grand == NONE:
        root[t] = sibling
    elif left[t, grand] == up:
        left[t, grand] = sibling
    else:
        right[t, grand] = sibling
    _release(free, free_top, t, up)
    if grand != NONE:
        _refresh_up(t, grand, left, right, parent, lo, hi, mass, d)


@nb.njit(cache=True)
def _heap_push(w, ids, size, t, weight, leaf):
    i = size[t]
    size[t] += 1
    w[t, i] = weight
    ids[t, i] = leaf
    while i > 0:
        p = (i - 1) // 2
        if w[t, p] >= w[t, i]:
            break
        w[t, p], w[t, i] = w[t, i], w[t, p]
        ids[t, p], ids[t, i] = ids[t, i], ids[t, p]
        i = p


@nb.njit(cache=True)
def _heap_replace_top(w, ids, size, t, weight, leaf):
    """Replace the largest priority with (weight, leaf); return the evicted leaf."""
    evicted = ids[t, 0]
    w[t, 0] = weight
    ids[t, 0] = leaf
    i = 0
    n = size[t]
    while True:
        a = 2 * i + 1
        b = a + 1
        m = i
        if a < n and w[t, a] > w[t, m]:
            m = a
        if b < n and w[t, b] > w[t, m]:
            m = b
        if m == i:
            break
        w[t, m], w[t, i] = w[t, i], w[t, m]
        ids[t, m], ids[t, i] = ids[t, i], ids[t, m]
        i = m
    return evicted


@nb.njit(cache=True)
def _process(
    values,
    out,
    shingle,
    seq,
    lam,
    sample_size,
    root,
    left,
    right,
    parent,
    cut_dim,
    cut_val,
    lo,
    hi,
    mass,
    is_leaf,
    free,
    free_top,
    rng,
    heap_w,
    heap_id,
    heap_size,
    warmup,
):
    trees = root.shape[0]
    d = shingle.shape[0]
    x = np.empty(d)
    for i in range(values.shape[0]):
        # Shift the shingle: oldest value out, newest in.
        for k in range(d - 1):
            shingle[k] = shingle[k + 1]
        shingle[d - 1] = values[i]
        seq[0] += 1
        for k in range(d):
            x[k] = shingle[k]
        if seq[0] < d:
            out[i] = 0.0
            continue
        total = 0.0
        for t in range(trees):
            total += _score_tree(t, x, root, left, right, cut_dim, cut_val, lo, hi, mass, is_leaf)
        out[i] = total / trees if seq[0] - d + 1 > warmup else 0.0
        for t in range(trees):
            weight = -lam * seq[0] + math.log(-math.log(_uniform(rng, t)))
            full = heap_size[t] >= sample_size
            if full:
                if weight >= heap_w[t, 0]:
                    continue  # not sampled: the tree is unchanged
                evicted = heap_id[t, 0]
                _delete(
                    t, evicted, root, left, right, parent, lo, hi, mass, is_leaf, free, free_top, d
                )
            leaf = _insert(t, x, root, left, right, parent, cut_dim, cut_val, lo, hi, mass,
                           is_leaf, free, free_top, rng)  # fmt: skip
            if full:
                _heap_replace_top(heap_w, heap_id, heap_size, t, weight, leaf)
            else:
                _heap_push(heap_w, heap_id, heap_size, t, weight, leaf)


def _narrowest(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.int64 or array.size < 64:
        return array
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array


# Kept in memory for speed, rebuilt on restore rather than stored. A leaf's box is its point,
# so `lo` holds the leaves' points (there is no separate point array: a quarter of the
# detector) and is stored; `hi` is rebuilt from it.
_DERIVED = ("hi",)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CONTAINER = b"SPARR001"
# An array's bytes may be stored shuffled (byte 0 of every element, then byte 1, ...), so the
# high bytes of a float or a small int sit together and compress; pack_arrays shuffles an
# array when that compresses it smaller, which is most of a detector's arrays but not its
# forest's `lo` (points repeated whole compress better unshuffled). The index records it
# (a fifth field, 1). On the default detector after 20,000 points of a random walk: 56 KB,
# against 61 KB with no array shuffled.
_SHUFFLED = 1
# Arrays under this size are shuffled without a trial: trying both ways for every array
# made a snapshot of the default detector cost 1.44 ms to pack (0.18 ms unshuffled), for
# 27 bytes less than trying only the larger ones (0.77 ms).
_TRIED_BYTES = 4096


def _shuffled(array: np.ndarray) -> bytes:
    size = array.dtype.itemsize
    return array.view(np.uint8).reshape(-1, size).T.tobytes() if size > 1 else array.tobytes()


def _unshuffled(raw: bytes, dtype: np.dtype, shape: list[int], at: int) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    planes = np.frombuffer(raw, np.uint8, count * dtype.itemsize, at)
    return planes.reshape(dtype.itemsize, count).T.copy().view(dtype).reshape(shape)


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays as one compressed blob: a small JSON index and the arrays' bytes (each
    shuffled where that compresses it smaller), zstd level 1 (pyarrow's codec). Against npz
    in zlib level 1 on a detector: 553 KB, not 788 (525 KB since the points live in `lo`);
    3 ms to pack, not 25; a restore in 3 ms, not 17 (decompression and npz's zip parsing
    were most of it)."""
    import pyarrow as pa

    codec = pa.Codec("zstd", compression_level=1)
    index, parts, offset = [], [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        plain, shuffled = array.tobytes(), _shuffled(array)
        smaller = array.itemsize > 1 and (
            array.nbytes < _TRIED_BYTES  # small: shuffled, untried (the trials cost more)
            or len(codec.compress(shuffled, asbytes=True))
            < len(codec.compress(plain, asbytes=True))
        )
        index.append([name, array.dtype.str, list(array.shape), offset]
                     + ([_SHUFFLED] if smaller else []))  # fmt: skip
        parts.append(shuffled if smaller else plain)
        offset += array.nbytes
    header = json.dumps(index).encode()
    raw = b"".join([_CONTAINER, len(header).to_bytes(4, "little"), header, *parts])
    return len(raw).to_bytes(8, "little") + codec.compress(raw, asbytes=True)


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of `pack_arrays` (read-only views into one buffer, or copies where stored
    shuffled), or of the npz-in-zlib blobs written before it."""
    if data[8:12] != _ZSTD_MAGIC:
        with np.load(io.BytesIO(zlib.decompress(data))) as old:
            return {name: old[name] for name in old.files}
    import pyarrow as pa

    size = int.from_bytes(data[:8], "little")
    raw = pa.decompress(data[8:], decompressed_size=size, codec="zstd", asbytes=True)
    header_len = int.from_bytes(raw[8:12], "little")
    base = 12 + header_len
    out = {}
    for name, dtype, shape, offset, *how in json.loads(raw[12:base]):
        dtype = np.dtype(dtype)
        if how == [_SHUFFLED]:
            out[name] = _unshuffled(raw, dtype, shape, base + offset)
        else:
            count = int(np.prod(shape)) if shape else 1
            out[name] = np.frombuffer(raw, dtype, count, base + offset).reshape(shape)
    return out


_ARRAYS = (
    "shingle",
    "seq",
    "root",
    "left",
    "right",
    "parent",
    "cut_dim",
    "cut_val",
    "lo",
    "hi",
    "mass",
    "is_leaf",
    "free",
    "free_top",
    "rng",
    "heap_w",
    "heap_id",
    "heap_size",
)


@dataclass
class RandomCutForest:
    """Streaming RCF over one series. `update(values)` scores then learns each value in order."""

    trees: int = 100
    sample_size: int = 256
    shingle_size: int = 1
    time_decay: float = 100000.0  # lambda = 1 / time_decay
    seed: int = 42
    warmup: int = 64  # points before the first non-zero score

    def __post_init__(self) -> None:
        for name, (dtype, shape) in self.layout().items():
            setattr(self, name, np.zeros(shape, dtype=dtype))
        t, nodes = self.trees, 2 * self.sample_size
        self.root[:] = NONE
        self.left[:] = NONE
        self.right[:] = NONE
        self.parent[:] = NONE
        self.free[:] = np.arange(nodes)[::-1]
        self.free_top[:] = nodes
        self.rng[:] = np.random.SeedSequence(self.seed).generate_state(t, dtype=np.uint64)

    def layout(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """Every array of the state: dtype and shape. Node indices, masses and cut dimensions
        are as narrow as the tree capacity allows (they are bounded by it): the same values,
        a quarter of the memory of int64."""
        t, s, d = self.trees, self.sample_size, self.shingle_size
        nodes = 2 * s
        index = np.int16 if nodes < np.iinfo(np.int16).max else np.int32
        return {
            "shingle": (np.float64, (d,)),
            "seq": (np.int64, (1,)),
            "root": (np.int64, (t,)),
            "left": (index, (t, nodes)),
            "right": (index, (t, nodes)),
            "parent": (index, (t, nodes)),
            "cut_dim": (np.int8 if d < 128 else np.int32, (t, nodes)),
            "cut_val": (np.float64, (t, nodes)),
            "lo": (np.float64, (t, nodes, d)),
            "hi": (np.float64, (t, nodes, d)),
            "mass": (index, (t, nodes)),
            "is_leaf": (np.bool_, (t, nodes)),
            "free": (index, (t, nodes)),
            "free_top": (np.int64, (t,)),
            "rng": (np.uint64, (t,)),
            "heap_w": (np.float64, (t, s)),
            "heap_id": (index, (t, s)),
            "heap_size": (np.int64, (t,)),
        }

    @classmethod
    def attach(cls, params: tuple, arrays: dict[str, np.ndarray]) -> RandomCutForest:
        """A forest whose state is `arrays` as they are (views into shared memory, say): no
        allocation, no copy."""
        forest = cls.__new__(cls)
        (forest.trees, forest.sample_size, forest.shingle_size, forest.time_decay, forest.seed,
         forest.warmup) = params  # fmt: skip
        for name in forest.layout():
            setattr(forest, name, arrays[name])
        return forest

    @property
    def params(self) -> tuple:
        return (self.trees, self.sample_size, self.shingle_size, self.time_decay, self.seed,
                self.warmup)  # fmt: skip

    def update(self, values: np.ndarray) -> np.ndarray:
        """Scores (raw, AWS scale) of `values`, each computed before it is learnt."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        out = np.empty(len(values))
        _process(
            values,
            out,
            self.shingle,
            self.seq,
            1.0 / self.time_decay,
            self.sample_size,
            self.root,
            self.left,
            self.right,
            self.parent,
            self.cut_dim,
            self.cut_val,
            self.lo,
            self.hi,
            self.mass,
            self.is_leaf,
            self.free,
            self.free_top,
            self.rng,
            self.heap_w,
            self.heap_id,
            self.heap_size,
            self.warmup,
        )
        return out

    def score01(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(raw / math.log2(self.sample_size), 0.0, 1.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole state as arrays; node indices and counts in the narrowest integer type
        that holds them (they are bounded by the tree capacity), which halves the state."""
        params = np.array(
            [self.trees, self.sample_size, self.shingle_size, self.seed, self.warmup],
            dtype=np.int64,
        )
        arrays = {"params": params, "time_decay": np.array([self.time_decay])}
        for name in _ARRAYS:
            if name == "lo":
                # Only the leaves' rows are state (their points); inner nodes' boxes are rebuilt
                # on restore, so they are stored as zeros, which compress (615 KB a snapshot
                # otherwise, 525 KB so).
                arrays[name] = np.where(self.is_leaf[..., None], self.lo, 0.0)
            elif name not in _DERIVED:
                arrays[name] = _narrowest(getattr(self, name))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any) -> RandomCutForest:
        trees, sample_size, shingle_size, seed, warmup = (int(v) for v in arrays["params"])
        forest = cls(trees, sample_size, shingle_size, float(arrays["time_decay"][0]), seed, warmup)
        for name in _ARRAYS:
            if name in _DERIVED:
                continue
            # A snapshot from before the points moved into `lo` stores them as `point`.
            stored = arrays["point"] if name == "lo" and "lo" not in arrays else arrays[name]
            # Back to the dtype the kernels expect (a fresh forest's arrays have it).
            setattr(forest, name, stored.astype(getattr(forest, name).dtype, copy=True))
        _recompute_boxes(forest.root, forest.left, forest.right, forest.is_leaf, forest.lo,
                         forest.hi)  # fmt: skip
        return forest

    def to_bytes(self) -> bytes:
        return pack_arrays(self.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> RandomCutForest:
        return cls.from_arrays(unpack_arrays(data))
