"""k-NN, linear probe and the accuracy report (selfsup.eval pure functions)."""

import numpy as np
import pytest
import torch

from selfsup.eval import accuracy_report, knn_classify, linear_probe, per_class_accuracy, rarest_classes


def _three_blobs(n_per_class, seed, dim=16, scale=0.5):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(42).normal(size=(3, dim)) * 3.0
    labels = np.repeat(np.arange(3), n_per_class)
    feats = centers[labels] + scale * rng.normal(size=(len(labels), dim))
    return feats.astype(np.float32), labels.astype(np.int64)


def _knn_reference(train, labels, test, k, T, c):
    """Per-point loop of the DINO weighted vote (the definition knn_classify must match)."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    out = []
    for q in test:
        sim = train @ q
        top = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(c)
        np.add.at(votes, labels[top], np.exp(sim[top] / T))
        out.append(int(np.argmax(votes)))
    return np.array(out)


def test_knn_separable_blobs():
    xtr, ytr = _three_blobs(100, seed=0)
    xte, yte = _three_blobs(50, seed=1)
    pred = knn_classify(xtr, ytr, xte, k=20, T=0.07, num_classes=3)
    assert pred.dtype == np.int64 and pred.shape == (150,)
    assert (pred == yte).mean() == 1.0


def test_knn_matches_the_per_point_definition_with_chunking():
    rng = np.random.default_rng(0)
    xtr = rng.normal(size=(200, 8)).astype(np.float32)
    ytr = rng.integers(0, 5, size=200)
    xte = rng.normal(size=(37, 8)).astype(np.float32)
    for k, T in ((1, 0.07), (20, 0.07), (20, 1.0), (500, 0.1)):  # k > n is capped
        expected = _knn_reference(xtr, ytr, xte, min(k, 200), T, 5)
        got = knn_classify(xtr, ytr, xte, k=k, T=T, num_classes=5, chunk_size=7)
        np.testing.assert_array_equal(got, expected)
    got_torch = knn_classify(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), 20, 0.07, 5)
    np.testing.assert_array_equal(got_torch, _knn_reference(xtr, ytr, xte, 20, 0.07, 5))
    with pytest.raises(ValueError, match="train_labels"):
        knn_classify(xtr, ytr[:10], xte)


def test_linear_probe_separable_blobs():
    xtr, ytr = _three_blobs(100, seed=0, scale=1.0)
    xte, yte = _three_blobs(50, seed=1, scale=1.0)
    result = linear_probe(xtr, ytr, xte, num_classes=3, lrs=[1e-3, 1e-2, 1e-1], epochs=20, batch_size=64)
    assert (result.predictions == yte).mean() > 0.97
    assert set(result.val_accuracy) == {1e-3, 1e-2, 1e-1}
    assert result.best_lr in result.val_accuracy
    assert result.val_accuracy[result.best_lr] == max(result.val_accuracy.values())


def test_linear_probe_beats_chance_where_knn_cannot_be_perfect():
    """Linearly separable but with a distractor dimension dominating distances: a probe needs to learn."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, size=n)
    signal = y * 2.0 - 1.0 + 0.1 * rng.normal(size=n)
    x = np.stack([signal, 50 * rng.normal(size=n)], axis=1).astype(np.float32)
    result = linear_probe(x[:300], y[:300], x[300:], num_classes=2, epochs=30, batch_size=64)
    assert (result.predictions == y[300:]).mean() > 0.95


def test_per_class_and_tail_numbers():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 2, 0])
    acc = per_class_accuracy(preds, labels, num_classes=4)
    np.testing.assert_allclose(acc[:3], [0.75, 0.5, 0.8])
    assert np.isnan(acc[3])  # class 3 absent from the test labels
    report = accuracy_report(preds, labels, num_classes=4, tail_classes=[1, 3])
    assert report["top1"] == pytest.approx(8 / 11)
    assert report["per_class"] == [0.75, 0.5, 0.8, None]
    assert report["tail_mean"] == pytest.approx(0.5)  # absent tail class 3 is skipped
    assert accuracy_report(preds, labels, 4, [0, 2])["tail_mean"] == pytest.approx((0.75 + 0.8) / 2)
    assert accuracy_report(preds, labels, 4, None)["tail_mean"] is None


def test_rarest_classes_of_a_pool():
    pool = np.array([0] * 50 + [1] * 3 + [2] * 20 + [3] * 3 + [4] * 1)
    assert rarest_classes(pool, num_classes=6, count=3) == [1, 4, 5]  # 5: absent, 4: one item, ties by id
    assert rarest_classes(pool, num_classes=5, count=2) == [1, 4]


def _image_set(names, labels):
    from types import SimpleNamespace

    return SimpleNamespace(source=SimpleNamespace(label_names=names), labels=np.asarray(labels, dtype=np.int64))


def test_class_space_matches_names_and_pool_tail_by_name(tmp_path):
    from selfsup.eval import _pool_tail, class_space

    # the train folder lacks "b" (so its "c" is folder 1), the test folder has all three
    classes = class_space(_image_set(["a", "c"], [0, 0, 1]), _image_set(["a", "b", "c"], [0, 1, 2, 2]))
    assert classes.names == ["a", "c", "b"] and classes.matched_by == "name"
    assert classes.train_labels.tolist() == [0, 0, 1] and classes.test_labels.tolist() == [0, 2, 1, 1]
    assert classes.present(classes.train_labels) == ["a", "c"]
    # unnamed labels (.npy): the same integer is the same class
    by_id = class_space(_image_set(None, [0, 2]), _image_set(None, [1]))
    assert by_id.names == ["0", "1", "2"] and by_id.matched_by == "id" and by_id.test_labels.tolist() == [1]
    # pool labels of a store: its own ids, named by label_names.json; "b" is absent from the pool
    np.save(tmp_path / "labels.npy", np.array([0, 0, 0, 1]))  # pool: a x3, c x1
    (tmp_path / "label_names.json").write_text('["a", "c"]')
    assert _pool_tail(str(tmp_path / "labels.npy"), classes, 2) == [1, 2]  # c (1 item) and b (none)
    assert _pool_tail(str(tmp_path / "labels.npy"), classes, 1) == [2]
