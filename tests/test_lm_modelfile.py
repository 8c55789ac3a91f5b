import json
import os

import numpy as np
import pytest
import safetensors.numpy

from predtext.errors import ModelFileError
from predtext.lm import modelfile
from predtext.lm.corpus import TokenStream
from predtext.lm.modelfile import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    read_meta,
    save_checkpoint,
    save_model,
)
from predtext.lm.tokenizers import CharTokenizer, tokenizer_from_json


def example_tensors():
    rng = np.random.default_rng(0)
    return {
        "embedding.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "rnn.weight_ih_l0": rng.standard_normal((12, 3)),
        "strided": np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2],  # not contiguous
        "big_endian": np.arange(4, dtype=">f4"),
        "scalar": np.array(7, dtype=np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 4), dtype=np.float16),
    }


def example_meta():
    return {
        "config": {"cell": "lstm", "layers": 2, "hidden": 8},
        "tokenizer": CharTokenizer.from_text("héllo 😀").to_json(),
        "training": {"steps": 10, "val_loss": 1.5},
        "extra": {"ngram": {"the cat": 3}},
    }


def assert_same_tensors(got, expected):
    assert set(got) == set(expected)
    for name, arr in expected.items():
        assert got[name].shape == arr.shape, name
        assert got[name].dtype == arr.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got[name], arr)


def test_model_round_trip(tmp_path):
    path = tmp_path / "m.ptm"
    tensors, meta = example_tensors(), example_meta()
    save_model(path, tensors, meta)
    got, got_meta = load_model(path)
    assert_same_tensors(got, tensors)
    assert got_meta == meta
    assert tokenizer_from_json(got_meta["tokenizer"]).decode([1, 2]) == " h"
    got["embedding.weight"][0, 0] = 1.0  # loaded arrays are the caller's to change
    assert read_meta(path)["meta"] == meta
    assert read_meta(path)["format_version"] == FORMAT_VERSION


def test_file_is_plain_safetensors_with_one_json_metadata_entry(tmp_path):
    path = tmp_path / "m.ptm"
    save_model(path, {"w": np.ones(2, np.float32)}, {"config": {}})
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        assert list(f.keys()) == ["w"]
        metadata = f.metadata()
    assert list(metadata) == ["predtext"]
    document = json.loads(metadata["predtext"])
    assert document["format"] == "predtext" and document["kind"] == "model"


def test_checkpoint_round_trip_restores_rng_and_data_position(tmp_path):
    rng = np.random.default_rng(123)
    rng.random(5)
    stream = TokenStream(np.arange(300), seq_len=4, batch_size=3)
    next(iter(stream))
    state = {"step": 17, "rng": rng.bit_generator.state, "data": stream.state_dict()}
    optimizer = {"exp_avg/w": np.full(3, 0.5), "exp_avg_sq/w": np.full(3, 0.25)}
    path = tmp_path / "ckpt.ptm"
    save_checkpoint(path, {"w": np.arange(3.0)}, example_meta(), optimizer, state)

    ckpt = load_checkpoint(path)
    assert_same_tensors(ckpt.model_tensors, {"w": np.arange(3.0)})
    assert_same_tensors(ckpt.optimizer_tensors, optimizer)
    assert ckpt.model_meta == example_meta()
    assert ckpt.state["step"] == 17

    restored = np.random.default_rng()
    restored.bit_generator.state = ckpt.state["rng"]
    assert restored.random(4).tolist() == rng.random(4).tolist()
    resumed = TokenStream(np.arange(300), seq_len=4, batch_size=3)
    resumed.load_state_dict(ckpt.state["data"])
    assert next(iter(resumed))[0].tolist() == next(iter(stream))[0].tolist()

    # A checkpoint also loads as a model; a model is not a checkpoint.
    tensors, meta = load_model(path)
    assert list(tensors) == ["w"] and meta == example_meta()
    save_model(tmp_path / "m.ptm", {"w": np.zeros(1)}, {})
    with pytest.raises(ModelFileError, match="m.ptm.*not a checkpoint"):
        load_checkpoint(tmp_path / "m.ptm")


# ---------------------------------------------------------------- bad files


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.ptm"
    save_model(path, example_tensors(), example_meta())
    return path


def expect_model_file_error(path, match):
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path)
    assert info.value.path == str(path)
    assert os.path.basename(path) in str(info.value)
    return info.value


def test_missing_file_and_directory(tmp_path):
    expect_model_file_error(tmp_path / "nothing.ptm", "no such file")
    expect_model_file_error(tmp_path, "directory")


@pytest.mark.parametrize("content, match", [
    (b"", "empty file"),
    (b"abc", "truncated"),
    (bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)), "not a safetensors"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!", "not a safetensors"),
    (b"hello world, this is a text file and not a model at all", "not a safetensors"),
])
def test_foreign_bytes(tmp_path, content, match):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    expect_model_file_error(path, match)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(path))
    expect_model_file_error(path, "not a predtext model file")
    weights = {"w": np.zeros(3, np.float32)}
    safetensors.numpy.save_file(weights, str(path), metadata={"format": "pt"})
    expect_model_file_error(path, "not a predtext model file")
    safetensors.numpy.save_file(weights, str(path), metadata={"predtext": "{oops"})
    expect_model_file_error(path, "corrupt predtext metadata")


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.ptm"
    document = {"format": "predtext", "format_version": FORMAT_VERSION + 1, "kind": "model",
                "tensors_sha256": "", "meta": {}}
    safetensors.numpy.save_file({"w": np.zeros(3)}, str(path),
                                metadata={"predtext": json.dumps(document)})
    expect_model_file_error(path, f"format version {FORMAT_VERSION + 1} is newer")


@pytest.mark.parametrize("keep", [1, 7, 8, 20, 0.5, -1])
def test_truncated_file(good_file, keep):
    data = good_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    good_file.write_bytes(data[:n])
    expect_model_file_error(good_file, "truncated|not a safetensors|empty")


def test_trailing_garbage(good_file):
    good_file.write_bytes(good_file.read_bytes() + b"junk")
    expect_model_file_error(good_file, "unexpected bytes")


def test_flipped_bit_in_tensor_data_fails_the_checksum(good_file):
    data = bytearray(good_file.read_bytes())
    data[-10] ^= 0x04
    good_file.write_bytes(bytes(data))
    expect_model_file_error(good_file, "checksum")


def test_damaged_header(good_file):
    data = bytearray(good_file.read_bytes())
    data[9] = ord("#")  # inside the header's JSON
    good_file.write_bytes(bytes(data))
    expect_model_file_error(good_file, "not JSON")


def test_corrupt_tensor_offsets(good_file):
    data = good_file.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    # Two tensors claiming the same bytes: a shape/offset mismatch safetensors rejects.
    name = "rnn.weight_ih_l0"
    header[name]["shape"] = [12, 2]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    good_file.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + header_len:])
    expect_model_file_error(good_file, "corrupt")


# ---------------------------------------------------------------- atomic writes


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_failed_fsync_leaves_the_old_file_intact(good_file, monkeypatch):
    before = good_file.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, "fsync", broken_fsync)
    with pytest.raises(ModelFileError, match="good.ptm.*No space left"):
        save_model(good_file, {"w": np.ones(1000)}, {"new": True})
    monkeypatch.undo()
    assert good_file.read_bytes() == before
    assert leftovers(good_file.parent) == []
    load_model(good_file)


def test_interrupt_during_write_leaves_the_old_file_intact(good_file, monkeypatch):
    before = good_file.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(good_file, {"w": np.ones(3)}, {}, {}, {"step": 1})
    monkeypatch.undo()
    assert good_file.read_bytes() == before
    assert leftovers(good_file.parent) == []


def test_bad_arguments_write_nothing(good_file):
    before = good_file.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        save_model(good_file, {"w": np.ones(2)}, {"bad": object()})
    with pytest.raises(TypeError, match="dtype"):
        save_model(good_file, {"w": np.array(["text"], dtype=object)}, {})
    with pytest.raises(TypeError, match="numpy array"):
        save_model(good_file, {"w": [1, 2]}, {})
    with pytest.raises(ValueError, match="__metadata__"):
        save_model(good_file, {"__metadata__": np.ones(1)}, {})
    assert good_file.read_bytes() == before
    assert leftovers(good_file.parent) == []


def test_save_replaces_and_creates_parent_directories(tmp_path):
    path = tmp_path / "models" / "deep" / "m.ptm"
    save_model(path, {"w": np.ones(2)}, {"v": 1})
    save_model(path, {"w": np.zeros(2)}, {"v": 2})
    tensors, meta = load_model(path)
    assert meta == {"v": 2} and tensors["w"].tolist() == [0.0, 0.0]
    assert leftovers(path.parent) == []


# ---------------------------------------------------------------- 8-bit weights


def int8_file(tmp_path, damage):
    """A file of two int8 weights with their scales, damaged as ``damage`` says."""
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    pairs = {"w": (q, np.full(4, 0.5, np.float32)), "v": (q[:2], np.ones(2, np.float32))}
    tensors = modelfile.pack_int8({"bias": np.zeros(4, np.float32)}, pairs)
    meta = {"quantization": modelfile.int8_meta(pairs)}
    if damage == "scale shape":
        tensors["w.scale"] = np.ones(3, np.float32)
    elif damage == "scale dtype":
        tensors["w.scale"] = np.ones(4, np.float16)
    elif damage == "no scale":
        del tensors["w.scale"]
    elif damage == "no weight":
        del tensors["w"]
    elif damage == "float weight":
        tensors["w"] = q.astype(np.float32)
    elif damage == "-128":
        tensors["w"] = np.where(q == q.max(), -128, q).astype(np.int8)
    elif damage == "zero scale":
        tensors["w.scale"] = np.array([0.5, 0.0, 0.5, 0.5], np.float32)
    elif damage == "nan scale":
        tensors["w.scale"] = np.array([0.5, np.nan, 0.5, 0.5], np.float32)
    elif damage == "no metadata":
        del meta["quantization"]
    elif damage == "unlisted":
        meta["quantization"]["tensors"] = ["w"]
    elif damage == "scheme":
        meta["quantization"]["scheme"] = "int4"
    elif damage == "stray int8":
        tensors["u"] = q
    elif damage == "stray scale":
        tensors["bias.scale"] = np.ones(4, np.float32)
    path = tmp_path / "q.safetensors"
    save_model(path, tensors, meta)
    return path, pairs


def test_int8_weights_round_trip(tmp_path):
    path, pairs = int8_file(tmp_path, None)
    tensors, meta = load_model(path)
    rest, got = modelfile.unpack_int8(path, tensors, meta["quantization"])
    assert set(rest) == {"bias"} and set(got) == set(pairs)
    for name, (q, scale) in pairs.items():
        np.testing.assert_array_equal(got[name][0], q)
        np.testing.assert_array_equal(got[name][1], scale)
    # A float model's tensors pass through a file that says nothing of quantisation.
    assert modelfile.unpack_int8(path, {"bias": rest["bias"]}, None) == ({"bias": rest["bias"]}, {})


@pytest.mark.parametrize("damage,message", [
    ("scale shape", "shape"), ("scale dtype", "float16"), ("no scale", "no scale"),
    ("no weight", "missing"), ("float weight", "not a 2-D int8"), ("-128", "-128"),
    ("zero scale", "positive"), ("nan scale", "positive"), ("no metadata", "int8 but"),
    ("unlisted", "'v' is int8"), ("stray scale", "scale of no int8"), ("scheme", "int4"),
    ("stray int8", "'u' is int8"),
])
def test_bad_int8_weights_raise_naming_the_file(tmp_path, damage, message):
    path, _ = int8_file(tmp_path, damage)
    tensors, meta = load_model(path)
    with pytest.raises(ModelFileError, match="q.safetensors") as caught:
        modelfile.unpack_int8(path, tensors, meta.get("quantization"))
    assert message in str(caught.value)
