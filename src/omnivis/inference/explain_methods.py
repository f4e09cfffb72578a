"""The saliency methods ``omnivis explain`` offers, in a module without torch.

The CLI's help, the server's OpenAPI schema and the explainer all read this one table, so a method
added here is offered everywhere; ``inference.explain`` (which imports torch and grad-cam) adds the
code behind each name.
"""

from __future__ import annotations

METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM: activations weighted by their mean gradient (Selvaraju et al. 2017)",
    "gradcam++": "Grad-CAM++: second-order weights, better for several instances of a class",
    "xgradcam": "XGrad-CAM: activation-normalized gradient weights (axiom-based)",
    "eigencam": "Eigen-CAM: first principal component of the activations (no gradients, class-agnostic)",
    "scorecam": "Score-CAM: each channel weighted by the score it gives as a mask (no gradients, slow)",
    "layercam": "LayerCAM: activations weighted by their positive gradients at each place (Jiang et al. 2021)",
    "rollout": "attention rollout: attention maps multiplied through the blocks (ViTs only, class-agnostic)",
}
