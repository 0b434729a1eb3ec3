"""SSL losses, Sinkhorn-Knopp, KoLeo guards and schedules (selfsup.losses, selfsup.schedules)."""

import math

import numpy as np
import pytest
import torch

from selfsup.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss, cross_entropy, sinkhorn_knopp
from selfsup.schedules import cosine_schedule, warmup_then_constant


def test_dino_loss_of_identical_distributions_is_the_entropy_and_minimal():
    torch.manual_seed(0)
    k, t_temp, s_temp = 32, 0.04, 0.1
    teacher_logits = torch.randn(8, k) * 0.2
    loss_fn = DINOLoss(k, student_temp=s_temp, center_momentum=0.9)
    p = loss_fn.softmax_center_teacher(teacher_logits, t_temp)  # center is 0 at start
    torch.testing.assert_close(p, torch.softmax(teacher_logits / t_temp, dim=-1))
    student = (teacher_logits * s_temp / t_temp).requires_grad_(True)  # softmax(s / Ts) == p
    loss = loss_fn([student], [p], skip_same_view=False)
    entropy = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(loss, entropy, rtol=1e-5, atol=1e-6)
    loss.backward()  # a stationary point: d/ds CE = (softmax(s/Ts) - p) / Ts = 0
    assert student.grad.abs().max() < 1e-6
    for scale in (0.1, 1.0):
        other = student.detach() + scale * torch.randn_like(student)
        assert loss_fn([other], [p], skip_same_view=False) > loss + 1e-4


def test_dino_loss_skips_same_view_pairs_and_known_uniform_value():
    k = 16
    uniform = torch.full((4, k), 1.0 / k)
    student = [torch.zeros(4, k) for _ in range(4)]  # 2 global + 2 local crops, uniform outputs
    loss_fn = DINOLoss(k, 0.1, 0.9)
    # every pair costs log(k); 4 student crops x 2 teacher crops - 2 same-view pairs = 6 pairs
    torch.testing.assert_close(loss_fn(student, [uniform, uniform]), torch.tensor(math.log(k)))
    with pytest.raises(ValueError, match="no .* pair"):
        loss_fn(student[:1], [uniform], skip_same_view=True)


def test_center_is_an_ema_of_batch_means():
    loss_fn = DINOLoss(4, 0.1, center_momentum=0.9)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    loss_fn.update_center(logits)
    torch.testing.assert_close(loss_fn.center, 0.1 * logits.mean(0, keepdim=True))
    loss_fn.update_center(torch.empty(0, 4))  # no item: unchanged
    torch.testing.assert_close(loss_fn.center, 0.1 * logits.mean(0, keepdim=True))


def test_sinkhorn_knopp_is_doubly_stochastic():
    torch.manual_seed(0)
    n, k = 64, 16
    q = sinkhorn_knopp(torch.randn(n, k), temp=0.1, n_iterations=300)
    assert q.shape == (n, k) and torch.all(q >= 0)
    # rows: one distribution per sample (exact: the last step normalises rows)
    torch.testing.assert_close(q.sum(1), torch.ones(n), rtol=0, atol=1e-5)
    # columns: every prototype gets the same mass n / k; i.e. q / n has marginals 1/n and 1/k
    torch.testing.assert_close(q.sum(0), torch.full((k,), n / k), rtol=0, atol=1e-3)
    # the training default (3 iterations) on head-like logits (cosines in [-1, 1]) at T = 0.04
    q3 = sinkhorn_knopp(torch.rand(n, k) * 2 - 1, temp=0.04, n_iterations=3)
    torch.testing.assert_close(q3.sum(1), torch.ones(n), rtol=0, atol=1e-5)
    # logits far outside the head's range: exp cannot overflow (the global max is subtracted)
    assert torch.isfinite(sinkhorn_knopp(torch.randn(n, k) * 50, temp=0.04, n_iterations=3)).all()


def test_sinkhorn_knopp_empty_batch():
    assert sinkhorn_knopp(torch.empty(0, 8), 0.1).shape == (0, 8)


def test_ibot_loss_weights_each_masked_crop_equally():
    k = 8
    masks = torch.zeros(3, 4, dtype=torch.bool)
    masks[0, :1] = True  # 1 masked patch
    masks[1, :3] = True  # 3 masked patches, crop 2 unmasked
    m = int(masks.sum())
    student = torch.zeros(m, k)  # uniform student: CE = log(k) for any target
    teacher = torch.softmax(torch.randn(m, k), dim=-1)
    loss = IBOTPatchLoss(k, 0.1, 0.9)(student, teacher, masks)
    torch.testing.assert_close(loss, torch.tensor(2 * math.log(k) / 3))
    with pytest.raises(ValueError, match="masked patches"):
        IBOTPatchLoss(k, 0.1, 0.9)(student[:2], teacher[:2], masks)


def test_cross_entropy_rows():
    p = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(cross_entropy(s, p, 1.0), torch.tensor([math.log(2)]))


def test_koleo_known_value_duplicates_and_batch_of_one():
    koleo = KoLeoLoss()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(koleo(x), torch.tensor(-math.log(math.sqrt(2))), atol=1e-6, rtol=0)
    dup = torch.ones(5, 8, requires_grad=True)  # all identical: zero distances
    loss = koleo(dup)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(dup.grad).all()
    one = torch.randn(1, 8, requires_grad=True)
    loss = koleo(one)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(one.grad).all()
    zero = torch.zeros(3, 4, requires_grad=True)  # zero vectors cannot be normalised: still finite
    loss = koleo(zero)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zero.grad).all()


def test_koleo_pushes_close_points_apart():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]], requires_grad=True)
    before = KoLeoLoss()(x)
    before.backward()
    with torch.no_grad():
        moved = x - 0.01 * x.grad
    assert KoLeoLoss()(moved) < before


def test_cosine_schedule_endpoints():
    s = cosine_schedule(1.0, 0.1, total=100, warmup=10, warmup_start=0.0)
    assert s.shape == (100,)
    assert s[0] == 0.0 and s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[:11]) > 0) and np.all(np.diff(s[10:]) <= 1e-12)
    s = cosine_schedule(0.996, 1.0, total=50)
    assert s[0] == pytest.approx(0.996) and s[-1] == pytest.approx(1.0)
    assert cosine_schedule(2.0, 0.0, total=1)[0] == 2.0
    t = warmup_then_constant(0.04, 0.07, total=10, warmup=4)
    assert t[0] == pytest.approx(0.04) and t[4] == pytest.approx(0.07) and t[-1] == pytest.approx(0.07)
    with pytest.raises(ValueError, match="warmup"):
        cosine_schedule(1.0, 0.0, total=5, warmup=6)
