"""ONNX Runtime backend, allocation-free per step.

State lives in two preallocated sets of numpy arrays, A and B, wrapped as OrtValues
(which alias numpy memory on CPU). Two IO bindings are made once: even steps read A and
write B, odd steps read B and write A. A step writes the token into a bound input
buffer and calls `run_with_iobinding`; nothing is allocated and nothing is copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import Backend

_DT = {"float32": np.float32, "int64": np.int64, "float16": np.float16, "int32": np.int32}


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, entry, n_inputs: int, threads: int | None = None,
                 state_specs=None):
        """state_specs (the manifest's) is not needed: the state is the graph's extra inputs."""
        import os
        if threads is not None and threads < 1:
            raise EdgekitError(f"--threads {threads} is not positive", fix="pass --threads 1 or more")
        self.threads = threads or os.cpu_count() or 1      # explicit, so bench can report it
        self.n_inputs = n_inputs
        self.sess = _session(path, self.threads)
        _check_specs(path, entry, self.sess)            # before any buffer is sized by the manifest
        state_in = entry.inputs[n_inputs:]
        self.names = [s.name for s in state_in]
        self.sets = [[_zeros(s) for s in state_in], [_zeros(s) for s in state_in]]
        self.cur = 0          # index of the set holding the live state
        self.xs, self.y, self.bindings = self._bind(self.sess, entry)

    def _bind(self, sess, entry):
        """Input buffers, the y buffer and two IO bindings of sess (this model's step graph, or
        its prefill graph): each reads the state from one of the two live sets and writes the
        new state into the other, so a run swaps the sets and no state is copied."""
        import onnxruntime as ort
        x_specs, state_in = entry.inputs[:self.n_inputs], entry.inputs[self.n_inputs:]
        y_spec, *state_out = entry.outputs
        xs, y = [_zeros(s) for s in x_specs], _zeros(y_spec)
        bindings = []
        for src, dst in ((0, 1), (1, 0)):
            io = sess.io_binding()
            for s, buf in zip(x_specs, xs):
                io.bind_cpu_input(s.name, buf)
            for s_in, s_out, a, b in zip(state_in, state_out, self.sets[src], self.sets[dst]):
                io.bind_ortvalue_input(s_in.name, ort.OrtValue.ortvalue_from_numpy(a))
                io.bind_ortvalue_output(s_out.name, ort.OrtValue.ortvalue_from_numpy(b))
            io.bind_ortvalue_output(y_spec.name, ort.OrtValue.ortvalue_from_numpy(y))
            bindings.append(io)
        return xs, y, bindings

    def attach_prefill(self, program, seq_len: int) -> None:
        """program: (path, entry) of the prefill graph, bound to this backend's own two state
        sets: a prefill chunk reads and writes the live state where it is, with no copy."""
        path, entry = program
        self._pre_sess = _session(path, self.threads)
        _check_specs(path, entry, self._pre_sess)
        if [s.name for s in entry.inputs[self.n_inputs:]] != self.names:
            raise EdgekitError(f"'{path}' carries a different state than the step graph",
                               fix="the folder mixes two exports; export again")
        self._pre_xs, self._pre_y, self._pre_bindings = self._bind(self._pre_sess, entry)
        self.prefill_len = seq_len

    def prefill(self, xs):
        self._pre_xs[0][...] = xs
        self._pre_sess.run_with_iobinding(self._pre_bindings[self.cur])
        self.cur ^= 1
        return self._pre_y

    def step(self, xs):
        for buf, x in zip(self.xs, xs):
            buf[...] = x
        self.sess.run_with_iobinding(self.bindings[self.cur])
        self.cur ^= 1
        return self.y

    def get_state(self):
        return {n: a.copy() for n, a in zip(self.names, self.sets[self.cur])}

    def set_state(self, state):
        for n, a in zip(self.names, self.sets[self.cur]):
            a[...] = state[n]


def _zeros(spec) -> np.ndarray:
    return np.zeros(spec.shape, dtype=_DT[spec.dtype])


def _session(path: Path, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # errors only: ORT warns at every load that a tied embedding's weight "appears in graph
    # inputs", which the exporter does on purpose so that ORT holds it once (export/onnx.py)
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(e).strip().splitlines()[0][:200]
        if "InferenceError" in first or "NOT_IMPLEMENTED" in first or "Could not find an implementation" in first:
            # a well-formed file this onnxruntime cannot run (graph/type checks, a missing kernel)
            raise EdgekitError(f"'{path}' is a valid ONNX file that onnxruntime {ort.__version__} "
                               f"cannot run ({first})",
                               fix="export it again with this edgekit; if that fails, report it with the "
                                   "edgekit and onnxruntime versions") from None
        raise EdgekitError(f"'{path}' could not be loaded by onnxruntime ({first})",
                           fix="the file is truncated or corrupt; export it again") from None


def _check_specs(path: Path, entry, sess) -> None:
    """The manifest's tensors are the graph's own: every declared input and output exists, and
    its shape is the graph's where the graph fixes a dimension. A manifest is untrusted; a
    shape it declares must not size a buffer the model cannot use (a (1, 2^38) "state")."""
    graph = {v.name: v.shape for v in (*sess.get_inputs(), *sess.get_outputs())}
    for spec in (*entry.inputs, *entry.outputs):
        shape = graph.get(spec.name)
        if shape is None:
            raise EdgekitError(f"edgekit.json names a tensor '{spec.name}' that '{path.name}' does not have",
                               expected=", ".join(sorted(graph)),
                               fix="the folder's edgekit.json does not belong to this model; export it again")
        if len(shape) != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, spec.shape)):
            raise EdgekitError(f"edgekit.json declares '{spec.name}' as {list(spec.shape)}, but '{path.name}' "
                               f"has {[d if isinstance(d, int) else '?' for d in shape]}",
                               fix="the folder's edgekit.json does not belong to this model; export it again")
