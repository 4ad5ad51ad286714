"""Backbone forward used in training (RoPE applied, mask token) and the DINO head."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from ssl_train.models import DINOHead, SSLBackbone

ARCH = "vit_test_patch16_dinov3"


@pytest.fixture(scope="module")
def backbone() -> SSLBackbone:
    torch.manual_seed(0)
    model = SSLBackbone(ARCH, img_size=64)
    with torch.no_grad():  # non-trivial tokens and LayerScale so every path matters
        model.mask_token.normal_()
        for block in model.model.blocks:
            block.gamma_1.fill_(1.0)
            block.gamma_2.fill_(1.0)
    return model.eval()


def shuffle_patches(x: torch.Tensor, perm: torch.Tensor, patch: int) -> torch.Tensor:
    """Rearrange the ``patch x patch`` patches of ``x`` [B, C, H, W] by ``perm`` (row-major patch order)."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    tiles = (
        x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    )
    tiles = tiles[:, perm]
    return tiles.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def test_plain_forward_equals_timm_forward_features(backbone: SSLBackbone) -> None:
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        ours = backbone.tokens(x)
        timm_out = backbone.model.forward_features(x.expand(-1, 3, -1, -1))
    torch.testing.assert_close(ours, timm_out, rtol=0, atol=0)
    out = backbone(x)
    assert out.cls.shape == (2, 48) and out.registers.shape == (2, 4, 48) and out.patches.shape == (2, 12, 48)


def test_rope_is_applied_shuffling_patches_changes_cls(backbone: SSLBackbone) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 1, 64, 64)
    patch = backbone.patch_size
    perm = torch.randperm((64 // patch) ** 2)
    shuffled = shuffle_patches(x, perm, patch)
    with torch.no_grad():
        cls = backbone(x).cls
        cls_shuffled = backbone(shuffled).cls
        # control: without RoPE (what the OrthoFoundation trainer does) the CLS is permutation invariant,
        # which proves the shuffle permutes whole patches
        no_rope = backbone.tokens(x, use_rope=False)[:, 0]
        no_rope_shuffled = backbone.tokens(shuffled, use_rope=False)[:, 0]
    control = (no_rope - no_rope_shuffled).norm(dim=-1) / no_rope.norm(dim=-1)
    change = (cls - cls_shuffled).norm(dim=-1) / cls.norm(dim=-1)
    assert bool((control < 1e-5).all()), control
    # measured on this random tiny model: about 2e-3 with RoPE against 2e-7 without
    assert bool((change > 5e-4).all()), change
    assert bool((change > 1000 * control).all()), (change, control)


def test_masked_positions_use_the_mask_token(backbone: SSLBackbone) -> None:
    torch.manual_seed(2)
    x1 = torch.randn(1, 1, 32, 32)
    x2 = x1.clone()
    p = backbone.patch_size  # 16: a 2x2 grid
    x2[..., :p, p : 2 * p] = torch.randn(p, p)  # patch 1 differs
    mask = torch.tensor([[False, True, False, False]])
    with torch.no_grad():
        plain_differs = (backbone.tokens(x1) - backbone.tokens(x2)).abs().max()
        masked_1 = backbone.tokens(x1, mask)
        masked_2 = backbone.tokens(x2, mask)
    assert plain_differs > 1e-3
    torch.testing.assert_close(masked_1, masked_2, rtol=0, atol=0)  # the content of patch 1 is gone
    # setting the mask token to patch 1's own embedding reproduces the unmasked forward
    with torch.no_grad():
        embedding = backbone.model.patch_embed(x1.expand(-1, 3, -1, -1)).reshape(1, 4, 48)[0, 1]
        saved = backbone.mask_token.detach().clone()
        backbone.mask_token.copy_(embedding[None])
        try:
            torch.testing.assert_close(backbone.tokens(x1, mask), backbone.tokens(x1), rtol=1e-5, atol=1e-5)
        finally:
            backbone.mask_token.copy_(saved)


def test_empty_mask_equals_plain_forward(backbone: SSLBackbone) -> None:
    x = torch.randn(3, 1, 32, 48)
    none_masked = torch.zeros(3, 6, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(backbone.tokens(x, none_masked), backbone.tokens(x), rtol=0, atol=0)


def test_mask_token_gets_gradient_only_when_used() -> None:
    torch.manual_seed(3)
    model = SSLBackbone(ARCH, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    weights = torch.randn(48)  # (the plain sum of a LayerNorm output is constant)
    (model(x, torch.zeros(2, 4, dtype=torch.bool)).cls @ weights).sum().backward()
    assert model.mask_token.grad is not None and float(model.mask_token.grad.abs().max()) == 0.0
    model.zero_grad()
    (model(x, torch.tensor([[True, False, False, False], [False] * 4])).cls @ weights).sum().backward()
    assert model.mask_token.grad is not None and float(model.mask_token.grad.abs().max()) > 0.0


def test_bad_inputs_raise(backbone: SSLBackbone) -> None:
    with pytest.raises(ValueError, match="multiple of the patch size"):
        backbone(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="masks"):
        backbone(torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="channels"):
        backbone(torch.zeros(1, 2, 32, 32))


def test_dino_head_matches_formula() -> None:
    torch.manual_seed(4)
    head = DINOHead(48, 10, hidden_dim=16, bottleneck_dim=8, n_layers=3)
    x = torch.randn(5, 48)
    lin = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    h = functional.gelu(x @ lin[0].weight.T + lin[0].bias)
    h = functional.gelu(h @ lin[1].weight.T + lin[1].bias)
    h = h @ lin[2].weight.T + lin[2].bias
    h = h / h.norm(dim=-1, keepdim=True)
    w = head.prototypes.weight / head.prototypes.weight.norm(dim=-1, keepdim=True)
    expected = h @ w.T
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-6)
    assert float(head(x).detach().abs().max()) <= 1.0 + 1e-6
    # weight normalisation: scaling a prototype row does not change its score
    with torch.no_grad():
        head.prototypes.weight[3] *= 7.0
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-6)
    assert head.last_layer_parameters() == [head.prototypes.weight]
