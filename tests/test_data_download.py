"""The downloader against a local HTTP server serving generated IDX files."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
from functools import partial

import numpy as np
import pytest
from test_data import write_idx

from cnncli.config import DataConfig
from cnncli.data import download, load_dataset
from cnncli.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www over HTTP on 127.0.0.1; yields (base URL, www dir, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, log
    httpd.shutdown()
    httpd.server_close()


def _digest(path, algorithm="sha256"):
    return f"{algorithm}:{hashlib.new(algorithm, path.read_bytes()).hexdigest()}"


def _fake_mnist(www, dataset="mnist", n=30):
    """Generated IDX .gz files under www/<dataset>/; returns (x_train, y_train, {name: sum})."""
    folder = www / dataset
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    files = [write_idx(folder / "train-images-idx3-ubyte", x, gz=True),
             write_idx(folder / "train-labels-idx1-ubyte", y, gz=True),
             write_idx(folder / "t10k-images-idx3-ubyte", x[:10], gz=True),
             write_idx(folder / "t10k-labels-idx1-ubyte", y[:10], gz=True)]
    return x, y, {f.name: _digest(f, "md5" if dataset == "mnist" else "sha256") for f in files}


@pytest.fixture
def mirror(server, monkeypatch, tmp_path):
    base, www, log = server
    monkeypatch.setenv("CNNCLI_DATA_URL", base)
    monkeypatch.setenv("CNNCLI_DATA", str(tmp_path / "cache"))
    return www, log


def _use_sums(monkeypatch, dataset, sums):
    monkeypatch.setitem(download.SOURCES, dataset, ("http://unused.invalid", sums))


def test_mnist_downloads_once_then_reads_the_cache(mirror, monkeypatch, tmp_path):
    www, log = mirror
    x, y, sums = _fake_mnist(www)
    _use_sums(monkeypatch, "mnist", sums)
    cfg = DataConfig(**{"dataset": "mnist", "val_split": 0, "normalize": "none"})
    calls = []
    ds = load_dataset(cfg, (1, 28, 28), 10, seed=0, progress=lambda *args: calls.append(args))
    np.testing.assert_array_equal(ds.x_train[:, 0], x)
    sizes = {f"{url.rsplit('/', 1)[1]}": (done, total) for url, done, total in calls}
    assert sizes == {name: ((www / "mnist" / name).stat().st_size,) * 2 for name in sums}
    np.testing.assert_array_equal(ds.y_test, y[:10])
    assert sorted(log) == sorted(f"/mnist/{name}" for name in sums)
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(sums)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "cache" / "mnist").iterdir()} \
        == {0o666 & ~umask}  # not mkstemp's owner-only 0o600: a shared cache stays readable
    load_dataset(cfg, (1, 28, 28), 10, seed=0)
    assert len(log) == 4  # cached files verified, not fetched again


def test_cache_dir_key_wins_over_env(mirror, monkeypatch, tmp_path):
    www, _ = mirror
    _, _, sums = _fake_mnist(www, "fashion-mnist")
    _use_sums(monkeypatch, "fashion-mnist", sums)
    cfg = DataConfig(dataset="fashion-mnist", cache_dir=str(tmp_path / "mine"), val_split=0)
    ds = load_dataset(cfg, (1, 28, 28), 10, seed=0)
    assert (tmp_path / "mine" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not (tmp_path / "cache").exists()
    assert ds.class_names[0] == "T-shirt/top"


def test_checksum_mismatch_is_refused_and_leaves_no_file(mirror, monkeypatch, tmp_path):
    www, _ = mirror
    _, _, sums = _fake_mnist(www)
    sums["train-labels-idx1-ubyte.gz"] = "sha256:" + "0" * 64
    _use_sums(monkeypatch, "mnist", sums)
    with pytest.raises(DataError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}") as err:
        load_dataset(DataConfig(**{"dataset": "mnist"}), (1, 28, 28), 10, seed=0)
    assert err.value.hint.startswith("mnist also needs t10k-images-idx3-ubyte.gz, "
                                     "t10k-labels-idx1-ubyte.gz in that folder, from http")
    left = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert left == ["train-images-idx3-ubyte.gz"]  # the good file stays; no partial, no bad


def test_missing_file_on_server_says_where_to_put_it(mirror, monkeypatch, tmp_path):
    _use_sums(monkeypatch, "mnist", {"train-images-idx3-ubyte.gz": "md5:" + "0" * 32})
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(**{"dataset": "mnist"}), (1, 28, 28), 10, seed=0)
    dest = tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    assert ("/mnist/train-images-idx3-ubyte.gz (HTTP 404 File not found); download it "
            "yourself") in str(err.value)
    assert f"save it as {dest}" in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_connection_refused_is_one_clean_line(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CNNCLI_DATA_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CNNCLI_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cannot download http://127\.0\.0\.1:\d+/cifar10/"
                                        r"cifar-10-binary\.tar\.gz \(Connection refused\); "
                                        r"download it yourself and save it as .*cifar10") as err:
        load_dataset(DataConfig(**{"dataset": "cifar10"}), (3, 32, 32), 10, seed=0)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


def test_silent_server_times_out(monkeypatch, tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("CNNCLI_DATA_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("CNNCLI_DATA", str(tmp_path / "cache"))
        monkeypatch.setattr(download, "TIMEOUT_SECONDS", 0.3)
        with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz \(.*timed out\)"):
            load_dataset(DataConfig(**{"dataset": "cifar10"}), (3, 32, 32), 10, seed=0)
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(mirror, monkeypatch, tmp_path):
    www, _ = mirror
    _, _, sums = _fake_mnist(www)
    _use_sums(monkeypatch, "mnist", sums)
    real_urlopen = download.urllib.request.urlopen

    class Dropping:
        """A response that breaks after the first chunk, like a dropped connection."""

        def __init__(self, response):
            self.response, self.calls = response, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return self.response.read(100)

    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda url, timeout: Dropping(real_urlopen(url, timeout=timeout)))
    with pytest.raises(DataError, match="Connection reset by peer"):
        load_dataset(DataConfig(**{"dataset": "mnist"}), (1, 28, 28), 10, seed=0)
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_corrupt_cached_file_is_downloaded_again(mirror, monkeypatch, tmp_path):
    www, log = mirror
    x, _, sums = _fake_mnist(www)
    _use_sums(monkeypatch, "mnist", sums)
    download.fetch("mnist")
    cached = tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    cached.write_bytes(b"garbage")
    download.fetch("mnist")
    assert log.count("/mnist/train-images-idx3-ubyte.gz") == 2
    with gzip.open(cached) as f:
        assert f.read()[16:] == x.tobytes()


def test_cached_file_failing_its_checksum_is_named_with_how_to_delete_it(mirror, monkeypatch,
                                                                        tmp_path):
    """A file saved by hand (as the offline message says) that is not the published one: the
    error names it and says how to delete it, instead of only asking to download it again."""
    (tmp_path / "elsewhere").mkdir()
    _, _, sums = _fake_mnist(tmp_path / "elsewhere")  # files the mirror does not serve
    _use_sums(monkeypatch, "mnist", sums)
    cached = tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")
    with pytest.raises(DataError) as err:
        download.fetch("mnist")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"the cached {cached} fails its md5 checksum (corrupt, truncated "
                              f"or another file); delete it (rm {cached}) and run again")
    assert "HTTP 404" in message
    assert cached.read_bytes() == b"half a file"  # never deleted behind the user's back


def _cifar_archive(path, n_per_batch=4):
    rng = np.random.default_rng(1)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            labels = rng.integers(0, 10, n_per_batch, dtype=np.uint8)
            pixels = rng.integers(0, 256, (n_per_batch, 3 * 32 * 32), dtype=np.uint8)
            blob = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
            batches[name] = (labels, pixels.reshape(-1, 3, 32, 32))
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        meta = "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                          "horse", "ship", "truck"]).encode() + b"\n\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return batches


def test_cifar10_binary_archive_parsed_with_numpy(mirror, monkeypatch):
    www, _ = mirror
    (www / "cifar10").mkdir()
    archive = www / "cifar10" / "cifar-10-binary.tar.gz"
    batches = _cifar_archive(archive)
    _use_sums(monkeypatch, "cifar10", {archive.name: _digest(archive)})
    ds = load_dataset(DataConfig(**{"dataset": "cifar10", "val_split": 0, "normalize": "none"}),
                      (3, 32, 32), 10, seed=0)
    assert ds.class_names[:2] == ["airplane", "automobile"] and len(ds.class_names) == 10
    np.testing.assert_array_equal(ds.x_train[:4], batches["data_batch_1.bin"][1])
    np.testing.assert_array_equal(ds.y_train[4:8], batches["data_batch_2.bin"][0])
    np.testing.assert_array_equal(ds.x_test, batches["test_batch.bin"][1])


def test_cifar_archive_as_path_and_broken_archive(tmp_path):
    batches = _cifar_archive(tmp_path / "c.tar.gz")
    ds = load_dataset(DataConfig(**{"path": str(tmp_path / "c.tar.gz"), "val_split": 0.5}),
                      (3, 32, 32), 10, seed=0)
    assert len(ds.y_train) + len(ds.y_val) == 20
    assert len(batches) == 6
    (tmp_path / "bad.tar.gz").write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(DataError, match="not a complete CIFAR-10 binary archive"):
        load_dataset(DataConfig(**{"path": str(tmp_path / "bad.tar.gz")}), (3, 32, 32), 10, seed=0)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNCLI_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_root() == tmp_path / "xdg" / "cnncli"
    monkeypatch.setenv("CNNCLI_DATA", str(tmp_path / "env"))
    assert download.cache_root() == tmp_path / "env"
    assert download.cache_root(tmp_path / "key") == tmp_path / "key"


def test_every_published_file_is_pinned_by_sha256():
    for dataset, (_, files) in download.SOURCES.items():
        assert files, dataset
        for name, checksum in files.items():
            algorithm, digest = checksum.split(":", 1)
            assert algorithm == "sha256", (dataset, name)
            assert len(digest) == 64 and int(digest, 16) >= 0, (dataset, name)


def test_cli_says_what_it_downloads_once(mirror, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    www, _ = mirror
    _, _, sums = _fake_mnist(www)
    _use_sums(monkeypatch, "mnist", sums)
    config = tmp_path / "m.yaml"
    config.write_text("model:\n  input_shape: [1, 28, 28]\n  layers:\n    - {type: flatten}\n"
                      "    - {type: dense, units: 10}\n"
                      "data: {dataset: mnist, val_split: 0}\ntrain: {epochs: 1}\n")
    first = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "r")])
    assert first.exit_code == 0, first.output
    lines = [line for line in first.stderr.splitlines() if line.startswith("downloading ")]
    assert sorted(line.split("/")[-1].split()[0] for line in lines) == sorted(sums)
    assert "downloading" not in first.stdout  # stdout keeps the training lines only
    again = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "r2")])
    assert again.exit_code == 0 and "downloading" not in again.stderr  # read from the cache
