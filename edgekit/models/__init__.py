"""Architectures. Importing this package registers every one of them."""

from edgekit.models.base import (ARCHITECTURES, RecurrentModel, StateSpec, detect_arch,  # noqa: F401
                                 load_model, register_arch)
from edgekit.models import rwkv7  # noqa: E402,F401
from edgekit.models import mamba  # noqa: E402,F401
from edgekit.models import cfc  # noqa: E402,F401
from edgekit.models import hawk  # noqa: E402,F401
