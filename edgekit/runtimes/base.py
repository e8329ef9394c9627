"""What a runtime backend offers a StreamingSession: one step, and the live state."""

from __future__ import annotations

import numpy as np


class Backend:
    name: str
    threads: int | None = None

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

    def reset(self) -> None:
        self.set_state({k: np.zeros_like(v) for k, v in self.get_state().items()})
