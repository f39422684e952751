"""Fine-tuning: train the shared model on the new increment only, with no protection of
old tasks. The lower bound that shows forgetting."""

from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("finetune", families=("attribute", "composed"))
class Finetune(Strategy):
    summary = "train one shared model on each new increment only (lower bound; forgets)"
