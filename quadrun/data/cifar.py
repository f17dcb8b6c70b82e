"""CIFAR-10 from the official python-pickle archive, checksum-verified.

    x_train, y_train, x_test, y_test, classes = load_cifar10("data")

Looks in `data_dir` for, in order: the extracted folder `cifar-10-batches-py/` (each file's
MD5 checked), the archive `cifar-10-python.tar.gz` (MD5 checked, then extracted safely),
and, when `download` is true, downloads the archive (MD5 checked before it is kept; only
then is `data_dir` created, and removed again when nothing was kept). When none of these
works the error is one line (ConfigError) saying what to put where.

Extraction refuses any member that could land outside the target folder (absolute paths,
`..`, links, devices) before anything is written, then extracts with tarfile's "data"
filter as a second guard. Images come back as uint8 arrays of shape (N, 3, 32, 32).
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from quadrun.errors import ConfigError

log = logging.getLogger("quadrun")

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def available(data_dir) -> bool:
    """Whether an extracted folder or an archive is present (not yet verified)."""
    root = Path(data_dir)
    return (root / FOLDER).is_dir() or (root / ARCHIVE).is_file()


def problem(data_dir, archive_md5: str = ARCHIVE_MD5, file_md5: Optional[dict] = None) -> Optional[str]:
    """What `prepare` would refuse in data_dir, checked before a run starts (checksums
    included; nothing is extracted or written): None when the extracted folder is good or
    a good archive can replace it."""
    root = Path(data_dir)
    folder, archive = root / FOLDER, root / ARCHIVE
    found = _folder_ok(folder, FILE_MD5 if file_md5 is None else file_md5) \
        if folder.is_dir() else f"{folder} is missing"
    if found is None:
        return None
    if archive.is_file():
        got = md5sum(archive)
        if got == archive_md5:
            return None
        return (f"{archive} has MD5 {got}, expected {archive_md5} (not the official CIFAR-10 "
                "archive, or a broken download); replace it")
    if folder.is_dir():
        return f"{found}; delete {folder} (and put the official {ARCHIVE} in {root}) to read it again"
    return None


def _folder_ok(folder: Path, file_md5: dict) -> Optional[str]:
    """None when every file is there with its checksum, else what is wrong."""
    for name, expected in file_md5.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        got = md5sum(path)
        if got != expected:
            return f"{path} has MD5 {got}, expected {expected}"
    return None


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse members that could write outside the target folder."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts \
            or ":" in member.name.split("/")[0]:
        raise ConfigError(f"data_dir: archive member {member.name!r} escapes the target "
                          "folder; refusing to extract this archive")
    if not (member.isfile() or member.isdir()):
        raise ConfigError(f"data_dir: archive member {member.name!r} is a link or special "
                          "file; refusing to extract this archive")


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a .tar.gz into `target` after checking every member (see _check_member)."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m)
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ConfigError(f"data_dir: cannot extract {archive}: {exc}") from None


def _missing_parents(folder: Path) -> list:
    """The folders that `folder.mkdir(parents=True)` would create, deepest first."""
    out = []
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _download(url: str, dest: Path, expected_md5: str, timeout: float = 60) -> None:
    """Stream `url` into dest.part, check its MD5, then rename to dest. The folder is made
    here (the user asked for the download); when nothing is kept, the folders this made
    are removed again."""
    part = dest.with_name(dest.name + ".part")
    created = _missing_parents(dest.parent)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot create {dest.parent} for the CIFAR-10 download "
                          f"({exc.strerror or exc}); give a writable data_dir") from None
    try:
        _fetch(url, dest, part, expected_md5, timeout)
    except BaseException:
        part.unlink(missing_ok=True)
        for folder in created:  # deepest first; only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _fetch(url: str, dest: Path, part: Path, expected_md5: str, timeout: float) -> None:
    h, done = hashlib.md5(), 0
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            for block in iter(lambda: resp.read(1 << 20), b""):
                fh.write(block)
                h.update(block)
                done += len(block)
                if done % (32 << 20) < (1 << 20):
                    log.info("  %d MB", done >> 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"data_dir: CIFAR-10 is not in {dest.parent} (no {FOLDER}/ or "
                          f"{ARCHIVE}) and downloading {url} failed ({reason}); put the "
                          f"official {ARCHIVE} there, or run where the network is reachable") from None
    if h.hexdigest() != expected_md5:
        part.unlink(missing_ok=True)
        raise ConfigError(f"data_dir: downloaded {ARCHIVE} has MD5 {h.hexdigest()}, expected "
                          f"{expected_md5}; nothing was kept, try again")
    os.replace(part, dest)


def prepare(data_dir, download: bool = True, *, archive_md5: str = ARCHIVE_MD5,
            file_md5: Optional[dict] = None, url: str = URL) -> Path:
    """Return the verified `cifar-10-batches-py` folder, extracting or downloading as needed."""
    root = Path(data_dir)
    file_md5 = FILE_MD5 if file_md5 is None else file_md5
    folder, archive = root / FOLDER, root / ARCHIVE
    if folder.is_dir():
        problem = _folder_ok(folder, file_md5)
        if problem is None:
            return folder
        if not archive.is_file():
            raise ConfigError(f"data_dir: {problem}; delete {folder} (and put the official "
                              f"{ARCHIVE} in {root}) to read it again")
        log.warning("%s; extracting %s again", problem, archive)
    if not archive.is_file():
        if not download:
            raise ConfigError(f"data_dir: CIFAR-10 not found in {root} (expected the official "
                              f"{ARCHIVE} or its extracted {FOLDER}/); put it there, or set "
                              "relinear.download=true to download it there")
        _download(url, archive, archive_md5)
    got = md5sum(archive)
    if got != archive_md5:
        raise ConfigError(f"data_dir: {archive} has MD5 {got}, expected {archive_md5} (not "
                          "the official CIFAR-10 archive, or a broken download); replace it")
    staging = root / f".{FOLDER}.extract{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        extracted = staging / FOLDER
        problem = _folder_ok(extracted, file_md5) if extracted.is_dir() else \
            f"{archive} has no {FOLDER}/ folder"
        if problem is not None:
            raise ConfigError(f"data_dir: {problem}")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(extracted, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _key(d: dict, name: str):
    return d[name.encode()] if name.encode() in d else d[name]


def read_folder(folder: Path):
    """(x_train, y_train, x_test, y_test, classes) from a verified extracted folder.
    The pickles are only unpickled after their checksums matched (see `prepare`)."""
    def batch(name):
        d = _unpickle(folder / name)
        x = np.asarray(_key(d, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(_key(d, "labels"), dtype=np.int64)
        return x, y

    parts = [batch(n) for n in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = batch(TEST_FILE)
    names = _key(_unpickle(folder / META_FILE), "label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return x_train, y_train, x_test, y_test, classes


def load_cifar10(data_dir, download: bool = True, **checksums):
    """Verified CIFAR-10 as uint8 arrays; `checksums` (archive_md5=, file_md5=, url=) are
    for tests that write their own small archive in the official format."""
    return read_folder(prepare(data_dir, download, **checksums))
