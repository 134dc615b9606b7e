"""Product quantisation of compressed vectors: faiss trains the codebooks and encodes on the host,
JAX decodes on the device.

    codebooks = train_codebooks(vectors, m=64, bits=8)          # [m, 2**bits, dim // m] float32
    codes = encode(vectors, codebooks, bits=8)                   # [n, ceil(m * bits / 8)] uint8
    decode(codes, codebooks, bits=8)                             # [n, dim] float32, on the device

A vector is cut into m sub-vectors of dim / m values; each is replaced by the index of its nearest
centroid in its sub-space's codebook (k-means with 2**bits centroids), so a vector takes
m * bits / 8 bytes instead of 2 * dim (bf16). Codes are faiss's own layout (each index in `bits`
bits, low bits first, packed into bytes), so faiss can read them back and tests compare against it.

Why faiss and not an own JAX k-means: faiss's k-means and nearest-centroid search are the
reference implementation of this quantiser (the paper's storage figure uses it), multi-threaded on
the CPU and well tested; training runs once per store on a sample and encoding is bounded by the
encoder, not by the quantiser. Decoding is the part on the request path, and it is a gather of
centroids that JAX runs on the device next to the decoder. faiss is optional:
`pip install 'arc-jax[pq]'`.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.errors import DataError

log = logging.getLogger("arc_jax.inference")


def parse_pq(spec: str) -> tuple[int, int]:
    """`M:BITS` (the --pq option): M sub-quantisers of 2**BITS centroids each."""
    try:
        m, bits = (int(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(f"--pq {spec!r}: expected M:BITS, two integers (e.g. 64:8)") from None
    if m < 1 or not 1 <= bits <= 16:
        raise ValueError(f"--pq {spec!r}: M must be >= 1 and BITS in 1..16")
    return m, bits


def code_size(m: int, bits: int) -> int:
    """Bytes per vector: m indices of `bits` bits, packed."""
    return -(-m * bits // 8)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise DataError("product quantisation needs faiss: pip install 'arc-jax[pq]' (faiss-cpu)") from None
    return faiss


def _quantizer(dim: int, m: int, bits: int, codebooks: np.ndarray | None = None):
    faiss = _faiss()
    if dim % m:
        raise ValueError(f"--pq {m}:{bits}: M={m} must divide the vector width {dim}")
    pq = faiss.ProductQuantizer(dim, m, bits)
    if codebooks is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, np.float32).ravel(), pq.centroids)
    return pq


def train_codebooks(vectors: np.ndarray, m: int, bits: int, seed: int = 1234) -> np.ndarray:
    """Per sub-space k-means (faiss) on `vectors` [n, dim]: codebooks [m, 2**bits, dim // m] float32."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    n, dim = vectors.shape
    if n < 2 ** bits:
        raise ValueError(f"--pq {m}:{bits}: {n} training vectors for {2 ** bits} centroids per sub-space; "
                         "index more text or use fewer bits")
    pq = _quantizer(dim, m, bits)
    pq.cp.seed = seed
    if n < 39 * 2 ** bits:  # faiss would print this once per sub-space
        log.warning("product quantisation %d:%d trained on %d vectors; faiss advises at least %d", m, bits, n,
                    39 * 2 ** bits)
        pq.cp.min_points_per_centroid = 1
    pq.train(vectors)
    return _faiss().vector_to_array(pq.centroids).reshape(m, 2 ** bits, dim // m)


def encode(vectors: np.ndarray, codebooks: np.ndarray, bits: int) -> np.ndarray:
    """faiss codes [n, code_size] uint8 of `vectors` [n, dim]: each sub-vector's nearest centroid."""
    m = codebooks.shape[0]
    vectors = np.ascontiguousarray(vectors, np.float32)
    return _quantizer(vectors.shape[1], m, bits, codebooks).compute_codes(vectors)


def faiss_decode(codes: np.ndarray, codebooks: np.ndarray, bits: int) -> np.ndarray:
    """faiss's own reconstruction of `codes` (what `decode` must equal)."""
    m, _, dsub = codebooks.shape
    return _quantizer(m * dsub, m, bits, codebooks).decode(np.ascontiguousarray(codes, np.uint8))


@functools.partial(jax.jit, static_argnames="bits")
def _decode(codes, codebooks, bits: int):
    m, _, dsub = codebooks.shape
    n = codes.shape[0]
    packed = jnp.unpackbits(codes, axis=-1, bitorder="little")[:, : m * bits].reshape(n, m, bits)
    index = jnp.sum(packed.astype(jnp.int32) << jnp.arange(bits, dtype=jnp.int32), axis=-1)  # [n, m]
    return codebooks[jnp.arange(m)[None, :], index].reshape(n, m * dsub)


def decode(codes: np.ndarray, codebooks, bits: int) -> jax.Array:
    """Vectors [n, dim] float32 from faiss codes, on the device: unpack the indices, gather the
    centroids. Rows are padded to a power of two (few compiled shapes) and cut again."""
    n = len(codes)
    rows = max(8, 1 << (max(n, 1) - 1).bit_length())
    padded = np.zeros((rows, codes.shape[1]), np.uint8)
    padded[:n] = codes
    return _decode(jnp.asarray(padded), jnp.asarray(codebooks, jnp.float32), bits)[:n]
