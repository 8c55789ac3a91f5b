"""Model and checkpoint files: safetensors tensors plus predtext's JSON metadata.

A file is a plain safetensors file. Its header's ``__metadata__`` map holds one
key, ``"predtext"``, whose value is a JSON document::

    {"format": "predtext", "format_version": 1, "kind": "model" | "checkpoint",
     "tensors_sha256": "...",   # over every tensor's name, dtype, shape and bytes
     "meta": {...}}             # the caller's metadata (config, tokenizer, training, extra...)

Other safetensors tools can read the tensors; predtext reads only files that
carry this document, and never unpickles anything. The checksum catches damage
inside the tensor data, which the safetensors header alone cannot.

A model with 8-bit weights (``LanguageModel.quantize``) stores each such matrix as an
int8 tensor under its own name and its per-row float32 scales as ``NAME.scale``; the
model's metadata lists them under ``"quantization"`` (see ``pack_int8``).

Files are written atomically: to a temporary file in the target directory,
flushed and fsynced, then renamed over the target, so a crash or a full disk
leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

from predtext.errors import ModelFileError

FORMAT_NAME = "predtext"
FORMAT_VERSION = 1
METADATA_KEY = "predtext"

_MODEL_PREFIX = "model/"
_OPTIMIZER_PREFIX = "optimizer/"
_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own bound on the header size

#: Key of the model metadata that lists the 8-bit weights, and the suffix of their scales.
QUANTIZATION_KEY = "quantization"
SCALE_SUFFIX = ".scale"
INT8_SCHEME = "int8"
_INT8_MAX = 127

# The dtypes that both NumPy and safetensors have.
_STORABLE_DTYPES = {np.dtype(t) for t in (
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
    np.uint64, np.int64, np.float16, np.float32, np.float64)}


# ---------------------------------------------------------------- writing


def _check_tensors(tensors, what="tensors") -> dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"{what} must be a dict of name -> numpy array, "
                        f"got {type(tensors).__name__}")
    checked = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise ValueError(f"{what}: tensor name {name!r} must be a non-empty str "
                             "not starting with '__'")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{what}[{name!r}] must be a numpy array, got {type(arr).__name__}")
        if arr.dtype.newbyteorder("=") not in _STORABLE_DTYPES:
            raise TypeError(f"{what}[{name!r}] has dtype {arr.dtype}, "
                            "which a model file cannot store")
        # Little-endian, C-contiguous: the byte layout safetensors stores.
        checked[name] = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
    return checked


def _tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        arr = tensors[name]
        digest.update(json.dumps([name, arr.dtype.newbyteorder("<").str, list(arr.shape)]).encode())
        little = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
        digest.update(little.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes):
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the
    whole new content, never a mix, whatever fails on the way."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename cannot cross file systems; os.open with
    # mode 0o666 lets the umask decide the permissions, as for any new file.
    tmp_name = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path):
    # The rename itself is durable only once the directory entry is flushed;
    # not every system lets a directory be opened for that, so it is best effort.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _write(path, kind: str, tensors: dict[str, np.ndarray], meta: dict):
    path = Path(path)
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "tensors_sha256": _tensors_digest(tensors),
        "meta": meta,
    }
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be JSON-serialisable: {exc}") from None
    data = safetensors.numpy.save(tensors, metadata={METADATA_KEY: text})
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise ModelFileError(path, f"cannot write ({exc.strerror or exc})") from exc


def save_model(path, tensors: dict[str, np.ndarray], meta: dict):
    """Write a model file: ``tensors`` (name -> array) and ``meta``, a JSON-able dict
    (by convention: ``config``, ``tokenizer``, ``training``, and free-form sections
    such as n-gram counts). Atomic: on any failure the old file stays intact."""
    _write(path, "model", _check_tensors(tensors), meta)


@dataclass
class Checkpoint:
    """Training state: the model (its tensors and metadata), the optimizer's arrays,
    and a JSON-able ``state`` (step, RNG ``bit_generator.state``, data position, ...)."""

    model_tensors: dict[str, np.ndarray]
    model_meta: dict
    optimizer_tensors: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict = field(default_factory=dict)


def save_checkpoint(path, model_tensors: dict[str, np.ndarray], model_meta: dict,
                    optimizer_tensors: dict[str, np.ndarray] | None = None,
                    state: dict | None = None):
    """Write a checkpoint file (same format as a model file, atomic).

    ``state`` must be JSON-able; a NumPy ``Generator``'s ``bit_generator.state``
    and ``TokenStream.state_dict()`` are.
    """
    model_tensors = _check_tensors(model_tensors, "model_tensors")
    optimizer_tensors = _check_tensors(optimizer_tensors or {}, "optimizer_tensors")
    tensors = {_MODEL_PREFIX + k: v for k, v in model_tensors.items()}
    tensors.update({_OPTIMIZER_PREFIX + k: v for k, v in optimizer_tensors.items()})
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _write(path, "checkpoint", tensors, {"model": model_meta, "state": state or {}})


# ---------------------------------------------------------------- reading


def _read_header(path: Path, f, file_size: int) -> tuple[dict, int]:
    """The safetensors header of an open file and the size of its data section."""
    if file_size == 0:
        raise ModelFileError(path, "empty file")
    if file_size < 8:
        raise ModelFileError(path, f"truncated or not a model file ({file_size} bytes)")
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > _HEADER_LIMIT:
        raise ModelFileError(path, "not a safetensors model file (implausible header size)")
    if 8 + header_len > file_size:
        raise ModelFileError(path, f"truncated: header of {header_len} bytes, file of {file_size}")
    raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(path, "not a safetensors model file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "not a safetensors model file (header is not a JSON object)")
    return header, file_size - 8 - header_len


def _read_document(path: Path, header: dict) -> dict:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ModelFileError(path, "not a predtext model file "
                                   "(safetensors file without predtext metadata)")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except (TypeError, ValueError):
        raise ModelFileError(path, "corrupt predtext metadata (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelFileError(path, "not a predtext model file (unknown metadata format)")
    version = document.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(path, f"corrupt predtext metadata (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {version} is newer than this predtext reads "
                  f"(up to {FORMAT_VERSION}); upgrade predtext to load it")
    if (not isinstance(document.get("meta"), dict)
            or document.get("kind") not in ("model", "checkpoint")):
        raise ModelFileError(path, "corrupt predtext metadata (missing kind or meta)")
    return document


def _check_data_extent(path: Path, header: dict, data_size: int):
    # The tensors must tile the data section exactly; a shorter file was cut off.
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (TypeError, KeyError, ValueError):
            raise ModelFileError(path, f"corrupt header entry for tensor {name!r}") from None
    if data_size < end:
        raise ModelFileError(path, f"truncated: tensor data needs {end} bytes, "
                                   f"file has {data_size}")
    if data_size > end:
        raise ModelFileError(path, f"corrupt: {data_size - end} unexpected bytes "
                                   "after the tensor data")


def _open_checked(path) -> tuple[Path, dict, dict]:
    """Read and check a whole file: (path, document, tensors)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            header, data_size = _read_header(path, f, file_size)
            document = _read_document(path, header)
            _check_data_extent(path, header, data_size)
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a directory, not a model file") from None
    except ModelFileError:
        raise
    except OSError as exc:
        raise ModelFileError(path, f"cannot read ({exc.strerror or exc})") from None
    if len(data) != file_size:
        raise ModelFileError(path, "file changed while being read")
    try:
        loaded = safetensors.numpy.load(data)
    except Exception as exc:  # the library's own error type varies between versions
        raise ModelFileError(path, f"corrupt safetensors data ({exc})") from None
    # Copies: the loaded arrays are read-only views of ``data``.
    tensors = {name: np.array(arr) for name, arr in loaded.items()}
    if _tensors_digest(tensors) != document.get("tensors_sha256"):
        raise ModelFileError(path, "corrupt: tensor data does not match its checksum")
    return path, document, tensors


def load_model(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a model file: ``(tensors, meta)`` as given to ``save_model``.

    A checkpoint file also loads, giving its model part. Any missing, truncated,
    corrupt, foreign or too-new file raises ``ModelFileError`` naming the file.
    """
    path, document, tensors = _open_checked(path)
    if document["kind"] == "checkpoint":
        checkpoint = _as_checkpoint(path, document, tensors)
        return checkpoint.model_tensors, checkpoint.model_meta
    return tensors, document["meta"]


def _as_checkpoint(path: Path, document: dict, tensors: dict) -> Checkpoint:
    meta = document["meta"]
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("state"), dict):
        raise ModelFileError(path, "corrupt checkpoint metadata (missing model or state)")
    model, optimizer = {}, {}
    for name, arr in tensors.items():
        if name.startswith(_MODEL_PREFIX):
            model[name[len(_MODEL_PREFIX):]] = arr
        elif name.startswith(_OPTIMIZER_PREFIX):
            optimizer[name[len(_OPTIMIZER_PREFIX):]] = arr
        else:
            raise ModelFileError(path, f"corrupt checkpoint: unexpected tensor {name!r}")
    return Checkpoint(model, meta["model"], optimizer, meta["state"])


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; a model file (or anything
    else that is not a checkpoint) raises ``ModelFileError``."""
    path, document, tensors = _open_checked(path)
    if document["kind"] != "checkpoint":
        raise ModelFileError(path, f"is a {document['kind']} file, not a checkpoint")
    return _as_checkpoint(path, document, tensors)


def read_meta(path) -> dict:
    """Only the predtext metadata document of a model or checkpoint file (format,
    kind, meta), without reading the tensors; cheap, for listing models."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header, _ = _read_header(path, f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot read ({exc.strerror or exc})") from None
    return _read_document(path, header)


# ---------------------------------------------------------------- 8-bit weights


def pack_int8(tensors: dict[str, np.ndarray], pairs: dict) -> dict[str, np.ndarray]:
    """``tensors`` with each weight named in ``pairs`` (name -> ``(q, scale)``) stored as
    its int8 ``q`` under its own name and its float32 ``scale`` under ``NAME.scale``."""
    packed = dict(tensors)
    for name, (q, scale) in pairs.items():
        packed[name] = np.asarray(q, dtype=np.int8)
        packed[name + SCALE_SUFFIX] = np.asarray(scale, dtype=np.float32)
    return packed


def int8_meta(names) -> dict:
    """The ``"quantization"`` metadata entry of a model whose weights ``names`` are int8."""
    return {"scheme": INT8_SCHEME, "granularity": "per output row, symmetric",
            "tensors": sorted(names)}


def unpack_int8(path, tensors: dict[str, np.ndarray], entry) -> tuple[dict, dict]:
    """Split a model's tensors into ``(float tensors, {name: (q, scale)})``.

    ``entry`` is the metadata's ``"quantization"`` entry, or None for a float model.
    Raises ``ModelFileError`` naming ``path`` for an unknown scheme, a listed weight that is
    missing, not a 2-D int8 array or outside [-127, 127], a scale that is missing, of the
    wrong shape or dtype, or not positive and finite, and for int8 weights or scales the
    entry does not list.
    """
    names = []
    if entry is not None:
        if not isinstance(entry, dict) or entry.get("scheme") != INT8_SCHEME:
            scheme = entry.get("scheme") if isinstance(entry, dict) else entry
            raise ModelFileError(path, f"quantisation scheme {scheme!r} is not one this "
                                       f"predtext reads ({INT8_SCHEME!r})")
        names = entry.get("tensors")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelFileError(path, "corrupt quantisation metadata (no list of tensors)")
    rest = dict(tensors)
    pairs = {name: _int8_pair(path, name, rest.pop(name, None), rest.pop(name + SCALE_SUFFIX, None))
             for name in names}
    for name in sorted(rest):
        if rest[name].dtype == np.int8:
            raise ModelFileError(path, f"tensor {name!r} is int8 but the file lists no scale "
                                       "for it (not a quantised weight)")
    for name in sorted(rest):
        # A scale beside a float weight: a quantised file that lost its metadata.
        if name.endswith(SCALE_SUFFIX) and name[:-len(SCALE_SUFFIX)] in rest:
            raise ModelFileError(path, f"tensor {name!r} is a scale of no int8 weight")
    return rest, pairs


def _int8_pair(path, name, q, scale):
    if q is None:
        raise ModelFileError(path, f"the int8 weight {name!r} is missing")
    if q.dtype != np.int8 or q.ndim != 2:
        raise ModelFileError(path, f"the int8 weight {name!r} is {q.dtype} of shape {q.shape}, "
                                   "not a 2-D int8 array")
    if q.size and int(np.abs(q.astype(np.int16)).max()) > _INT8_MAX:
        raise ModelFileError(path, f"the int8 weight {name!r} holds -128, outside the "
                                   "symmetric range [-127, 127]")
    if scale is None:
        raise ModelFileError(path, f"the int8 weight {name!r} has no scale tensor "
                                   f"{name + SCALE_SUFFIX!r}")
    if scale.dtype != np.float32 or scale.shape != q.shape[:1]:
        raise ModelFileError(path, f"the scale {name + SCALE_SUFFIX!r} is {scale.dtype} of "
                                   f"shape {scale.shape}; expected float32 of shape {q.shape[:1]}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ModelFileError(path, f"the scale {name + SCALE_SUFFIX!r} holds values that are "
                                   "not positive and finite")
    return q, scale
