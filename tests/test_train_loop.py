"""The training loop's text forward: cut at the batch's longest caption, same loss and gradients."""

import torch

from mmsearch.models import build_openclip
from mmsearch.models.text_onnx import cut_text_forward


def test_the_cut_text_forward_gives_the_full_forwards_features_and_gradients():
    """Training runs the text tower only up to the longest end-of-text token of the batch
    (tiny-zh's context is 64 tokens, its captions ~15): the features and every gradient must be
    those of `encode_text` over the whole context."""
    torch.manual_seed(0)
    loaded = build_openclip("tiny-zh", pretrained=False)
    model, tokens = loaded.model.train(), loaded.tokenizer(["a red circle", "两个绿色三角形", "a big blue square on the left"])
    assert int(tokens.argmax(dim=1).max()) + 1 < tokens.shape[1]  # the cut really shortens

    def grads(forward):
        model.zero_grad(set_to_none=True)
        features = forward(tokens)
        (features * torch.linspace(-1, 1, features.shape[1])).sum().backward()
        return features.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    cut, cut_grads = grads(cut_text_forward(model))
    full, full_grads = grads(model.encode_text)
    assert model.training  # the wrapper did not switch the model to eval (BatchNorm in the image tower)
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-4)
    assert cut_grads.keys() == full_grads.keys() and "positional_embedding" in cut_grads
    for name, full_grad in full_grads.items():
        # float32 sums in another order (a shorter sequence blocks the products differently, and
        # AMX machines pick other kernels): allow rounding relative to the gradient's own scale
        scale = float(full_grad.abs().max())
        torch.testing.assert_close(cut_grads[name], full_grad, atol=1e-6 * scale, rtol=1e-4, msg=name)
