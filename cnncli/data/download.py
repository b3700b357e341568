"""Download-on-first-use for the public datasets: checksummed, atomic, with a timeout."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

TIMEOUT_SECONDS = 30
CHUNK_BYTES = 1 << 20

# The CLI may set this to show progress: called with (url, bytes so far, total or None) per chunk.
progress: Callable[[str, int, int | None], None] | None = None

# dataset -> (base URL, {file name: "algorithm:hexdigest"}).
# The sums are the ones the dataset authors / torchvision publish. They are md5, not sha256:
# we only record digests we can vouch for, and md5 is what the publishers list.
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist", {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "cifar10": ("https://www.cs.toronto.edu/~kriz", {
        "cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530",
    }),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The download directory: ``cache_dir``, else $CNNCLI_DATA, else the user cache dir."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("CNNCLI_DATA"):
        return Path(os.environ["CNNCLI_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnncli"


def file_url(dataset: str, name: str) -> str:
    """Where a file is fetched from; $CNNCLI_DATA_URL/<dataset>/<name> overrides the table."""
    override = os.environ.get("CNNCLI_DATA_URL")
    if override:
        return f"{override.rstrip('/')}/{dataset}/{name}"
    return f"{SOURCES[dataset][0]}/{name}"


def digest_of(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dataset: str, cache_dir=None) -> dict[str, Path]:
    """Every file of ``dataset`` in the cache, downloading and verifying the missing ones."""
    if dataset not in SOURCES:
        raise DataError(f"no download source for dataset {dataset!r}", key="dataset")
    folder = cache_root(cache_dir) / dataset
    files = SOURCES[dataset][1]
    paths = {name: folder / name for name in files}
    missing = [name for name, checksum in files.items()
               if not _verified(paths[name], checksum)]
    for i, name in enumerate(missing):
        try:
            download(file_url(dataset, name), paths[name], files[name])
        except DataError as err:
            if len(missing) > i + 1:  # say up front everything an offline user must fetch
                err.hint = (f"{dataset} also needs {', '.join(missing[i + 1:])} in that folder, "
                            f"from {file_url(dataset, '')}")
            raise
    return paths


def _verified(path: Path, checksum: str) -> bool:
    algorithm, expected = checksum.split(":", 1)
    return path.is_file() and digest_of(path, algorithm) == expected


def download(url: str, dest: Path, checksum: str) -> None:
    """Stream ``url`` into ``dest`` via a temp file; verify, fsync, then rename into place."""
    algorithm, expected = checksum.split(":", 1)
    by_hand = f"download it yourself and save it as {dest}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data cache {dest.parent}: {err.strerror or err}",
                        key="cache_dir", hint="set data.cache_dir or $CNNCLI_DATA") from None
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                length = response.headers.get("Content-Length") if hasattr(
                    response, "headers") else None
                total = int(length) if length and length.isdigit() else None
                done = 0
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    h.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(url, done, total)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != expected:
            raise DataError(f"{url} has {algorithm} {got}, expected {expected} (corrupt or "
                            f"changed download); {by_hand} from a trusted mirror")
        os.replace(tmp, dest)
    except DataError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(f"cannot download {url} ({_reason(err)}); {by_hand}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _reason(err: Exception) -> str:
    """A short cause: 'HTTP 404 Not Found', 'Connection refused', 'timed out'."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    inner = getattr(err, "reason", err)
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner)
