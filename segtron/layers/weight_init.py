"""fvcore's Caffe2-style initializers (``c2_msra_fill``, ``c2_xavier_fill``), imported quietly.

Importing ``fvcore.nn`` runs ``torch.jit.script`` on fvcore's losses, which recent torch versions
answer with a FutureWarning on every import; that warning concerns fvcore, not segtron users.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn.weight_init import c2_msra_fill, c2_xavier_fill

__all__ = ["c2_msra_fill", "c2_xavier_fill"]
