"""Download-on-first-use for the public datasets: checksummed, atomic, with a timeout."""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cnncli.errors import DataError
from cnncli.files import new_file_mode

TIMEOUT_SECONDS = 30
CHUNK_BYTES = 1 << 20

#: A download's progress: called with (url, bytes so far, total or None) after each chunk.
Progress = Callable[[str, int, int | None], None]

# dataset -> (base URL, {file name: "algorithm:hexdigest"}).
# SHA-256 of the files as published (the same files whose md5 the authors and torchvision list:
# MNIST f68b3c2d... for train images, Fashion-MNIST 8d4fb7e6..., CIFAR-10 c32a1d4a...); each
# sum agrees across several independent projects that pin these downloads.
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist", {
        "train-images-idx3-ubyte.gz":
            "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", {
        "train-images-idx3-ubyte.gz":
            "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz":
            "sha256:a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz":
            "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz":
            "sha256:67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
    "cifar10": ("https://www.cs.toronto.edu/~kriz", {
        "cifar-10-binary.tar.gz":
            "sha256:c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
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


def fetch(dataset: str, cache_dir=None, *, progress: Progress | None = None) -> dict[str, Path]:
    """Every file of ``dataset`` in the cache, downloading and verifying the missing ones
    (``progress`` hears about each download's chunks)."""
    if dataset not in SOURCES:
        raise DataError(f"no download source for dataset {dataset!r}", key="dataset")
    folder = cache_root(cache_dir) / dataset
    files = SOURCES[dataset][1]
    paths = {name: folder / name for name in files}
    missing = [name for name, checksum in files.items()
               if not _verified(paths[name], checksum)]
    for i, name in enumerate(missing):
        try:
            download(file_url(dataset, name), paths[name], files[name], progress=progress)
        except DataError as err:
            if paths[name].is_file():  # in the cache, but it failed its checksum
                err.message = (f"the cached {paths[name]} fails its "
                               f"{files[name].split(':')[0]} checksum (corrupt, truncated or "
                               f"another file); delete it (rm {shlex.quote(str(paths[name]))}) "
                               f"and run again to download it; fetching it again failed: "
                               f"{err.message}")
            if len(missing) > i + 1:  # say up front everything an offline user must fetch
                err.hint = (f"{dataset} also needs {', '.join(missing[i + 1:])} in that folder, "
                            f"from {file_url(dataset, '')}")
            raise
    return paths


def _verified(path: Path, checksum: str) -> bool:
    algorithm, expected = checksum.split(":", 1)
    return path.is_file() and digest_of(path, algorithm) == expected


def download(url: str, dest: Path, checksum: str, *,
             progress: Progress | None = None) -> None:
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
        os.chmod(tmp, new_file_mode())  # a shared cache stays readable to its other users
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
