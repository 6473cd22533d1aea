"""The prefix-LM loops' optimizer (training/prefix_lm_sft.py `adamw_warmup_cosine`): the fused AdamW kernel takes
the same steps as torch's default one, and the schedule warms up, then decays to zero."""

from __future__ import annotations

import pytest

from redone_sdk.training.config import SFTStageConfig
from redone_sdk.training.prefix_lm_sft import adamw_warmup_cosine

torch = pytest.importorskip("torch")


def _params(seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(64, 32, generator=generator)),
        torch.nn.Parameter(torch.randn(32, generator=generator)),
    ]


def test_the_fused_update_is_adamw() -> None:
    cfg = SFTStageConfig(learning_rate=1e-2, weight_decay=0.01, warmup_ratio=0.2)
    fused, reference = _params(0), _params(0)
    optimizer, schedule = adamw_warmup_cosine(fused, cfg, total=10)
    assert optimizer.defaults["fused"] is True  # CPU float parameters take the fused kernel
    plain = torch.optim.AdamW(reference, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    plain_schedule = torch.optim.lr_scheduler.LambdaLR(plain, schedule.lr_lambdas[0])
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):
        for ours, theirs in zip(fused, reference, strict=True):
            grad = torch.randn(ours.shape, generator=generator)
            ours.grad, theirs.grad = grad.clone(), grad.clone()
        optimizer.step(), schedule.step(), plain.step(), plain_schedule.step()
    start = _params(0)
    for ours, theirs, before in zip(fused, reference, start, strict=True):
        assert not torch.equal(ours, before)  # it moved
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)


def test_the_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = SFTStageConfig(learning_rate=1.0, warmup_ratio=0.2)
    _, schedule = adamw_warmup_cosine(_params(0), cfg, total=10)
    factor = schedule.lr_lambdas[0]
    assert [factor(step) for step in (0, 1)] == [0.5, 1.0]
    decay = [factor(step) for step in range(2, 11)]
    assert decay == sorted(decay, reverse=True) and decay[0] == 1.0 and decay[-1] == pytest.approx(0.0)
