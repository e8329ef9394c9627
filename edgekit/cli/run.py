"""`edgekit run ARTIFACT (--prompt TEXT | --tokens 1,2,3) --steps N [--json]`"""

from __future__ import annotations

import codecs
import json
import sys
from pathlib import Path

import typer

from edgekit.cli import app
from edgekit.errors import EdgekitError


def parse_tokens(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise EdgekitError(f"--tokens '{text}' is not a comma-separated list of integers",
                           fix="pass e.g. --tokens 1,2,3") from None


@app.command("run")
def run_cmd(
    artifact: Path = typer.Argument(..., help="model.onnx, model.pte, their folder, or a checkpoint (torch)"),
    prompt: str = typer.Option(None, "--prompt", help="text, encoded with the model's tokenizer"),
    tokens: str = typer.Option(None, "--tokens", help="token ids, e.g. 1,2,3"),
    steps: int = typer.Option(32, "--steps", help="tokens to generate"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object {tokens, text}"),
    state_in: Path = typer.Option(None, "--state-in", help="resume from a saved state"),
    state_out: Path = typer.Option(None, "--state-out", help="save the state at the end"),
    top_p: float = typer.Option(None, "--top-p", help="sample with nucleus top-p (default: greedy)"),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    backend: str = typer.Option(None, "--backend", help="onnxruntime | executorch | torch"),
    threads: int = typer.Option(None, "--threads"),
) -> None:
    """Stream tokens through a model; prints them as they are generated."""
    from edgekit.runtimes.session import StreamingSession
    if prompt is not None and tokens is not None:
        raise EdgekitError("--prompt and --tokens both given", fix="pass one of them")
    if steps < 0:
        raise EdgekitError(f"--steps {steps} is negative", fix="pass --steps 0 or more")
    sess = StreamingSession(artifact, backend=backend, threads=threads)
    tok = None
    if prompt is not None:
        tok = sess.tokenizer
        if tok is None:
            raise EdgekitError(f"'{artifact}' has no tokenizer for --prompt", fix="pass token ids with --tokens 1,2,3")
        ids = tok.encode(prompt)
    elif tokens is not None:
        ids = parse_tokens(tokens)
    else:
        ids = []
    if state_in is not None:
        sess.load_state(state_in)
    elif not ids:
        raise EdgekitError("nothing to start from", fix="pass --prompt TEXT, --tokens 1,2,3 or --state-in FILE")
    if tok is None:
        try:
            tok = sess.tokenizer
        except EdgekitError:
            tok = None
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def show(t: int) -> None:
        if as_json:
            return
        if tok is not None:
            sys.stdout.write(dec.decode(tok.decode_bytes([t])))
        else:
            sys.stdout.write(f"{t} ")
        sys.stdout.flush()

    out = sess.generate(steps, prompt=ids, top_p=top_p, temperature=temperature, seed=seed, on_token=show)
    if state_out is not None:
        sess.save_state(state_out)
    text = tok.decode(out) if tok is not None else None
    if as_json:
        print(json.dumps({"tokens": out, "text": text}))
    else:
        sys.stdout.write(dec.decode(b"", final=True) + "\n")
