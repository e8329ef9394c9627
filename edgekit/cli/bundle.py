"""`edgekit bundle ARTIFACT --device NAME -o DIR`: the .pte, the kernels it calls, the native
runner, a CMake project and a C example, for an app developer's toolchain (edgekit/bundle.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def bundle_cmd(
    artifact: Path = typer.Argument(..., help="an export folder or its model.pte (edgekit export --device NAME)",
                                    show_default=False),
    device: str = typer.Option(..., "--device", help="android-arm64 | ios-arm64 | raspberry-pi-5 | host-x86 "
                               "(`edgekit devices`)", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="new folder for the bundle", show_default=False),
) -> None:
    """Write a self-contained folder that builds the model's runner on a device's toolchain."""
    from edgekit.bundle import bundle
    from edgekit.errors import EdgekitError
    if not artifact.exists():
        raise EdgekitError(f"'{artifact}' does not exist", fix="pass an export folder or its model.pte")
    bundle(artifact, device, out)
    typer.echo(f"wrote {out} (build: cmake -S {out} -B {out}/build -DCMAKE_PREFIX_PATH=<ExecuTorch>; "
               f"see {out}/README.md)")
