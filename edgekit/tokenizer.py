"""Tokenizers, offline. RWKV World (rwkv_vocab_v20230424) is read from the `rwkv`
package's data file; HF `tokenizer.json` goes through the `tokenizers` library.

The World vocabulary is encoded greedily, longest byte match first — the rule of
BlinkDL's TRIE_TOKENIZER. Lines of the vocab file are parsed with ast.literal_eval,
never eval.
"""

from __future__ import annotations

import ast
import functools
from importlib import resources
from pathlib import Path

from edgekit.errors import EdgekitError

WORLD_VOCAB = "rwkv_vocab_v20230424"


class WorldTokenizer:
    name = WORLD_VOCAB

    def __init__(self, vocab_file: str | Path):
        self.id_to_bytes: dict[int, bytes] = {}
        with open(vocab_file, encoding="utf-8") as f:
            for line in f:
                idx = int(line[:line.index(" ")])
                tok = ast.literal_eval(line[line.index(" "):line.rindex(" ")].strip())
                tok = tok.encode("utf-8") if isinstance(tok, str) else tok
                if len(tok) != int(line[line.rindex(" "):]):
                    raise ValueError(f"{vocab_file}: bad length on line for token {idx}")
                self.id_to_bytes[idx] = tok
        self.bytes_to_id = {b: i for i, b in self.id_to_bytes.items()}
        self.max_len = max(len(b) for b in self.bytes_to_id)
        self.vocab_size = max(self.id_to_bytes) + 1

    def encode(self, text: str) -> list[int]:
        src, out, i = text.encode("utf-8"), [], 0
        while i < len(src):
            for n in range(min(self.max_len, len(src) - i), 0, -1):
                tid = self.bytes_to_id.get(src[i:i + n])
                if tid is not None:
                    out.append(tid)
                    i += n
                    break
            else:  # every single byte is in the vocabulary; unreachable for valid files
                raise ValueError(f"byte {src[i]} not in vocabulary")
        return out

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.id_to_bytes.get(i, b"") for i in ids)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


MAX_TOKENIZER_BYTES = 256 << 20     # the largest HF tokenizer.json files are ~30 MB


class HFTokenizer:
    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer
        path = Path(path)
        self.name = str(path)
        fix = "pass a Hugging Face tokenizer.json (tokenizers' Tokenizer.save), or use --tokens 1,2,3"
        if not path.is_file():
            raise EdgekitError(f"tokenizer '{path}' does not exist or is not a file", fix=fix)
        size = path.stat().st_size
        if size > MAX_TOKENIZER_BYTES:
            raise EdgekitError(f"tokenizer '{path}' has {size:,} bytes",
                               expected=f"at most {MAX_TOKENIZER_BYTES >> 20} MB", fix=fix)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:   # tokenizers raises its own Exception subclass for any bad file
            first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise EdgekitError(f"tokenizer '{path}' is not a readable tokenizer.json ({first})", fix=fix) from None
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


@functools.cache
def world_tokenizer() -> WorldTokenizer:
    try:
        path = resources.files("rwkv") / f"{WORLD_VOCAB}.txt"
    except ModuleNotFoundError:
        raise EdgekitError("the RWKV World vocabulary is not installed",
                           fix="pip install rwkv==0.8.32 (make setup does this)") from None
    return WorldTokenizer(path)


def get_tokenizer(name: str | None, base_dir: Path | None = None):
    """The tokenizer a manifest names: 'rwkv_vocab_v20230424', 'tokenizer.json', or None."""
    if name is None:
        return None
    if name == WORLD_VOCAB:
        return world_tokenizer()
    if base_dir is not None and "/" not in name and name not in (".", "..") and (base_dir / name).is_file():
        return HFTokenizer(base_dir / name)
    raise EdgekitError(f"tokenizer '{name}' named by the manifest is not available",
                       fix="pass --tokens 1,2,3 instead of --prompt, or re-export with the tokenizer")
