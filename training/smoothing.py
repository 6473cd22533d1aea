"""SmoothQuant-style smoothing of each decoder layer's MLP down-projection input, before int8 quantization.

The down projection reads the SwiGLU product `silu(gate(x)) * up(x)`, whose few large channels make a per-tensor
int8 activation scale coarse for all the others. Dividing channel j of that product by s_j (folded into the up
projection's row j) and multiplying the down projection's column j by s_j leaves the float model's function
unchanged and moves the outliers into the weights, which are quantized per tensor from their own range
(Xiao et al., 2023: s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["smooth_mlp_inputs", "supports_smoothing"]


def supports_smoothing(model: Any) -> str | None:
    """None when every decoder layer has a bias-free gated MLP (gate/up/down projections), else why not."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return "the model has no decoder layers at model.layers"
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
            return "a layer's MLP is not gate_proj/up_proj/down_proj"
        if mlp.up_proj.bias is not None or mlp.down_proj.bias is not None:
            return "the MLP projections have biases"
    return None


def smooth_mlp_inputs(
    model: Any, prompts: Sequence[Sequence[int]], *, alpha: float = 0.5, pad_id: int = 0, batch_size: int = 16
) -> list[float]:
    """Smooth every layer's down-projection input in place, calibrated on `prompts` (token ids of training
    prompts, never dev); returns each layer's largest activation range before / after (a ratio, for the log)."""
    import torch

    from redone_sdk.inference.encoding import pad_batch

    reason = supports_smoothing(model)
    if reason is not None:
        raise ValueError(f"cannot smooth this model's MLP inputs: {reason}")
    layers = model.model.layers
    maxima = [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers]
    current_mask: list[torch.Tensor] = []

    def hook(index: int) -> Any:
        def record(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            values = inputs[0].detach().abs().float()[current_mask[0]]  # real tokens only: (tokens, channels)
            maxima[index] = torch.maximum(maxima[index], values.amax(dim=0).cpu())

        return record

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                ids, mask = pad_batch(list(prompts[start : start + batch_size]), pad_id)
                current_mask[:] = [torch.from_numpy(mask).bool()]
                device = next(model.parameters()).device
                model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
    finally:
        for handle in handles:
            handle.remove()
    spreads = []
    with torch.no_grad():
        for layer, act in zip(layers, maxima, strict=True):
            down, up = layer.mlp.down_proj.weight, layer.mlp.up_proj.weight  # [hidden, inter], [inter, hidden]
            weight_max = down.detach().abs().amax(dim=0).float().cpu()
            scale = (act.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            spreads.append(float(act.max() / act.clamp(min=1e-5).median()))
            up.div_(scale.to(up.device, up.dtype)[:, None])
            down.mul_(scale.to(down.device, down.dtype)[None, :])
    return spreads
