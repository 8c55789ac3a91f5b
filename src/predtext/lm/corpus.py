"""Corpus input: find the files, stream their text, split it, and batch token ids.

Everything here streams: text is read in chunks of at most ``chunk_chars``
characters and token ids are spilled to a scratch file, so a corpus larger than
memory trains with memory that does not grow with its size.

The train/validation split is the standard one of the shared corpora: in each
file, the first ``1 - valid_fraction`` of the characters train and the rest is
held out (``int(n * 0.9)`` characters train for the default fraction of 0.1,
exactly as nanoGPT splits tinyshakespeare).
"""

from __future__ import annotations

import codecs
import glob
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from predtext.errors import CorpusError

DEFAULT_CHUNK_CHARS = 1 << 20
SPLITS = ("all", "train", "validation")
_ERROR_HANDLERS = ("strict", "replace", "ignore")
_UTF8_BOM = codecs.BOM_UTF8

# Suffixes read as text when a directory is walked; files with other suffixes
# are read only when their first bytes look like UTF-8 text.
_TEXT_SUFFIXES = {
    ".txt", ".text", ".md", ".rst", ".org", ".tex", ".csv", ".tsv", ".json", ".xml",
    ".html", ".htm", ".py", ".c", ".h", ".cpp", ".hpp", ".java", ".js", ".ts", ".go",
    ".rs", ".rb", ".sh", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".eml", ".srt",
}
_SNIFF_BYTES = 8192


# ---------------------------------------------------------------- finding files


def _has_glob_magic(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _looks_like_text(path: Path) -> bool:
    """A file of unknown suffix counts as text when its first bytes hold no NUL
    and decode as UTF-8 (a character cut at the end of the sample is allowed)."""
    try:
        with open(path, "rb") as f:
            sample = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    if b"\0" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _text_files_under(directory: Path) -> list[Path]:
    """Text files below ``directory``, recursively, hidden entries skipped, sorted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            if path.suffix.lower() in _TEXT_SUFFIXES or _looks_like_text(path):
                found.append(path)
    # Sorting the full paths (not os.walk's order, which depends on the file
    # system) makes the concatenated corpus the same on every machine.
    return sorted(found, key=lambda p: p.as_posix())


def resolve_paths(specs) -> list[Path]:
    """Turn file names, directories and glob patterns into a list of text files.

    Each spec contributes, in the order given: a file, itself; a directory, its
    text files (recursive, hidden ones skipped, sorted); a glob (``**`` allowed),
    the sorted files it matches, directories among them expanded as above.
    A file named twice is read once. Raises ``CorpusError`` for a spec that
    matches nothing, or when no file is found at all.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    specs = list(specs)
    if not specs:
        raise CorpusError("no corpus files given")
    paths: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for spec in specs:
        spec_str = os.fspath(spec)
        path = Path(spec_str)
        if path.is_file():
            add(path)
        elif path.is_dir():
            files = _text_files_under(path)
            if not files:
                raise CorpusError(f"no text files found in directory {spec_str}")
            for f in files:
                add(f)
        elif _has_glob_magic(spec_str):
            matches = sorted(glob.glob(spec_str, recursive=True))
            files = []
            for m in map(Path, matches):
                if m.is_dir():
                    files.extend(_text_files_under(m))
                elif m.is_file():
                    files.append(m)
            if not files:
                raise CorpusError(f"no files match {spec_str}")
            for f in files:
                add(f)
        else:
            raise CorpusError(f"no such file or directory: {spec_str}")
    return paths


# ---------------------------------------------------------------- reading text


def _check_read_args(chunk_chars, errors):
    if not isinstance(chunk_chars, (int, np.integer)) or chunk_chars <= 0:
        raise ValueError(f"chunk_chars must be a positive integer, got {chunk_chars!r}")
    if errors not in _ERROR_HANDLERS:
        raise ValueError(f"errors must be one of {_ERROR_HANDLERS}, got {errors!r}")


def _read_chunks(path: Path, chunk_chars: int, errors: str) -> Iterator[str]:
    """Decode one file as UTF-8, ``chunk_chars`` bytes at a time (so at most that
    many characters per chunk). The incremental decoder keeps the bytes of a
    character cut by a block border until the next block completes it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    try:
        # Opened apart from the `with` below, so only a failure to open gets this message.
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        try:
            # A byte-order mark is a marker, not text: skip it.
            offset = len(_UTF8_BOM) if f.read(len(_UTF8_BOM)) == _UTF8_BOM else 0
            f.seek(offset)
        except OSError as exc:
            raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None
        # offset: bytes of the file handed to the decoder so far.
        while True:
            try:
                block = f.read(chunk_chars)
            except OSError as exc:
                raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None
            final = not block
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                # exc.start counts from the start of (pending bytes + block).
                bad = offset - pending + exc.start
                raise CorpusError(
                    f"{path}: invalid UTF-8 at byte offset {bad} ({exc.reason}); "
                    f"pass errors='replace' to read it with replacement characters"
                ) from None
            offset += len(block)
            if text:
                yield text
            if final:
                return


def _slice_chunks(chunks: Iterable[str], start: int, stop: int | None) -> Iterator[str]:
    """The characters [start, stop) of a stream of chunks, still in chunks."""
    pos = 0
    for chunk in chunks:
        end = pos + len(chunk)
        if stop is not None and pos >= stop:
            return
        lo = max(start - pos, 0)
        hi = len(chunk) if stop is None else min(stop - pos, len(chunk))
        if lo < hi:
            yield chunk[lo:hi]
        pos = end


def count_chars(path, errors: str = "strict", chunk_chars: int = DEFAULT_CHUNK_CHARS) -> int:
    """Number of characters in a file (one streaming pass)."""
    _check_read_args(chunk_chars, errors)
    return sum(len(c) for c in _read_chunks(Path(path), chunk_chars, errors))


def split_point(n_chars: int, valid_fraction: float) -> int:
    """Characters of a file of ``n_chars`` that go to training: ``int(n * (1 - f))``."""
    return int(n_chars * (1.0 - valid_fraction))


def _check_split(split, valid_fraction):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")


def iter_file_texts(paths: Iterable, split: str = "all", valid_fraction: float = 0.1,
                    chunk_chars: int = DEFAULT_CHUNK_CHARS,
                    errors: str = "strict") -> Iterator[tuple[Path, Iterator[str]]]:
    """For each file, ``(path, chunks)`` with the chunks of its part of ``split``.

    The train/validation split needs each file's length in characters, which
    costs one extra streaming pass over the file; ``split="all"`` reads once.
    Consume each file's chunks before moving on to the next file.
    """
    _check_read_args(chunk_chars, errors)
    _check_split(split, valid_fraction)
    return _iter_file_texts(_as_path_list(paths), split, valid_fraction, chunk_chars, errors)


def _iter_file_texts(paths, split, valid_fraction, chunk_chars, errors):
    for path in paths:
        chunks = _read_chunks(path, chunk_chars, errors)
        if split != "all":
            cut = split_point(count_chars(path, errors, chunk_chars), valid_fraction)
            if split == "train":
                chunks = _slice_chunks(chunks, 0, cut)
            else:
                chunks = _slice_chunks(chunks, cut, None)
        yield path, chunks


def _as_path_list(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _empty_corpus_error(paths, split) -> CorpusError:
    names = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    part = "" if split == "all" else f" ({split} split)"
    return CorpusError(f"the corpus{part} is empty: no text other than whitespace in {names}")


def iter_text(paths: Iterable, chunk_chars: int = DEFAULT_CHUNK_CHARS, errors: str = "strict",
              split: str = "all", valid_fraction: float = 0.1) -> Iterator[str]:
    """Stream the UTF-8 text of ``paths`` (one after another) in chunks of at most
    ``chunk_chars`` characters.

    ``errors``: "strict" raises ``CorpusError`` naming the file and the byte offset
    of invalid UTF-8; "replace" puts U+FFFD in its place; "ignore" drops it.
    A corpus with no text other than whitespace raises ``CorpusError`` once the
    stream is exhausted. ``split`` selects the "train" or "validation" part of
    each file (see the module docstring).
    """
    paths = _as_path_list(paths)
    # Checks the arguments now, not at the first next().
    files = iter_file_texts(paths, split, valid_fraction, chunk_chars, errors)
    return _iter_text(paths, files, split)


def _iter_text(paths, files, split):
    seen_text = False
    for _, chunks in files:
        for chunk in chunks:
            seen_text = seen_text or not chunk.isspace()
            yield chunk
    if not seen_text:
        raise _empty_corpus_error(paths, split)


def iter_token_ids(paths: Iterable, tokenizer, split: str = "all", valid_fraction: float = 0.1,
                   chunk_chars: int = DEFAULT_CHUNK_CHARS,
                   errors: str = "strict") -> Iterator[np.ndarray]:
    """Stream the token ids (int32 arrays) of ``paths`` through ``tokenizer``.

    Each file is tokenized on its own, so a word at the end of one file never
    merges with the first word of the next. Raises ``CorpusError`` for an empty
    corpus, like ``iter_text``.
    """
    paths = _as_path_list(paths)
    # Checks the arguments now, not at the first next().
    files = iter_file_texts(paths, split, valid_fraction, chunk_chars, errors)
    return _iter_token_ids(paths, files, tokenizer, split)


def _iter_token_ids(paths, files, tokenizer, split):
    seen_text = False

    def watch(chunks):
        nonlocal seen_text
        for chunk in chunks:
            seen_text = seen_text or not chunk.isspace()
            yield chunk

    for _, chunks in files:
        for ids in tokenizer.encode_stream(watch(chunks)):
            if ids.size:
                yield ids
    if not seen_text:
        raise _empty_corpus_error(paths, split)


# ---------------------------------------------------------------- batching


class TokenStream:
    """Batches of token ids for truncated backpropagation through time.

    The corpus of N ids is cut into ``batch_size`` contiguous streams of
    L = N // batch_size ids (the last N % batch_size ids are dropped). Batch k holds,
    for every stream b, the ids ``L*b + k*T + t`` for t < T as input and the ids
    one further on as targets::

        x_tb[t, b] = ids[L*b + k*T + t]        y_tb[t, b] = ids[L*b + k*T + t + 1]

    so column b of batch k+1 continues column b of batch k exactly: the hidden
    state a model carries from one batch to the next keeps reading the same text.
    An epoch has (L - 1) // T batches, all of shape (T, B) (time-major, int32,
    C-contiguous); the last, shorter piece of each stream is left out so that
    every batch has the same shape.

    Memory: ids given as an iterable of chunks are written, chunk by chunk, to
    an anonymous scratch file in ``tmp_dir`` (4 bytes per id, deleted when the
    stream is closed or collected); batches are then read from it in blocks of
    about ``read_ahead`` ids per stream, so memory is O(B * read_ahead + one
    chunk), whatever the corpus size. The scratch file also lets later epochs
    skip tokenizing the corpus again. An ids array that is already in memory is
    used as it is.

    Position: iterating yields the batches from the current position to the end
    of the epoch, then moves to the next epoch. ``state_dict()`` is the position
    after the last batch yielded; restore it with ``load_state_dict`` to resume
    at exactly the next batch. Save it only once that batch has been trained on.
    """

    def __init__(self, ids, seq_len: int, batch_size: int, *, read_ahead: int = 1 << 16,
                 tmp_dir=None, streams=None):
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size),
                            ("read_ahead", read_ahead)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        # ``streams``: the columns this reader yields (data-parallel training gives each
        # process a range of them); the layout, position and epoch are the whole batch's.
        streams = range(self.batch_size) if streams is None else streams
        if not isinstance(streams, range) or streams.step != 1 or not len(streams) \
                or streams.start < 0 or streams.stop > self.batch_size:
            raise ValueError(f"streams: expected a non-empty range within [0, {self.batch_size}), "
                             f"got {streams!r}")
        self.streams = streams
        self._file = None
        self._ids = None
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError("ids must be a 1-D integer array, "
                                 f"got shape {ids.shape} dtype {ids.dtype}")
            self._ids = ids.astype(np.int32, copy=False)
            self.n_tokens = len(ids)
        else:
            self.n_tokens = self._spill(ids, tmp_dir)

        self.stream_len = self.n_tokens // self.batch_size
        self.batches_per_epoch = max((self.stream_len - 1) // self.seq_len, 0)
        if self.batches_per_epoch == 0:
            self.close()
            need = self.batch_size * (self.seq_len + 1)
            raise CorpusError(
                f"the corpus is too small for one batch: it has {self.n_tokens} tokens, and "
                f"batch_size {self.batch_size} x seq_len {self.seq_len} needs at least {need}; "
                f"use more text or a smaller batch_size / seq_len"
            )
        # Batches read per refill of the per-stream buffers.
        self._window = max(1, min(read_ahead // self.seq_len, self.batches_per_epoch))
        self._buf = None
        self._buf_first = -1  # batch index at the start of the buffer
        self.epoch = 0
        self.batch_index = 0  # next batch of the current epoch

    def _spill(self, chunks, tmp_dir) -> int:
        # An anonymous temporary file: nothing to clean up after a crash.
        # It lives as long as this object (close() ends it), so no `with` here.
        self._file = tempfile.TemporaryFile(dir=tmp_dir, prefix="predtext-ids-")  # noqa: SIM115
        n = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 1 or (chunk.size and not np.issubdtype(chunk.dtype, np.integer)):
                self.close()
                raise ValueError("each ids chunk must be a 1-D integer array, "
                                 f"got {chunk.dtype} {chunk.shape}")
            self._file.write(chunk.astype("<i4", copy=False).tobytes())
            n += chunk.size
        self._file.flush()
        return n

    # -- position

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def tokens_per_batch(self) -> int:
        return self.seq_len * self.batch_size

    def state_dict(self) -> dict:
        """The data position (JSON-able), with the layout it belongs to."""
        return {
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "n_tokens": self.n_tokens,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict):
        """Continue from a position saved by ``state_dict``. The position must come
        from the same corpus and layout; otherwise ValueError says what differs."""
        for key in ("n_tokens", "seq_len", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"data position was saved with {key}={state.get(key)!r}, but this stream has "
                    f"{key}={getattr(self, key)!r}; "
                    "resume with the same corpus, seq_len and batch_size"
                )
        epoch, index = state.get("epoch"), state.get("batch_index")
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(index, int) \
                or not 0 <= index <= self.batches_per_epoch:
            raise ValueError(f"bad data position: epoch={epoch!r}, batch_index={index!r}")
        self.epoch, self.batch_index = epoch, index

    # -- batches

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The remaining batches ``(x_tb, y_tb)`` of the current epoch."""
        if self.batch_index >= self.batches_per_epoch:
            self.epoch, self.batch_index = self.epoch + 1, 0
        while self.batch_index < self.batches_per_epoch:
            batch = self.get_batch(self.batch_index)
            self.batch_index += 1
            yield batch
        self.epoch, self.batch_index = self.epoch + 1, 0

    def get_batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``k`` of an epoch (any order; sequential reads are the fast path)."""
        if not 0 <= k < self.batches_per_epoch:
            raise IndexError(f"batch {k} out of range [0, {self.batches_per_epoch})")
        if self._ids is None and self._file is None:
            raise ValueError("the TokenStream is closed")
        if self._buf is None or not self._buf_first <= k < self._buf_first + self._window:
            self._fill(k)
        T = self.seq_len
        start = (k - self._buf_first) * T
        block = self._buf[:, start:start + T + 1]
        x_tb = np.ascontiguousarray(block[:, :T].T)
        y_tb = np.ascontiguousarray(block[:, 1:].T)
        return x_tb, y_tb

    def _fill(self, first: int):
        """Load batches first .. first+window-1 of every stream into the buffer."""
        T, L = self.seq_len, self.stream_len
        window = min(self._window, self.batches_per_epoch - first)
        width = window * T + 1
        if self._buf is None or self._buf.shape[1] < width:
            self._buf = np.empty((len(self.streams), self._window * T + 1), dtype=np.int32)
        for row_index, b in enumerate(self.streams):
            begin = b * L + first * T
            row = self._buf[row_index, :width]
            if self._ids is not None:
                row[:] = self._ids[begin:begin + width]
            else:
                self._file.seek(begin * 4)
                got = self._file.readinto(memoryview(row).cast("B"))
                if got != width * 4:
                    raise CorpusError(f"token scratch file ended early at stream {b} "
                                      f"(read {got} bytes)")
                if not _LITTLE_ENDIAN:
                    row.byteswap(inplace=True)
        self._buf_first = first

    def close(self):
        """Delete the scratch file (if any). Further batches cannot be read."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_LITTLE_ENDIAN = np.little_endian
