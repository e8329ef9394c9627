"""Run a compiled network in Lava, which lives in a separate Python 3.10 environment.

lava-nc 0.10.0 (the last release) fails to import on Python 3.11, so this process never
imports lava. Instead it writes the network and the input to npz/json files in a temporary
folder and runs ``.venv-lava/bin/python edgekit/neuro/_lava_worker.py request.json`` as a
subprocess in its own process group, bounded by a timeout; on timeout (a hung Lava runtime)
the whole group is killed, so no Lava process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.neuro.compiled import CompiledNetwork

WORKER = Path(__file__).with_name("_lava_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "EDGEKIT_LAVA_VENV"


def lava_python(venv: str | os.PathLike | None = None) -> Path:
    """The side environment's interpreter; an EdgekitError naming `make setup` if missing."""
    venv = Path(venv or os.environ.get(ENV_VAR) or REPO_ROOT / ".venv-lava")
    py = venv / "bin" / "python"
    if not py.exists():
        raise EdgekitError(f"the Lava side environment is missing ('{venv}')",
                           expected=f"{py} (Python 3.10 with lava-nc 0.10.0)",
                           got="no such interpreter",
                           fix="run `make setup` (it creates .venv-lava from "
                               "requirements-lava.txt), or set EDGEKIT_LAVA_VENV")
    return py


@dataclass
class LavaResult:
    spikes: list                # per population (S, T, N) bool
    u: list | None
    v: list | None
    wall_s: float               # seconds inside Lava's run() calls
    build_s: float
    total_s: float              # whole subprocess, Lava import included


def run_lava(net: CompiledNetwork, spikes: np.ndarray, steps: int | None = None, *,
             record_state: bool = False, record_spikes: bool = True, mode: str = "fixed",
             timeout_s: float = 300.0,
             venv: str | os.PathLike | None = None) -> LavaResult:
    """Run samples (S, T, n_in) (or (T, n_in)) through Lava, each from rest.

    mode "fixed" uses ``Loihi2SimCfg(select_tag="fixed_pt")`` (bit-accurate models);
    "float" uses ``floating_pt``.
    """
    from edgekit.neuro.sim import Simulator

    py = lava_python(venv)
    x = Simulator(net, "fixed")._check_input(spikes, steps)        # same checks as the sim
    S, T, _ = x.shape
    record = (["spikes"] if record_spikes or record_state else []) + \
        (["u", "v"] if record_state else [])
    with tempfile.TemporaryDirectory(prefix="edgekit-lava-") as tmpd:
        tmp = Path(tmpd)
        np.savez(tmp / "net.npz", **net.arrays)
        np.savez(tmp / "input.npz", spikes=x.astype(np.uint8))
        req = {"network": str(tmp / "net.npz"), "input": str(tmp / "input.npz"),
               "spec": json.loads(json.dumps(net.spec(), default=_np_default)),
               "steps": T, "record": record,
               "select_tag": "fixed_pt" if mode == "fixed" else "floating_pt",
               "result": str(tmp / "result.npz")}
        (tmp / "request.json").write_text(json.dumps(req))
        t0 = time.perf_counter()
        _run_bounded([str(py), str(WORKER), str(tmp / "request.json")], timeout_s)
        total = time.perf_counter() - t0
        res = tmp / "result.npz"
        if not res.exists():
            raise EdgekitError("the Lava worker finished without writing its result",
                               fix="rerun with a smaller network; report a bug if it persists")
        with np.load(res) as z:
            P = len(net.populations)
            sp = [z[f"spikes_{p}"].astype(bool) for p in range(P)] if "spikes" in record else None
            u = [z[f"u_{p}"] for p in range(P)] if record_state else None
            v = [z[f"v_{p}"] for p in range(P)] if record_state else None
            return LavaResult(sp, u, v, float(z["wall_s"]), float(z["build_s"]), total)


def _run_bounded(cmd: list[str], timeout_s: float) -> None:
    """Run cmd in a new process group; kill the whole group on timeout or error."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)            # the 3.10 side must not see 3.11 packages
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise EdgekitError(f"the Lava run did not finish within {timeout_s:.0f} s and was killed",
                           fix="run fewer steps or samples, or raise the timeout") from None
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        _kill_group(proc)                  # Lava leaves runtime children behind on errors
    if proc.returncode != 0:
        tail = "\n".join((err or "").strip().splitlines()[-6:])
        raise EdgekitError("the Lava worker failed", got=f"exit status {proc.returncode}: {tail}",
                           fix="check the side environment with `make setup`")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # the leader is gone; make sure no child of the group survives
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return


def _np_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
