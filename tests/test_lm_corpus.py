import tracemalloc

import numpy as np
import pytest

from predtext.errors import CorpusError
from predtext.lm.corpus import (
    TokenStream,
    count_chars,
    iter_text,
    iter_token_ids,
    resolve_paths,
    split_point,
)
from predtext.lm.tokenizers import CharTokenizer, WordTokenizer

MULTIBYTE = "aé€😀 Zß日\n" * 13  # 1-, 2-, 3- and 4-byte UTF-8 characters


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------- finding files


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "corpus"
    write(root / "b.txt", "bee")
    write(root / "a.md", "ay")
    write(root / "sub" / "c.txt", "sea")
    write(root / "sub" / "notes", "plain text without a suffix")
    write(root / "sub" / "image.bin", b"\x89PNG\0\0\0binary")
    write(root / ".hidden.txt", "secret")
    write(root / ".git" / "config.txt", "git stuff")
    return root


def test_directory_is_walked_recursively_sorted_skipping_binary_and_hidden(tree):
    paths = resolve_paths([tree])
    assert ([p.relative_to(tree).as_posix() for p in paths]
            == ["a.md", "b.txt", "sub/c.txt", "sub/notes"])


def test_glob_and_files_keep_spec_order_and_are_read_once(tree):
    paths = resolve_paths([str(tree / "sub" / "c.txt"), str(tree / "**" / "*.txt")])
    assert [p.relative_to(tree).as_posix() for p in paths] == ["sub/c.txt", "b.txt"]
    assert resolve_paths(str(tree / "b.txt")) == [tree / "b.txt"]


@pytest.mark.parametrize("spec, message", [
    ("missing.txt", "no such file or directory"),
    ("*.nothing", "no files match"),
    ("emptydir", "no text files found"),
])
def test_nothing_found_is_a_corpus_error(tmp_path, spec, message):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CorpusError, match=message):
        resolve_paths([str(tmp_path / spec)])
    with pytest.raises(CorpusError, match="no corpus files"):
        resolve_paths([])


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_chunks_split_multibyte_characters_correctly(tmp_path, chunk_chars):
    path = write(tmp_path / "m.txt", MULTIBYTE)
    chunks = list(iter_text([path], chunk_chars=chunk_chars))
    assert "".join(chunks) == MULTIBYTE
    assert all(0 < len(c) <= chunk_chars for c in chunks)


def test_files_are_concatenated_in_order_and_bom_dropped(tmp_path):
    a = write(tmp_path / "a.txt", b"\xef\xbb\xbfone ")
    b = write(tmp_path / "b.txt", "two")
    assert "".join(iter_text([a, b], chunk_chars=2)) == "one two"


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 4, 1000])
@pytest.mark.parametrize("data, offset", [
    (b"abc\xffdef", 3),                       # a byte that never starts a character
    ("héllo".encode() + b"\xc3(rest", 6),     # a lead byte followed by a non-continuation
    (b"ab\xe2\x28\xa1zz", 2),                 # the same for a 3-byte character
    ("€uro".encode() + b"\xe2\x82", 6),       # a character cut off by the end of the file
])
def test_invalid_utf8_names_file_and_byte_offset(tmp_path, data, offset, chunk_chars):
    path = write(tmp_path / "bad name.txt", data)
    with pytest.raises(CorpusError) as info:
        "".join(iter_text([path], chunk_chars=chunk_chars))
    message = str(info.value)
    assert "bad name.txt" in message
    assert f"byte offset {offset} " in message


def test_invalid_utf8_offset_counts_the_bytes_of_earlier_blocks(tmp_path):
    data = ("x" * 1000 + "日本" * 500).encode() + b"\x80" + b"tail"
    path = write(tmp_path / "long.txt", data)
    with pytest.raises(CorpusError, match=f"byte offset {1000 + 3000} "):
        list(iter_text([path], chunk_chars=97))


def test_replace_gives_replacement_characters(tmp_path):
    path = write(tmp_path / "bad.txt", b"ab\xffcd\xe2\x82")
    assert "".join(iter_text([path], errors="replace", chunk_chars=3)) == "ab\ufffdcd\ufffd"
    with pytest.raises(ValueError, match="errors"):
        iter_text([path], errors="backslash")


def test_empty_corpus_is_a_corpus_error(tmp_path):
    empty = write(tmp_path / "empty.txt", "")
    blank = write(tmp_path / "blank.txt", " \n\t\n")
    with pytest.raises(CorpusError, match="empty"):
        list(iter_text([empty, blank]))
    with pytest.raises(CorpusError, match="empty"):
        list(iter_token_ids([empty, blank], CharTokenizer.from_text("ab")))
    # One file with text is enough.
    real = write(tmp_path / "real.txt", "x")
    assert "".join(iter_text([empty, real, blank])) == "x \n\t\n"


def test_bad_chunk_size_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="chunk_chars"):
        iter_text([write(tmp_path / "a.txt", "a")], chunk_chars=0)


# ---------------------------------------------------------------- train / validation


def test_split_point_matches_the_standard_split():
    assert split_point(1115394, 0.1) == 1003854  # tinyshakespeare: nanoGPT's int(n * 0.9)
    assert split_point(11, 0.1) == 9
    assert split_point(10, 0.0) == 10


@pytest.mark.parametrize("chunk_chars", [1, 4, 1000])
def test_split_is_per_file_by_characters(tmp_path, chunk_chars):
    a = write(tmp_path / "a.txt", MULTIBYTE)
    b = write(tmp_path / "b.txt", "0123456789" * 3)
    n = len(MULTIBYTE)
    assert count_chars(a) == n
    kw = dict(chunk_chars=chunk_chars, valid_fraction=0.1)
    train = "".join(iter_text([a, b], split="train", **kw))
    valid = "".join(iter_text([a, b], split="validation", **kw))
    cut = int(n * 0.9)
    assert train == MULTIBYTE[:cut] + "0123456789" * 2 + "0123456"
    assert valid == MULTIBYTE[cut:] + "789"


def test_empty_validation_split_is_a_corpus_error(tmp_path):
    path = write(tmp_path / "a.txt", "words and words\n\n\n\n")
    with pytest.raises(CorpusError, match="validation split"):
        list(iter_text([path], split="validation", valid_fraction=0.2))


def test_word_ids_do_not_merge_words_across_files(tmp_path):
    a = write(tmp_path / "a.txt", "hello")
    b = write(tmp_path / "b.txt", "world")
    tok = WordTokenizer.from_text("hello world")
    ids = np.concatenate(list(iter_token_ids([a, b], tok, chunk_chars=2)))
    assert tok.decode(ids) == "helloworld"
    assert len(ids) == 2 and (ids > 0).all()


# ---------------------------------------------------------------- batching


def chunks_of(ids, size):
    return (ids[i:i + size] for i in range(0, len(ids), size))


def test_batch_layout_against_a_hand_computed_example():
    # 20 ids, B=3 streams of L=6: [0..5], [6..11], [12..17]; ids 18, 19 dropped.
    # (L - 1) // T = 2 batches of T=2.
    expected = [
        ([[0, 6, 12], [1, 7, 13]], [[1, 7, 13], [2, 8, 14]]),
        ([[2, 8, 14], [3, 9, 15]], [[3, 9, 15], [4, 10, 16]]),
    ]
    ids = np.arange(20, dtype=np.int32)
    for source in (ids, chunks_of(ids, 3)):
        with TokenStream(source, seq_len=2, batch_size=3, read_ahead=2) as stream:
            batches = list(stream)
            assert len(stream) == 2
            assert [(x.tolist(), y.tolist()) for x, y in batches] == expected
            for x, y in batches:
                assert x.dtype == y.dtype == np.int32
                assert x.flags.c_contiguous and y.flags.c_contiguous


@pytest.mark.parametrize("read_ahead", [1, 7, 1 << 16])
def test_each_column_continues_the_previous_batch(read_ahead):
    ids = np.random.default_rng(0).integers(0, 50, size=1000, dtype=np.int32)
    stream = TokenStream(chunks_of(ids, 33), seq_len=7, batch_size=4, read_ahead=read_ahead)
    batches = list(stream)
    L = 1000 // 4
    for b in range(4):
        column = np.concatenate([x[:, b] for x, _ in batches])
        assert (column == ids[b * L: b * L + len(column)]).all()
        targets = np.concatenate([y[:, b] for _, y in batches])
        assert (targets == ids[b * L + 1: b * L + 1 + len(column)]).all()


@pytest.mark.parametrize("name, kwargs", [
    ("seq_len", dict(seq_len=0, batch_size=2)),
    ("batch_size", dict(seq_len=4, batch_size=-1)),
])
def test_non_positive_sizes_name_the_argument(name, kwargs):
    with pytest.raises(ValueError, match=name):
        TokenStream(np.arange(100), **kwargs)


def test_corpus_smaller_than_one_batch_is_a_clear_error():
    with pytest.raises(CorpusError, match="too small for one batch.*20 tokens"):
        TokenStream(chunks_of(np.arange(20), 4), seq_len=8, batch_size=4)
    # B * (T + 1) tokens are exactly enough for one batch.
    assert len(TokenStream(np.arange(4 * 9), seq_len=8, batch_size=4)) == 1


def test_resume_continues_at_exactly_the_same_batch():
    ids = np.arange(500, dtype=np.int32)
    reference = TokenStream(ids, seq_len=5, batch_size=3)
    uninterrupted = [x.tolist() for _ in range(3) for x, _ in reference]  # three epochs

    first = TokenStream(chunks_of(ids, 64), seq_len=5, batch_size=3, read_ahead=10)
    seen = []
    for x, _ in first:
        seen.append(x.tolist())
    for x, _ in first:  # second epoch, interrupted part way
        seen.append(x.tolist())
        if len(seen) == len(first) + 11:
            break
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 11
    first.close()

    resumed = TokenStream(chunks_of(ids, 50), seq_len=5, batch_size=3)
    resumed.load_state_dict(state)
    for _ in range(2):
        seen.extend(x.tolist() for x, _ in resumed)
    assert seen == uninterrupted


def test_resume_with_another_layout_is_refused():
    state = TokenStream(np.arange(500), seq_len=5, batch_size=3).state_dict()
    with pytest.raises(ValueError, match="seq_len"):
        TokenStream(np.arange(500), seq_len=6, batch_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="n_tokens"):
        TokenStream(np.arange(400), seq_len=5, batch_size=3).load_state_dict(state)


def test_streaming_a_few_megabytes_keeps_memory_small(tmp_path):
    rng = np.random.default_rng(1)
    alphabet = np.frombuffer(b"abcdefghij klmnopqrstuvwxyz\n", dtype=np.uint8)
    n_chars = 4 << 20
    path = write(tmp_path / "big.txt", rng.choice(alphabet, size=n_chars).tobytes())
    tok = CharTokenizer(sorted(set(alphabet.tobytes().decode())))
    seq_len, batch_size, chunk_chars = 32, 8, 1 << 14

    tracemalloc.start()
    try:
        stream = TokenStream(iter_token_ids([path], tok, chunk_chars=chunk_chars),
                             seq_len=seq_len, batch_size=batch_size, read_ahead=1024)
        n_batches = 0
        for _ in stream:
            n_batches += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stream.close()
    assert n_batches == (n_chars // batch_size - 1) // seq_len
    # The ids alone would take 16 MB; what is held is a few chunks and buffers.
    assert peak < 1 << 20, f"peak traced memory {peak} bytes"
