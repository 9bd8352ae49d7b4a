"""The tfds sources: imagenet2012 from generated tars in the layout tfds expects, imagenette and
cifar10 (tfds builders, or local ImageFolder copies), and their error messages."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import IMAGENET_WNIDS, make_image_tree, make_imagenet_tars

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import pipeline, sources


def test_imagenet2012_is_prepared_from_the_manual_tars(tmp_path):
    make_imagenet_tars(tmp_path / "downloads" / "manual", per_class=4, val_images=6)
    source = sources.open_source("imagenet2012", "", str(tmp_path))
    assert source.builder.name == "imagenet2012" and source.num_classes == 1000
    assert source.class_names[:3] == IMAGENET_WNIDS
    assert (source.train_split, source.eval_split) == ("train", "validation")
    assert source.num_examples("train") == 12 and source.num_examples("validation") == 6
    train = list(tfds.as_numpy(source.builder.as_dataset("train")))
    assert sorted({int(ex["label"]) for ex in train}) == [0, 1, 2]
    for ex in train:
        assert ex["file_name"].decode().startswith(IMAGENET_WNIDS[ex["label"]])
    # validation labels come from tfds's copy of the official ground truth, by file name
    val = {ex["file_name"].decode(): source.class_names[ex["label"]]
           for ex in tfds.as_numpy(source.builder.as_dataset("validation"))}
    assert val["ILSVRC2012_val_00000001.JPEG"] == "n01751748"
    assert val["ILSVRC2012_val_00000002.JPEG"] == "n09193705"
    prep = pipeline.Preprocessing(resize_size=40, crop_size=32)
    batch = next(iter(tfds.as_numpy(pipeline.train_dataset(source, prep, 4, seed=0, epoch=0))))
    assert batch["images"].shape == (4, 32, 32, 3) and set(batch["labels"]) <= {0, 1, 2}


def test_imagenet2012_with_one_tar_missing_names_it(tmp_path):
    manual = make_imagenet_tars(tmp_path / "downloads" / "manual")
    (manual / "ILSVRC2012_img_val.tar").unlink()
    with pytest.raises(UserError, match="missing now: ILSVRC2012_img_val.tar"):
        sources.open_source("imagenet2012", "", str(tmp_path))


@pytest.mark.parametrize("name,tfds_name,splits,first_class", [
    ("imagenette", "imagenette/full-size-v2", ("train", "validation"), "n01440764"),
    ("cifar10", "cifar10", ("train", "test"), None)])
def test_tfds_sources_and_their_offline_message(tmp_path, monkeypatch, name, tfds_name, splits,
                                                first_class):
    assert sources.TFDS_DATASETS[name] == (tfds_name, *splits)
    builder = tfds.builder(tfds_name, data_dir=str(tmp_path))
    names = builder.info.features["label"].names
    assert len(names) == 10
    if first_class:  # (tfds reads CIFAR-10's names from the download itself)
        assert names[0] == first_class

    def no_network(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'example.org'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    monkeypatch.setattr(sources, "unreachable_reason", lambda host: None)  # host answers
    with pytest.raises(UserError) as error:
        sources.open_source(name, "", str(tmp_path))
    message = str(error.value)
    assert f"could not prepare the {name} dataset" in message
    assert "ConnectionError" in message and "--config.data.name=folder" in message


def test_local_copies_use_the_folder_source_with_the_datasets_label_order(tmp_path):
    cifar_classes = ("truck", "airplane", "cat", "bird", "automobile")
    tree = make_image_tree(tmp_path / "cifar", train_per_class=2, val_per_class=1,
                           classes=cifar_classes)
    source = sources.open_source("cifar10", str(tree), str(tmp_path / "tfds"))
    assert source.name == "cifar10" and source.eval_split == "val"
    # CIFAR-10's label order is alphabetical, so sorted folder names give the same labels
    assert source.class_names == ("airplane", "automobile", "bird", "cat", "truck")


def test_each_process_reads_its_own_shard(image_tree, tmp_path):
    source = sources.open_source("folder", str(image_tree), str(tmp_path))
    prep = pipeline.Preprocessing(resize_size=40, crop_size=32, random_crop=False,
                                  random_flip=False)
    shards = [pipeline.Shard(i, 2) for i in range(2)]
    per_process = [list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=0, epoch=0,
                                                             shard=shard))) for shard in shards]
    assert [len(batches) for batches in per_process] == [5, 5]  # 43 // 2 = 21 -> 5 of 4
    assert all(b["images"].shape[0] == 4 for batches in per_process for b in batches)
    assert pipeline.train_steps_per_epoch(source, 8, shards[0]) == 5
    seen = [np.concatenate([b["images"] for b in batches]).reshape(20, -1)
            for batches in per_process]
    overlap = (seen[0][:, None, :] == seen[1][None, :, :]).all(-1)
    assert not overlap.any()  # disjoint shards
    # interleaved (default): the two processes' slices make up the one-process global batches
    single = list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=0, epoch=0,
                                                       shard=pipeline.Shard(0, 1))))
    for step, whole in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([per_process[0][step]["images"],
                                                      per_process[1][step]["images"]]),
                                      whole["images"])
    # split: each process reads its own files; still disjoint, same number of steps
    split = [list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=0, epoch=0,
                                                       shard=shard, process_sharding="split")))
             for shard in shards]
    assert [len(batches) for batches in split] == [5, 5]
    split_seen = [np.concatenate([b["images"] for b in batches]).reshape(20, -1)
                  for batches in split]
    assert not (split_seen[0][:, None, :] == split_seen[1][None, :, :]).all(-1).any()
    evals = [list(tfds.as_numpy(pipeline.eval_dataset(source, prep, 8, 1, shard=shard)))
             for shard in shards]
    assert [len(e) for e in evals] == [2, 2]  # 15 -> 8 + 7, two batches of 4 each
    assert sum(float(b["mask"].sum()) for e in evals for b in e) == 15.0


def test_offline_download_fails_fast_with_the_offline_recipe(tmp_path, monkeypatch):
    """Without the internet tfds retried for minutes; the host is now checked first."""
    import time  # noqa: PLC0415

    from alexnet_jax.common.errors import UserError  # noqa: PLC0415
    from alexnet_jax.data import sources  # noqa: PLC0415

    monkeypatch.setitem(sources.DOWNLOAD_HOSTS, "cifar10", "download-host.invalid")
    start = time.perf_counter()
    with pytest.raises(UserError) as error:
        sources.open_source("cifar10", "", str(tmp_path))
    assert time.perf_counter() - start < 15
    message = str(error.value)
    assert "download-host.invalid cannot be reached" in message
    assert "--config.data.name=folder --config.data.path=DIR" in message
    assert not (tmp_path / "downloads").exists()  # no download was started


def test_the_host_check_is_skipped_behind_a_proxy_or_with_the_download_at_hand(tmp_path,
                                                                              monkeypatch):
    from alexnet_jax.data import sources  # noqa: PLC0415

    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    assert sources.must_reach("cifar10", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "cs.toronto.edu_kriz_cifar-10-binaryODHPtIjLh3oLcXirEISTO7dkzyK"
     "jRCuol6lV8Wc6C7s.tar.gz").write_bytes(b"x")   # the name tfds gives CIFAR-10's download
    assert not sources.must_reach("cifar10", str(tmp_path))
    assert sources.must_reach("imagenette", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not sources.must_reach("imagenette", str(tmp_path))
