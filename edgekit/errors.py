"""One error type for user mistakes.

Every message names the thing, what was expected, what was found, and the fix
(STYLE.md §11). The CLI prints it as one line on stderr and exits non-zero; it never
shows a traceback for an EdgekitError.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """A user-facing error: what went wrong, what was expected, how to fix it."""

    def __init__(self, what: str, *, expected: str | None = None, got: str | None = None,
                 fix: str | None = None) -> None:
        self.what, self.expected, self.got, self.fix = what, expected, got, fix
        parts = [what]
        if expected is not None:
            parts.append(f"expected {expected}")
        if got is not None:
            parts.append(f"got {got}")
        msg = "; ".join(parts)
        if fix:
            msg += f" — {fix}"
        super().__init__(msg)
