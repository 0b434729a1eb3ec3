"""Masks, multi-crop, image sources, selections and the infinite sampler (selfsup.masking/augment/data)."""

import numpy as np
import pytest
import torch

from selfsup.augment import MultiCrop, to_channels
from selfsup.config import CropsConfig
from selfsup.data import (
    InfiniteBatchSampler,
    MultiCropDataset,
    collate_multicrop,
    open_image_set,
)
from selfsup.masking import block_mask, random_patch_mask, sample_mask


@pytest.mark.parametrize("grid", [(4, 4), (14, 14), (3, 5)])
@pytest.mark.parametrize("kind", ["block", "random"])
def test_masks_have_the_exact_count(grid, kind):
    torch.manual_seed(0)
    n = grid[0] * grid[1]
    fn = block_mask if kind == "block" else random_patch_mask
    for n_masked in (0, 1, n // 3, n // 2, n - 1, n):
        mask = fn(grid, n_masked)
        assert mask.shape == (n,) and mask.dtype == torch.bool
        assert int(mask.sum()) == n_masked
    with pytest.raises(ValueError, match="n_masked"):
        fn(grid, n + 1)


def test_block_masks_are_blocky():
    """On a 14x14 grid, block masks have far fewer masked/unmasked boundaries than random ones."""
    torch.manual_seed(0)

    def edges(mask):
        m = mask.view(14, 14).int()
        return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())

    block = np.mean([edges(block_mask((14, 14), 60)) for _ in range(20)])
    rand = np.mean([edges(random_patch_mask((14, 14), 60)) for _ in range(20)])
    assert block < 0.6 * rand


def test_sample_mask_ratio_and_probability():
    torch.manual_seed(0)
    grid, n = (14, 14), 196
    assert not sample_mask(grid, (0.1, 0.5), 0.0, "block").any()
    counts = [int(sample_mask(grid, (0.1, 0.5), 1.0, kind).sum()) for kind in ("block", "random") for _ in range(50)]
    assert min(counts) >= round(0.1 * n) and max(counts) <= round(0.5 * n)
    masked = [bool(sample_mask(grid, (0.2, 0.2), 0.5, "random").any()) for _ in range(400)]
    assert 0.4 < np.mean(masked) < 0.6
    with pytest.raises(ValueError, match="mask_type"):
        sample_mask(grid, (0.2, 0.2), 1.0, "stripes")


def _crops(local_number=3):
    return CropsConfig(global_size=28, local_size=14, local_number=local_number)


def test_multicrop_shapes_one_channel():
    mc = MultiCrop(_crops(), channels=1, mean=[0.5], std=[0.25])
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    out = mc(image)
    assert [c.shape for c in out.global_crops] == [(1, 28, 28)] * 2
    assert [c.shape for c in out.local_crops] == [(1, 14, 14)] * 3
    assert all(c.dtype == torch.float32 for c in out.global_crops + out.local_crops)
    # grayscale-aware: no colour transform in any pipeline for 1-channel input
    for pipeline in (mc.global1, mc.global2, mc.local):
        names = repr(pipeline)
        assert "ColorJitter" not in names and "Grayscale" not in names


def test_multicrop_shapes_three_channels_and_conversion():
    mc = MultiCrop(_crops(local_number=2), channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    assert "ColorJitter" in repr(mc.global1)
    out = mc(torch.randint(0, 256, (3, 40, 36), dtype=torch.uint8))
    assert [c.shape for c in out.global_crops] == [(3, 28, 28)] * 2
    assert [c.shape for c in out.local_crops] == [(3, 14, 14)] * 2
    out = mc(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))  # gray -> repeated to RGB
    assert out.global_crops[0].shape == (3, 28, 28)
    gray = to_channels(torch.full((3, 4, 4), 100, dtype=torch.uint8), 1)
    assert gray.shape == (1, 4, 4) and int(gray[0, 0, 0]) == 100
    with pytest.raises(ValueError, match="uint8"):
        mc(torch.rand(3, 28, 28))


def test_multicrop_normalisation_of_a_constant_image():
    cfg = CropsConfig(global_size=28, local_size=14, local_number=1, blur_p=[0.0, 0.0, 0.0], solarize_p=0.0)
    out = MultiCrop(cfg, channels=1, mean=[0.5], std=[0.25])(torch.full((1, 28, 28), 51, dtype=torch.uint8))
    expected = (51 / 255 - 0.5) / 0.25
    for crop in out.global_crops + out.local_crops:
        torch.testing.assert_close(crop, torch.full_like(crop, expected), atol=1e-5, rtol=0)


def test_sampler_ranks_are_disjoint_and_the_global_batch_ignores_world_size():
    n, batch = 40, 8
    single = InfiniteBatchSampler(n, batch, seed=3)
    ranks = [InfiniteBatchSampler(n, batch, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(12):  # 2.4 epochs
        joined = ranks[0].batch_keys(step) + ranks[1].batch_keys(step)
        assert joined == single.batch_keys(step)
        assert not {p for _, p in ranks[0].batch_keys(step)} & {p for _, p in ranks[1].batch_keys(step)}
    # one epoch = the seeded permutation, each item once; the next epoch reshuffles with seed + 1
    epoch0 = [item for step in range(5) for item, _ in single.batch_keys(step)]
    epoch1 = [item for step in range(5, 10) for item, _ in single.batch_keys(step)]
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert epoch0 == torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    assert epoch1 == torch.randperm(n, generator=torch.Generator().manual_seed(4)).tolist()
    # the iterator starts at the given global position
    it = iter(InfiniteBatchSampler(n, batch, seed=3, start=3 * batch))
    assert next(it) == single.batch_keys(3)
    with pytest.raises(ValueError, match="divisible"):
        InfiniteBatchSampler(n, 9, seed=0, world_size=2)
    with pytest.raises(ValueError, match="multiple"):
        InfiniteBatchSampler(n, 8, seed=0, start=4)


def test_sampler_batch_larger_than_the_set():
    s = InfiniteBatchSampler(3, 8, seed=0)
    items = [i for i, _ in s.batch_keys(0)]
    assert len(items) == 8 and set(items) == {0, 1, 2}


@pytest.fixture
def npy_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 12, 12), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(20) % 4)
    return tmp_path, images


def test_npy_source_and_selections_by_id(npy_images):
    folder, images = npy_images
    np.save(folder / "indices.npy", np.array([5, 8, 8, 19], dtype=np.int64))
    data = {"kind": "npy", "path": str(folder / "images.npy"), "labels_path": str(folder / "labels.npy")}
    s = open_image_set({**data, "selection": str(folder / "indices.npy")})
    assert s.ids() == [5, 8, 8, 19] and s.labels.tolist() == [1, 0, 0, 3]
    assert s.image(1).shape == (1, 12, 12) and torch.equal(s.image(1)[0], torch.from_numpy(images[8]))
    # a folder with ids.txt (a curate.sample output) wins over its indices.npy: ids survive skipped items
    (folder / "sample").mkdir()
    (folder / "sample" / "ids.txt").write_text("19\n5\n")
    np.save(folder / "sample" / "indices.npy", np.array([0, 1], dtype=np.int64))
    s = open_image_set({**data, "selection": str(folder / "sample")})
    assert s.ids() == [19, 5] and torch.equal(s.image(0)[0], torch.from_numpy(images[19]))
    assert s.source.describe()["selection"]["count"] == 2
    assert s.source.describe()["selection"]["file"] == "ids.txt"
    (folder / "bad.txt").write_text("999\n")
    with pytest.raises(ValueError, match="bad.txt"):
        open_image_set({**data, "selection": str(folder / "bad.txt")})
    np.save(folder / "oob.npy", np.array([20], dtype=np.int64))
    with pytest.raises(ValueError, match="oob.npy"):
        open_image_set({**data, "selection": str(folder / "oob.npy")})
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        open_image_set({"kind": "npy", "path": str(folder / "missing.npy")})
    (folder / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of"):
        open_image_set({**data, "selection": str(folder / "empty")})  # a folder without a selection file


def test_image_folder_items_are_decoded_converted_and_resized(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, mode, size in (("a", "RGB", (20, 10)), ("b", "L", (8, 8))):
        (tmp_path / cls).mkdir()
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3) if mode == "RGB" else size, dtype=np.uint8)).save(
            tmp_path / cls / "x.png"
        )
    s = open_image_set({"kind": "image_folder", "root": str(tmp_path), "labels_from_dirs": True}, channels=1)
    assert s.ids() == ["a/x.png", "b/x.png"] and s.labels.tolist() == [0, 1]
    assert s.image(0).shape == (1, 10, 20) and s.image(1).shape == (1, 8, 8)
    assert s.array(0).shape == (10, 20) and s.array(1).shape == (8, 8)
    rgb = open_image_set({"kind": "image_folder", "root": str(tmp_path)}, channels=3)
    assert rgb.image(1).shape == (3, 8, 8) and rgb.labels is None


def test_dataset_is_a_pure_function_of_the_stream_position(npy_images):
    folder, _ = npy_images
    s = open_image_set({"kind": "npy", "path": str(folder / "images.npy")})
    cfg = CropsConfig(global_size=12, local_size=6, local_number=2)
    ds = MultiCropDataset(s, MultiCrop(cfg, 1, [0.5], [0.25]), (4, 4), (0.1, 0.5), 1.0, "block", seed=0)
    torch.manual_seed(123)
    a = ds[(3, 17)]
    state = torch.get_rng_state()
    b = ds[(3, 17)]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    for x, y in zip(a["global_crops"] + a["local_crops"], b["global_crops"] + b["local_crops"]):
        assert torch.equal(x, y)
    assert torch.equal(a["masks"], b["masks"]) and a["masks"].shape == (2, 16)
    c = ds[(3, 18)]
    assert not torch.equal(a["global_crops"][0], c["global_crops"][0])
    batch = collate_multicrop([ds[(i, i)] for i in range(5)])
    assert batch["global_crops"].shape == (10, 1, 12, 12)
    assert batch["local_crops"].shape == (10, 1, 6, 6)
    assert batch["masks"].shape == (10, 16) and batch["positions"].tolist() == [0, 1, 2, 3, 4]
    # crop-major: row i is the first global crop of sample i, row 5 + i its second one
    assert torch.equal(batch["global_crops"][7], ds[(2, 2)]["global_crops"][1])
