"""noisy-pml under torch.distributed: wrappers that give every stateful component the global
batch in the single-process order, and the confidence table broadcast.

- `DistributedLossWrapper` (drop-in for PML's): single-process gradients for the model
  and the loss's own parameters, views gathered view by view, per-sample information gathered.
- `DistributedMinerWrapper` (drop-in for PML's): the same for miners (PRISMMiner's bank,
  NoiseAwarePairMiner); returns `GlobalIndices` for the wrapped loss.
- `broadcast_confidences` / `distributed_confidence_table`: Smooth Proxy-Anchor's
  phase-1 table computed on one rank and broadcast.
"""

from .confidences import broadcast_confidences, broadcast_tensor, distributed_confidence_table
from .gather import gather_rows, is_distributed
from .loss_wrapper import DistributedLossWrapper, GlobalIndices
from .miner_wrapper import DistributedMinerWrapper

__all__ = [
    "DistributedLossWrapper",
    "DistributedMinerWrapper",
    "GlobalIndices",
    "broadcast_confidences",
    "broadcast_tensor",
    "distributed_confidence_table",
    "gather_rows",
    "is_distributed",
]
