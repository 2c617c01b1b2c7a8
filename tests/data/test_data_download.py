"""Downloads (file:// and a loopback HTTP server), checksums, cleanup, extraction and fetch_dataset."""

from __future__ import annotations

import logging
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.data import DATASETS, fetch_dataset, load_dataset
from robustloss.data import download as download_module
from robustloss.data.download import download_file, md5_of
from robustloss.data.extract import extract_archive
from robustloss.errors import DownloadError

PAYLOAD = bytes(range(256)) * 50


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over http://127.0.0.1:<port>/ for the duration of one test."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"  # nothing listens there any more


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- download_file -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_download_with_correct_md5(tmp_path, served, scheme):
    folder, base = served
    (folder / "blob.bin").write_bytes(PAYLOAD)
    url = (folder / "blob.bin").as_uri() if scheme == "file" else base + "blob.bin"
    dest = tmp_path / "out" / "blob.bin"
    assert download_file(url, dest, md5(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert files_in(dest.parent) == ["blob.bin"]  # no temp file left
    assert dest.stat().st_mode & 0o777 == 0o644  # not the temp file's private 0600


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_md5_mismatch_leaves_nothing(tmp_path, served, scheme):
    folder, base = served
    corrupted = PAYLOAD[:-1] + b"\x00"
    (folder / "blob.bin").write_bytes(corrupted)
    url = (folder / "blob.bin").as_uri() if scheme == "file" else base + "blob.bin"
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, md5(PAYLOAD), progress=False)
    message = str(info.value)
    assert url in message and md5(PAYLOAD) in message and md5(corrupted) in message
    assert files_in(dest.parent) == []


def test_present_file_with_right_md5_is_not_downloaded_again(tmp_path):
    dest = tmp_path / "blob.bin"
    dest.write_bytes(PAYLOAD)
    # The URL is unreachable: success proves no request was made.
    download_file(closed_port_url(), dest, md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_present_file_with_wrong_md5_is_replaced(tmp_path, served):
    folder, base = served
    (folder / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"stale partial download")
    download_file(base + "blob.bin", dest, md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_unreachable_url_gives_helpful_error(tmp_path):
    url = closed_port_url()
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, md5(PAYLOAD), progress=False)
    message = str(info.value)
    assert url in message
    assert "no network access" in message
    assert str(dest) in message and "manually" in message
    assert files_in(dest.parent) == []


def test_http_404_is_reported(tmp_path, served):
    _, base = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(base + "missing.bin", tmp_path / "missing.bin", md5(PAYLOAD), progress=False)
    assert files_in(tmp_path) == ["served"]


def test_missing_local_file_url(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        download_file((tmp_path / "nope.bin").as_uri(), tmp_path / "out" / "x", md5(b""), progress=False)


def test_interrupt_mid_download_leaves_nothing(tmp_path, served, monkeypatch):
    folder, base = served
    (folder / "blob.bin").write_bytes(PAYLOAD)

    class InterruptingBar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt  # as if Ctrl-C arrived after the first chunk

    monkeypatch.setattr(download_module, "_progress_bar", lambda *a, **k: InterruptingBar())
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(KeyboardInterrupt):
        download_file(base + "blob.bin", dest, md5(PAYLOAD), progress=False)
    assert files_in(dest.parent) == []


def test_progress_output_goes_to_stderr(tmp_path, capsys):
    src = tmp_path / "blob.bin"
    src.write_bytes(PAYLOAD)
    download_file(src.as_uri(), tmp_path / "copy.bin", md5(PAYLOAD), progress=True)
    assert capsys.readouterr().out == ""
    assert md5_of(tmp_path / "copy.bin") == md5(PAYLOAD)


# ---- archive extraction --------------------------------------------------------------


def make_tar(path: Path, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tar.addfile(info)


def test_extract_tar_and_zip(tmp_path):
    make_tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("ztop/z.txt", b"z")
    target = tmp_path / "root"
    assert extract_archive(tmp_path / "a.tar.gz", target) == [target / "top"]
    assert extract_archive(tmp_path / "b.zip", target) == [target / "ztop"]
    assert (target / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert (target / "ztop" / "z.txt").read_bytes() == b"z"
    assert files_in(target) == ["top", "ztop"]  # no staging folder left


def test_extract_merges_into_existing_folder(tmp_path):
    target = tmp_path / "root"
    (target / "top").mkdir(parents=True)
    (target / "top" / "user-file").write_bytes(b"keep me")
    make_tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x"})
    extract_archive(tmp_path / "a.tar.gz", target)
    assert (target / "top" / "user-file").read_bytes() == b"keep me"
    assert (target / "top" / "x.txt").read_bytes() == b"x"


@pytest.mark.parametrize(
    "members, symlink",
    [
        ({"../evil.txt": b"e"}, None),
        ({"top/../../evil.txt": b"e"}, None),
        ({"/tmp/evil-robustloss-test.txt": b"e"}, None),
        ({"top/ok.txt": b"ok"}, ("top/link", "/etc/passwd")),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, members, symlink):
    make_tar(tmp_path / "bad.tar.gz", members, symlink)
    target = tmp_path / "root" / "inner"
    with pytest.raises(DownloadError, match="refusing"):
        extract_archive(tmp_path / "bad.tar.gz", target)
    assert files_in(target) == [] and files_in(tmp_path / "root") == ["inner"]
    assert not Path("/tmp/evil-robustloss-test.txt").exists()


def test_unsafe_zip_member_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("../evil.txt", b"e")
    with pytest.raises(DownloadError, match="refusing"):
        extract_archive(tmp_path / "bad.zip", tmp_path / "root")
    assert not (tmp_path / "evil.txt").exists()
    assert files_in(tmp_path / "root") == []


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"<html>oops</html>")
    with pytest.raises(DownloadError, match="not a tar or zip"):
        extract_archive(tmp_path / "x.tar.gz", tmp_path / "root")


# ---- fetch_dataset end to end --------------------------------------------------------


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def serve_mnist(folder: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (5, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 5)),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (3, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 3)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def with_test_checksums(monkeypatch, name: str, files: dict[str, bytes]) -> None:
    """Replace the published MD5s (real datasets) by those of the tiny test files."""
    spec = DATASETS.get(name)
    downloads = tuple(dataclasses.replace(d, md5=md5(files[d.filename])) for d in spec.downloads)
    monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(spec, downloads=downloads))


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_fetch_mnist_then_load(tmp_path, served, monkeypatch, scheme):
    folder, base = served
    files = serve_mnist(folder)
    with_test_checksums(monkeypatch, "mnist", files)
    mirror = folder.as_uri() + "/" if scheme == "file" else base
    root = tmp_path / "data"
    assert fetch_dataset("mnist", root, progress=False, mirror=mirror) == root
    assert files_in(root / "mnist") == sorted(files)
    ds = load_dataset("mnist", root)
    assert len(ds.train) == 5 and len(ds.test) == 3


def test_fetch_uses_environment_root(tmp_path, served, monkeypatch):
    folder, base = served
    files = serve_mnist(folder)
    with_test_checksums(monkeypatch, "mnist", files)
    monkeypatch.setenv("ROBUSTLOSS_DATA", str(tmp_path / "env-root"))
    fetch_dataset("mnist", progress=False, mirror=base)
    assert len(load_dataset("mnist").test) == 3


def test_fetch_with_published_md5_rejects_a_different_file(tmp_path, served):
    # No monkeypatch: tiny files cannot match the real MNIST checksums.
    folder, base = served
    serve_mnist(folder)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        fetch_dataset("mnist", root, progress=False, mirror=base)
    assert files_in(root / "mnist") == []


def test_fetch_unreachable_mirror(tmp_path):
    with pytest.raises(DownloadError, match="no network access"):
        fetch_dataset("svhn", tmp_path, progress=False, mirror=closed_port_url().rsplit("/", 1)[0])
    assert files_in(tmp_path / "svhn") == []


def cifar10_archive(path: Path) -> None:
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n).tolist()
        return pickle.dumps({b"labels": labels, b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, protocol=2)

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(2) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(3)
    make_tar(path, members)


def test_fetch_cifar10_unpacks_into_root_once(tmp_path, served, monkeypatch, caplog):
    folder, base = served
    cifar10_archive(folder / "cifar-10-python.tar.gz")
    archive = folder / "cifar-10-python.tar.gz"
    with_test_checksums(monkeypatch, "cifar10", {archive.name: archive.read_bytes()})
    root = tmp_path / "data"
    fetch_dataset("cifar10", root, progress=False, mirror=base)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert (root / "cifar10" / "cifar-10-python.tar.gz").is_file()
    ds = load_dataset("cifar10", root)
    assert len(ds.train) == 10 and len(ds.test) == 3 and ds.train.images.dtype == torch.uint8

    with caplog.at_level(logging.INFO, logger="robustloss"):  # the library logs; the CLI prints the lines
        fetch_dataset("cifar10", root, progress=True, mirror=base)
    assert "already unpacked" in caplog.text

    # The unpacked folder deleted by the user: the next fetch unpacks again (no download).
    import shutil

    shutil.rmtree(root / "cifar-10-batches-py")
    fetch_dataset("cifar10", root, progress=False, mirror=closed_port_url().rsplit("/", 1)[0])
    assert len(load_dataset("cifar10", root).test) == 3
