"""The CIFAR-10 reader on small archives written here in the official format:
reading, checksum rejection, unsafe members, the offline error, the download path."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from quadrun.data import cifar
from quadrun.errors import ConfigError

PER_BATCH = 4
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batches(seed: int = 0) -> dict:
    """name -> pickled bytes, as in cifar-10-batches-py (python-2 style bytes keys)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in cifar.TRAIN_FILES + (cifar.TEST_FILE,):
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, PER_BATCH)]
        out[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                     b"filenames": [f"{name}_{i}.png".encode() for i in range(PER_BATCH)]}
    out[cifar.META_FILE] = {b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072,
                            b"label_names": [c.encode() for c in CLASSES]}
    return {k: pickle.dumps(v, protocol=2) for k, v in out.items()}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_archive(path: Path, files: dict, extra=()) -> str:
    """A .tar.gz with cifar-10-batches-py/<name> members (+ `extra` TarInfo, bytes); its MD5."""
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(cifar.FOLDER)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info, blob in extra:
            tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
    return _md5(path.read_bytes())


@pytest.fixture
def archive(tmp_path):
    files = _batches()
    path = tmp_path / "data" / cifar.ARCHIVE
    path.parent.mkdir()
    md5 = write_archive(path, files)
    return path, md5, {k: _md5(v) for k, v in files.items()}, files


def test_reads_official_format(archive):
    path, md5, file_md5, files = archive
    x_tr, y_tr, x_te, y_te, classes = cifar.load_cifar10(path.parent, download=False,
                                                          archive_md5=md5, file_md5=file_md5)
    assert x_tr.shape == (5 * PER_BATCH, 3, 32, 32) and x_tr.dtype == np.uint8
    assert x_te.shape == (PER_BATCH, 3, 32, 32) and classes == CLASSES
    first = pickle.loads(files["data_batch_1"], encoding="bytes")
    last = pickle.loads(files["data_batch_5"], encoding="bytes")
    # rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert np.array_equal(x_tr[0, 1, 2, 3], first[b"data"][0, 1024 + 2 * 32 + 3])
    assert np.array_equal(x_tr[-1].reshape(-1), last[b"data"][-1])
    assert list(y_tr[:PER_BATCH]) == first[b"labels"]
    # the extracted folder is used next time, even without the archive
    path.unlink()
    again = cifar.load_cifar10(path.parent, download=False, file_md5=file_md5)
    assert np.array_equal(again[0], x_tr)


def test_wrong_archive_checksum_is_refused(archive):
    path, _, file_md5, _ = archive
    with pytest.raises(ConfigError, match=r"^data_dir: .*MD5 .* expected " + cifar.ARCHIVE_MD5):
        cifar.load_cifar10(path.parent, download=False, file_md5=file_md5)
    assert not (path.parent / cifar.FOLDER).exists()  # nothing extracted


def test_corrupt_extracted_file_is_refused(archive):
    path, md5, file_md5, _ = archive
    cifar.prepare(path.parent, False, archive_md5=md5, file_md5=file_md5)
    bad = path.parent / cifar.FOLDER / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x00")
    # with the archive present it is extracted again; without it, a one-line error
    cifar.prepare(path.parent, False, archive_md5=md5, file_md5=file_md5)
    assert _md5(bad.read_bytes()) == file_md5["data_batch_3"]
    bad.write_bytes(b"broken")
    path.unlink()
    with pytest.raises(ConfigError, match="data_batch_3 has MD5"):
        cifar.prepare(path.parent, False, file_md5=file_md5)


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    blob = b"evil" if kind == tarfile.REGTYPE else None
    info.size = len(blob) if blob else 0
    return info, blob


@pytest.mark.parametrize("member,why", [
    (("../escaped", ), "escapes"),
    ((f"{cifar.FOLDER}/../../escaped", ), "escapes"),
    (("/tmp/quadrun_escaped_abs", ), "escapes"),
    ((f"{cifar.FOLDER}/link", tarfile.SYMTYPE, "../../escaped"), "link"),
    ((f"{cifar.FOLDER}/hard", tarfile.LNKTYPE, "/etc/passwd"), "link"),
])
def test_escaping_member_is_refused(tmp_path, member, why):
    data = tmp_path / "data"
    data.mkdir()
    files = _batches()
    md5 = write_archive(data / cifar.ARCHIVE, files, extra=[_member(*member)])
    with pytest.raises(ConfigError, match=why):
        cifar.load_cifar10(data, download=False, archive_md5=md5,
                           file_md5={k: _md5(v) for k, v in files.items()})
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/quadrun_escaped_abs").exists()
    assert not (data / cifar.FOLDER).exists()


def test_missing_data_offline_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        cifar.load_cifar10(tmp_path, download=False)
    assert "\n" not in str(err.value) and str(err.value).startswith("data_dir: CIFAR-10 not found")
    assert "relinear.download=true" in str(err.value)
    with pytest.raises(ConfigError, match="downloading .* failed") as err:
        cifar.load_cifar10(tmp_path, download=True, url="http://127.0.0.1:9/cifar.tar.gz")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_data_dir_is_created_only_for_a_download(tmp_path):
    """Without a download nothing is created; a failed download removes the folders it made
    (and only those); a folder that was there stays."""
    target = tmp_path / "a" / "b" / "cifar"
    with pytest.raises(ConfigError, match="not found"):
        cifar.load_cifar10(target, download=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="downloading .* failed"):
        cifar.load_cifar10(target, download=True, url="http://127.0.0.1:9/cifar.tar.gz")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="downloading .* failed"):
        cifar.load_cifar10(target, download=True, url="http://127.0.0.1:9/cifar.tar.gz")
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "b").exists()


def test_download_is_verified_before_it_is_kept(tmp_path, archive):
    path, md5, file_md5, _ = archive
    target = tmp_path / "fresh"
    x = cifar.load_cifar10(target, download=True, url=path.as_uri(), archive_md5=md5,
                           file_md5=file_md5)[0]
    assert x.shape[0] == 5 * PER_BATCH and (target / cifar.ARCHIVE).is_file()
    other = tmp_path / "other"
    with pytest.raises(ConfigError, match="downloaded .* has MD5"):
        cifar.load_cifar10(other, download=True, url=path.as_uri(), file_md5=file_md5)
    assert not (other / cifar.ARCHIVE).exists()


def test_cli_without_data_fails_in_one_line(cli, tmp_path):
    """The default (no download): one line naming the folder and the fix, exit 2, and
    nothing created anywhere: no run folder, no outputs/, no data_dir."""
    missing = tmp_path / "nonexistent" / "cifar"
    r = cli("experiment=relinear", "scale=paper", f"data_dir={missing}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"quadrun: error: data_dir: CIFAR-10 is not in {missing} ")
    assert "relinear.download=true" in lines[0] and "cifar-10-python.tar.gz" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
