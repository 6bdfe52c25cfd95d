import io
import pickle
import urllib.request

import numpy as np
import pytest

from cae_codec import datasets


def test_reads_archive_and_folder(tiny_cifar):
    archive, batches = tiny_cifar
    for source in (archive, archive.parent, archive.parent / "cifar-10-batches-py"):
        test = datasets.load_cifar10("test", source)
        np.testing.assert_array_equal(test, batches["test_batch"])
    train = datasets.load_cifar10("train", archive)
    assert train.shape == (5 * 12, 32, 32, 3)
    np.testing.assert_array_equal(train[12:24], batches["data_batch_2"])


def test_environment_variable_names_the_copy(tiny_cifar, monkeypatch):
    archive, batches = tiny_cifar
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(archive.parent))
    np.testing.assert_array_equal(datasets.load_cifar10("test"), batches["test_batch"])


def test_missing_copy_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DataError, match="no cifar-10-python.tar.gz"):
        datasets.load_cifar10("test", tmp_path)


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(datasets.DataError, match=f"put cifar-10-python.tar.gz in {tmp_path}"):
        datasets.download_cifar10(tmp_path)
    assert not list(tmp_path.iterdir())


def test_download_checks_md5_and_caches(tmp_path, monkeypatch):
    payload = b"definitely not cifar"

    def fake(url, timeout):
        assert url == datasets.CIFAR10_URL
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    with pytest.raises(datasets.DataError, match="MD5"):
        datasets.download_cifar10(tmp_path)
    assert not (tmp_path / datasets.CIFAR10_ARCHIVE).exists()
    monkeypatch.setattr(datasets, "CIFAR10_MD5", __import__("hashlib").md5(payload).hexdigest())
    assert datasets.download_cifar10(tmp_path).read_bytes() == payload


def test_cache_is_used_when_nothing_is_given(tiny_cifar, tmp_path, monkeypatch):
    archive, _ = tiny_cifar
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "cache_dir", lambda: archive.parent)
    assert datasets.locate_cifar10() == archive


def test_unpickler_refuses_code(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "batches.meta").write_bytes(b"")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(datasets.DataError, match="builtins.print"):
        datasets.load_cifar10("test", root)


def test_folder_images_with_transparency_are_shown_over_white(tmp_path):
    from PIL import Image

    from cae_codec.datasets import load_folder

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    rgba[0, 0] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    (image,) = load_folder(tmp_path)
    assert tuple(image[0, 0]) == (10, 20, 30) and tuple(image[3, 3]) == (255, 255, 255)
