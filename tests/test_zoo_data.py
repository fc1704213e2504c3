"""Datasets: CIFAR-10 from its real pickle format, digits, custom data, subsets and label files."""
import os
import pickle

import numpy as np
import pytest
import torch

import dataloader
from landscape.errors import UserError


def raw_batch(folder, name):
    with open(os.path.join(folder, "cifar-10-batches-py", name), "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    return d["data"], np.asarray(d["labels"])


def test_cifar_reads_both_key_styles_identically(fake_cifar):
    a = dataloader.load_tensors("cifar10", fake_cifar["str"])
    b = dataloader.load_tensors("cifar10", fake_cifar["bytes"])
    assert a.train_x.shape == (60, 3, 32, 32) and a.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x)


def test_cifar_normalisation_is_the_reference_one(fake_cifar):
    data, labels = raw_batch(fake_cifar["str"], "data_batch_1")
    d = dataloader.load_tensors("cifar10", fake_cifar["str"])
    img = data[0].reshape(3, 32, 32).astype(np.float32) / 255
    mean = np.array([125.3, 123.0, 113.9], dtype=np.float32).reshape(3, 1, 1) / 255
    std = np.array([63.0, 62.1, 66.7], dtype=np.float32).reshape(3, 1, 1) / 255
    np.testing.assert_allclose(d.train_x[0].numpy(), (img - mean) / std, rtol=1e-6, atol=1e-6)
    assert d.train_y[0] == labels[0]
    raw = dataloader.load_tensors("cifar10", fake_cifar["str"], raw_data=True)
    np.testing.assert_allclose(raw.train_x[0].numpy(), img)
    assert 0 <= raw.train_x.min() and raw.train_x.max() <= 1


def test_data_split_selects_the_reference_subset(fake_cifar):
    full = dataloader.load_tensors("cifar10", fake_cifar["str"])
    np.random.seed(0)  # the reference: global seed 0, then choice without replacement
    ref = np.random.choice(np.arange(60), 60 // 3, replace=False)
    for split_idx in (0, 2):
        sub = dataloader.load_tensors("cifar10", fake_cifar["str"], data_split=3, split_idx=split_idx)
        assert torch.equal(sub.train_x, full.train_x[ref]) and torch.equal(sub.train_y, full.train_y[ref])
    with pytest.raises(UserError, match="split_idx"):
        dataloader.load_tensors("cifar10", fake_cifar["str"], data_split=3, split_idx=3)


def test_missing_cifar_names_the_folder(tmp_path):
    with pytest.raises(UserError) as e:
        dataloader.load_tensors("cifar10", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value)
    assert "--download" in str(e.value) and "\n" not in str(e.value)


def test_corrupt_cifar_batch_is_reported(tmp_path, fake_cifar):
    import shutil
    folder = tmp_path / "c"
    shutil.copytree(fake_cifar["str"], folder)
    (folder / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="data_batch_3"):
        dataloader.load_tensors("cifar10", str(folder))


def test_cifar_batch_with_code_is_not_executed(tmp_path, fake_cifar):
    import shutil

    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    folder = tmp_path / "c"
    shutil.copytree(fake_cifar["str"], folder)
    with open(folder / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Exploit(), "labels": [1]}, f)
    with pytest.raises(UserError):
        dataloader.load_tensors("cifar10", str(folder))
    assert not (tmp_path / "pwned").exists()


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(dataloader.urllib.request, "urlretrieve", offline)
    with pytest.raises(UserError, match="cannot download CIFAR-10"):
        dataloader.load_tensors("cifar10", str(tmp_path), download=True)


def test_download_checks_md5(tmp_path, monkeypatch):
    monkeypatch.setattr(dataloader.urllib.request, "urlretrieve",
                        lambda url, dest: open(dest, "wb").write(b"tampered archive"))
    with pytest.raises(UserError, match="wrong md5"):
        dataloader.load_tensors("cifar10", str(tmp_path), download=True)


def test_digits_are_read_from_sklearns_own_file_as_load_digits_gives_them():
    """The digits come from scikit-learn's data file without importing scikit-learn (start-up time)."""
    from sklearn.datasets import load_digits
    from landscape.zoo import data
    images, labels = data.digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_digits_split_is_fixed_and_standardised():
    a, b = dataloader.load_tensors("digits"), dataloader.load_tensors("digits")
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    allx = torch.cat([a.train_x, a.test_x])
    assert abs(allx.mean()) < 1e-3 and abs(allx.std() - 1) < 1e-3
    raw = dataloader.load_tensors("digits", raw_data=True)
    assert raw.train_x.min() == 0 and raw.train_x.max() == 1


def test_custom_dataset_from_tensors_and_datasets(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def tensors():\n"
        "    x = torch.randn(10, 1, 8, 8); y = torch.arange(10) % 3\n"
        "    return (x, y), (x[:4], y[:4])\n"
        "def datasets():\n"
        "    x = torch.randn(6, 2); y = torch.arange(6) % 2\n"
        "    ds = torch.utils.data.TensorDataset(x, y)\n"
        "    return ds, ds\n")
    d = dataloader.load_tensors(f"{tmp_path}/mydata.py:tensors")
    assert d.train_x.shape == (10, 1, 8, 8) and d.test_y.tolist() == [0, 1, 2, 0] and d.num_classes == 3
    d = dataloader.load_tensors(f"{tmp_path}/mydata.py:datasets")
    assert d.train_x.shape == (6, 2) and d.train_y.dtype == torch.int64


def test_label_files_and_pickled_loaders(tmp_path):
    labels = torch.arange(1437) % 10
    path = tmp_path / "trainloader.dat"
    torch.save({"targets": labels}, path)
    d = dataloader.load_tensors("digits", trainloader=str(path))
    assert torch.equal(d.train_y, labels)

    x, y = torch.randn(5, 1, 8, 8), torch.tensor([1, 2, 3, 4, 5])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    pickled = tmp_path / "loader.dat"
    torch.save(loader, pickled)
    with pytest.raises(UserError, match="--allow_pickle"):
        dataloader.load_tensors("digits", testloader=str(pickled))
    d = dataloader.load_tensors("digits", testloader=str(pickled), allow_pickle=True)
    assert torch.equal(d.test_x, x) and torch.equal(d.test_y, y)


def test_reference_signature_returns_loaders():
    train, test = dataloader.load_dataset("digits", batch_size=100)
    xb, yb = next(iter(train))
    assert xb.shape == (100, 1, 8, 8) and len(test.dataset) == 360
