"""What a runtime backend offers a StreamingSession: one step, and the live state."""

from __future__ import annotations

import numpy as np


class Backend:
    name: str
    threads: int | None = None
    # Prefill, a capability: prefill_len steps in one call through the exported sequence form
    # (export --prefill T), continuing from and into this backend's live state. 0: none.
    prefill_len: int = 0
    _prefill: "Backend | None" = None

    def step(self, xs: list[np.ndarray]) -> np.ndarray:
        """One step; xs holds the manifest's inputs, in order, at their exact shapes and
        dtypes (e.g. [tokens (B,) int64] or [x (B, I) float32, dt (B, 1) float32]).
        Returns y (B, ...).
        The returned array may be reused by the next step: copy it to keep it."""
        raise NotImplementedError

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the live state, by state name."""
        raise NotImplementedError

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Overwrite the live state in place."""
        raise NotImplementedError

    def attach_prefill(self, program: "Backend", seq_len: int) -> None:
        """Run `program` (the prefill graph, opened as a backend of its own) for `prefill`.
        This generic form copies the state into it and back; a backend that can bind the
        prefill program to its own state buffers overrides it."""
        self._prefill, self.prefill_len = program, seq_len

    def prefill(self, xs: np.ndarray) -> np.ndarray:
        """prefill_len steps at once: xs (B, prefill_len, ...) -> y (B, prefill_len, ...)."""
        if self._prefill is None:
            raise NotImplementedError(f"{self.name}: no prefill program attached")
        self._prefill.set_state(self.get_state())
        y = self._prefill.step([xs])
        self.set_state(self._prefill.get_state())
        return y

    def reset(self) -> None:
        self.set_state({k: np.zeros_like(v) for k, v in self.get_state().items()})
