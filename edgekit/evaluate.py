"""Held-out quality: bits per byte of a token model over a corpus, beside general-purpose
compressors on the same bytes (`edgekit eval`).

Each file is streamed through the session on its own (the state reset between files), in
chunks, so memory does not grow with the file: the logits of one chunk are scored and
dropped. Bits per byte = -log2 p(next token) summed over every predicted token, divided by
the UTF-8 bytes of those tokens (a file's first token has no context and is not scored).
The compressors see each file on its own too: gzip -9, xz -9e, zstd -19, as bits per byte
of the whole file.
"""

from __future__ import annotations

import gzip
import lzma
import math
import time
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError

CHUNK = 512


def compressors() -> dict[str, Callable[[bytes], int]]:
    import zstandard
    z = zstandard.ZstdCompressor(level=19)
    return {"gzip -9": lambda b: len(gzip.compress(b, 9, mtime=0)),
            "xz -9e": lambda b: len(lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
            "zstd -19": lambda b: len(z.compress(b))}


def corpus_bytes(corpus: str, max_bytes: int | None = None) -> list[tuple[str, bytes]]:
    """The corpus's files, cut after max_bytes in total (the last file truncated)."""
    from edgekit.data.stdlib import iter_corpus
    out, n = [], 0
    for rel, data in iter_corpus(corpus):
        if max_bytes is not None and n + len(data) > max_bytes:
            data = data[:max_bytes - n]
        if data:
            out.append((rel, data))
            n += len(data)
        if max_bytes is not None and n >= max_bytes:
            break
    return out


def _check_tokenizer(tok, files) -> None:
    if tok is None:
        raise EdgekitError("the model has no tokenizer, so its bits per byte cannot be measured",
                           fix="export it with --tokenizer tokenizer.json, or pass --tokenizer")
    probe = files[0][1][:4096].decode("utf-8", errors="strict") + "\n\t\u00e9\u4e2d"
    if tok.decode_bytes(tok.encode(probe)) != probe.encode("utf-8"):
        raise EdgekitError(f"the tokenizer '{getattr(tok, 'name', tok)}' cannot encode text bytes losslessly "
                           "(encode then decode changes the text)",
                           fix="evaluate a model whose tokenizer covers every byte (byte-level or byte fallback)")


def bits_per_byte(session, files, progress: Callable[[int], None] | None = None) -> dict:
    """Score `files` [(name, bytes)] with a StreamingSession of a token model."""
    tok = session.tokenizer
    _check_tokenizer(tok, files)
    bits, scored_bytes, tokens = 0.0, 0, 0
    t0 = time.perf_counter()
    for _, data in files:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise EdgekitError("a corpus file is not UTF-8 text", fix="the corpus is damaged") from None
        ids = tok.encode(text)
        if len(ids) < 2:
            continue
        session.reset()
        prev = None
        for c0 in range(0, len(ids), CHUNK):
            chunk = ids[c0:c0 + CHUNK]
            ys = np.asarray(session.forward_seq(chunk, keep=True), dtype=np.float64)   # (n, V)
            # the logits after token j predict token j+1; a file's first token is not scored
            if prev is None:
                logits, targets = ys[:-1], np.asarray(chunk[1:])
            else:
                logits, targets = np.concatenate([prev[None], ys[:-1]]), np.asarray(chunk)
            if len(targets):
                m = logits.max(-1, keepdims=True)
                lse = (m[:, 0] + np.log(np.exp(logits - m).sum(-1)))
                bits += float((lse - logits[np.arange(len(targets)), targets]).sum()) / math.log(2)
                tokens += len(targets)
            prev = ys[-1]
        scored_bytes += len(data) - len(tok.decode_bytes(ids[:1]))
        if progress:
            progress(len(data))
    seconds = time.perf_counter() - t0
    if not scored_bytes:
        raise EdgekitError("the corpus selection holds no text to score", fix="pass a larger --max-bytes")
    return {"bits_per_byte": bits / scored_bytes, "scored_bytes": scored_bytes, "tokens": tokens,
            "ms_per_token": 1e3 * seconds / max(tokens, 1)}


def compressor_bits_per_byte(files) -> dict[str, float]:
    total = sum(len(d) for _, d in files)
    return {name: 8 * sum(fn(d) for _, d in files) / total for name, fn in compressors().items()}
