"""What a runtime backend offers a StreamingSession: one step, and the live state."""

from __future__ import annotations

import numpy as np


class Backend:
    name: str
    threads: int | None = None

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step; x is (B,) int64 tokens or (B, I) float features. Returns y (B, ...).
        The returned array may be reused by the next step: copy it to keep it."""
        raise NotImplementedError

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the live state, by state name."""
        raise NotImplementedError

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Overwrite the live state in place."""
        raise NotImplementedError

    def reset(self) -> None:
        self.set_state({k: np.zeros_like(v) for k, v in self.get_state().items()})
