"""lrnn-lm: language models from linear RNNs whose state transitions may have negative eigenvalues.

``import lrnn_lm`` registers ``LRNNConfig`` / ``LRNNModel`` / ``LRNNForCausalLM`` with the HF Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_lrnn import LRNNConfig
from .modeling_lrnn import LRNNForCausalLM, LRNNModel, LRNNPreTrainedModel
from .param_tags import param_groups

AutoConfig.register(LRNNConfig.model_type, LRNNConfig, exist_ok=True)
AutoModel.register(LRNNConfig, LRNNModel, exist_ok=True)
AutoModelForCausalLM.register(LRNNConfig, LRNNForCausalLM, exist_ok=True)

__all__ = ["LRNNConfig", "LRNNForCausalLM", "LRNNModel", "LRNNPreTrainedModel", "param_groups"]
