"""The language server's pure parts: LSP lines and columns in each encoding, documents kept in
step with edits (checked against editing the whole string), and the settings."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predtext.lsp.documents import FULL_CONTEXT_CHARS, TAIL_CHARS, Document
from predtext.lsp.positions import UTF8, UTF16, UTF32, line_content, split_lines, to_index, to_units
from predtext.lsp.settings import DEFAULT_LANGUAGES, Settings, is_secret, may_learn, updated

EMOJI = "\U0001F600"          # 2 UTF-16 code units, 4 UTF-8 bytes
COMBINING = "e\u0301"         # e + combining acute: two code points
ENCODINGS = (UTF8, UTF16, UTF32)


def units_of(text, encoding):
    """Reference: the length of ``text`` in ``encoding``'s code units."""
    if encoding == UTF8:
        return len(text.encode("utf-8"))
    if encoding == UTF16:
        return len(text.encode("utf-16-le")) // 2
    return len(text)


# ---------------------------------------------------------------- lines


def test_lines_split_at_lf_crlf_and_cr_only():
    assert split_lines("a\r\nb\nc\rd") == ["a\r\n", "b\n", "c\r", "d"]
    assert split_lines("a\n") == ["a\n", ""]
    assert split_lines("") == [""]
    # str.splitlines would also break at these; an editor does not.
    assert split_lines("a\x0bb\x0cc\u2028d\x85e") == ["a\x0bb\x0cc\u2028d\x85e"]
    assert [line_content(x) for x in split_lines("a\r\nb\rc\n")] == ["a", "b", "c", ""]


# ---------------------------------------------------------------- columns


@pytest.mark.parametrize("encoding, after_emoji", [(UTF8, 4), (UTF16, 2), (UTF32, 1)])
def test_a_column_after_an_emoji_counts_its_code_units(encoding, after_emoji):
    line = EMOJI + "ab"
    assert to_units(line, 1, encoding) == after_emoji
    assert to_index(line, after_emoji, encoding) == 1
    assert to_index(line, after_emoji + 2, encoding) == 3
    assert to_index(line, 99, encoding) == 3          # past the end: the end


def test_a_column_inside_a_character_means_its_start():
    line = "a" + EMOJI + "b"
    assert to_index(line, 2, UTF16) == 1      # between the surrogate halves
    assert to_index(line, 3, UTF8) == 1       # inside the emoji's four bytes
    assert to_index("\u00e9x", 1, UTF8) == 0  # inside a two-byte letter


def test_combining_marks_are_code_points_of_their_own():
    line = "caf" + COMBINING + " au lait"
    assert to_units(line, 5, UTF16) == 5 and to_units(line, 5, UTF8) == 6
    assert to_index(line, 6, UTF8) == 5


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "\u00e9", "\u4e2d", EMOJI, "\u0301", " "]),
               max_size=30), st.data())
def test_columns_round_trip_in_every_encoding(line, data):
    index = data.draw(st.integers(0, len(line)))
    for encoding in ENCODINGS:
        units = to_units(line, index, encoding)
        assert units == units_of(line[:index], encoding)
        assert to_index(line, units, encoding) == index


# ---------------------------------------------------------------- documents


def lsp_position(text, offset, encoding):
    """Reference: the LSP position of code-point ``offset`` in ``text``."""
    lines = split_lines(text[:offset])
    return len(lines) - 1, units_of(lines[-1], encoding)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", EMOJI, "\u0301"]),
                max_size=40).map("".join),
       st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60),
                          st.text(alphabet=st.sampled_from(["x", "\n", "\r", EMOJI, " "]),
                                  max_size=5)), max_size=6),
       st.sampled_from(ENCODINGS))
def test_incremental_edits_give_the_text_the_editor_has(text, edits, encoding):
    document = Document("file:///t.txt", text, 1, encoding=encoding)
    expected = text
    for version, (a, b, insert) in enumerate(edits, start=2):
        a, b = sorted((min(a, len(expected)), min(b, len(expected))))
        # An editor's position is never between "\r" and "\n", nor inside a character.
        if 0 < a < len(expected) and expected[a - 1:a + 1] == "\r\n":
            a -= 1
        if 0 < b < len(expected) and expected[b - 1:b + 1] == "\r\n":
            b -= 1
        a = min(a, b)
        document.edit(lsp_position(expected, a, encoding), lsp_position(expected, b, encoding),
                      insert, version)
        expected = expected[:a] + insert + expected[b:]
        assert document.text == expected
        assert document.lines == split_lines(expected)       # as many lines as the editor's
        assert document.version == version


def test_a_carriage_return_and_line_feed_brought_together_make_one_line_end():
    document = Document("u", "x\rA\nb")
    document.edit((1, 0), (1, 1), "")        # delete "A": "x\r\nb"
    assert document.lines == ["x\r\n", "b"]
    document.edit((0, 1), (0, 1), "\r")      # "x\r\r\nb"
    assert document.lines == ["x\r", "\r\n", "b"]


def test_text_before_the_cursor_is_exact_and_bounded():
    document = Document("u", "one\r\ntwo " + EMOJI + " three\nfour", encoding=UTF16)
    line, index = document.index(1, 7)       # "two " 4, the emoji 2, the space 1
    assert document.text_before(line, index) == "one\r\ntwo " + EMOJI + " "
    assert document.index(9, 0) == (2, 4)    # past the last line: the end
    with pytest.raises(ValueError, match="position"):
        document.index(-1, 0)
    big = "".join(f"line {i} of a long text\n" for i in range(60_000))   # ~1.4 MB
    document = Document("u", big + "the end")
    line, index = len(document.lines) - 1, 7
    tail = document.text_before(line, index)
    whole = big + "the end"
    assert len(whole) > FULL_CONTEXT_CHARS and TAIL_CHARS <= len(tail) < 2 * TAIL_CHARS
    assert whole.endswith(tail) and (len(whole) - len(tail)) % TAIL_CHARS == 0
    document.edit((line, 7), (line, 7), " now")
    assert document.text_before(line, 11).endswith("the end now")


def test_full_replacement():
    document = Document("u", "old text", 1)
    document.replace_all("new\ntext", 2)
    assert document.lines == ["new\n", "text"] and document.version == 2


# ---------------------------------------------------------------- settings


def test_settings_from_flat_or_namespaced_objects_and_bad_values_refused():
    settings_, problems = updated(Settings(), {"predtext": {"k": 3, "learning": True}})
    assert (settings_.k, settings_.learning, problems) == (3, True, [])
    settings_, problems = updated(settings_, {"k": 0, "languages": "markdown", "colour": 1})
    assert settings_.k == 3 and settings_.languages == DEFAULT_LANGUAGES
    assert len(problems) == 3 and any("colour" in p for p in problems)
    assert updated(Settings(), {"languages": ["python"]})[0].completes("python")
    assert not Settings().completes("python") and Settings().completes("markdown")


@pytest.mark.parametrize("name", [".env", ".env.local", "prod.env", "server.key", "cert.pem",
                                  "id_ed25519", "id_rsa.pub", ".netrc", "api_token.txt",
                                  "MY_SECRETS.md"])
def test_secrets_and_keys_are_never_learned(name, tmp_path):
    assert is_secret(Path(name))
    assert not may_learn(tmp_path / name, Settings(learning=True))


def test_learning_is_off_by_default_and_excluded_folders_are_left_out(tmp_path):
    notes = tmp_path / "notes" / "day.md"
    private = tmp_path / "private" / "diary.txt"
    assert not may_learn(notes, Settings())
    on = Settings(learning=True, exclude_folders=("private",))
    assert may_learn(notes, on, [tmp_path])
    assert not may_learn(private, on, [tmp_path])
    assert not may_learn(private, Settings(learning=True,
                                           exclude_folders=(str(tmp_path / "private"),)))
    assert not may_learn(tmp_path / ".ssh" / "config", Settings(learning=True))
