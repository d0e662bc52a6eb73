"""Adapter files: mor_ext's own format and the official MoRAgent checkpoints.

* :mod:`.io` - :func:`save_adapter` / :func:`load_adapter` (safetensors + ``mor_config.json``,
  written atomically, every mismatch listed on load) and the helpers both importers share.
* :mod:`.official` - :func:`load_official_checkpoint` and friends: the official ``moelora.py``
  tensors mapped to the canonical layout (``docs/spec.md`` §6).
* :mod:`.roles` - :func:`add_roles`: new roles on a trained adapter, output unchanged (§7).
* :mod:`.averaging` - :func:`average_adapters`: the weighted mean of several adapters of one config
  (mor_ext or PEFT), e.g. a checkpoint interpolated with the run that continued from it.

Layering: imports ``spec``, ``schemes``, ``config``, ``layers``, ``patching`` and ``files``; nothing above it
(``generation``, ``train``, ``cli``) is imported here.
"""

from . import averaging, io, official, roles
from .averaging import average_adapters
from .io import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_FORMAT,
    ADAPTER_FORMAT_VERSION,
    ADAPTER_WEIGHTS_NAME,
    PENDING_SUFFIX,
    AdapterError,
    adapter_state_dict,
    load_adapter,
    save_adapter,
)
from .official import convert_official_state_dict, load_official_checkpoint, official_mask_to_role_ids
from .roles import add_roles

__all__ = [*io.__all__, *official.__all__, *roles.__all__, *averaging.__all__]
