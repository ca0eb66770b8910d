import gzip
import pickle
import struct

import numpy as np
import pytest

from trainrecon.data.formats import parse_cifar_batch, read_cifar_batch, read_idx, read_npz, to_float_nchw
from trainrecon.errors import TrainreconError


def idx_bytes(arr: np.ndarray, magic_dtype=0x08) -> bytes:
    return struct.pack(">HBB", 0, magic_dtype, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(">u1").tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path, rng, compress):
    imgs = rng.integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    raw = idx_bytes(imgs)
    p = tmp_path / ("img.gz" if compress else "img")
    p.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(p, expect_magic=2051)
    assert out.shape == (7, 28, 28) and np.array_equal(out, imgs)


def test_idx_rejects_wrong_magic_and_truncation(tmp_path, rng):
    labels = rng.integers(0, 10, size=20).astype(np.uint8)
    p = tmp_path / "labels"
    p.write_bytes(idx_bytes(labels))
    with pytest.raises(TrainreconError, match="magic 2049, expected 2051"):
        read_idx(p, expect_magic=2051)
    p.write_bytes(idx_bytes(labels)[:-3])
    with pytest.raises(TrainreconError, match="labels: IDX header says shape"):
        read_idx(p, expect_magic=2049)
    p.write_bytes(b"\x89PNG....")
    with pytest.raises(TrainreconError, match="not an IDX file"):
        read_idx(p)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_refuses_unknown_checksum(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(TrainreconError, match="does not match the published"):
        read_cifar_batch(p)
    q = tmp_path / "whatever.pkl"
    q.write_bytes(b"x")
    with pytest.raises(TrainreconError, match="not a known CIFAR-10 batch name"):
        read_cifar_batch(q)


def test_cifar_parser_reads_arrays_and_refuses_code(rng):
    data = rng.integers(0, 256, size=(4, 3072)).astype(np.uint8)
    good = pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4], b"batch_label": b"x"}, protocol=2)
    x, y = parse_cifar_batch(good, "batch")
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [1, 2, 3, 4]
    assert np.array_equal(x[1, :, :, 2], data[1, 2048:].reshape(32, 32))  # blue plane
    with pytest.raises(TrainreconError, match="refused to unpickle"):
        parse_cifar_batch(pickle.dumps({b"data": Evil()}), "batch")


def test_npz_and_layouts(tmp_path, rng):
    x = rng.integers(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    xx, yy = read_npz(tmp_path / "d.npz")
    f = to_float_nchw(xx, "d")
    assert f.shape == (5, 3, 32, 32) and np.allclose(f[2, 1], x[2, :, :, 1] / 255)
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(TrainreconError, match="missing array 'x'"):
        read_npz(tmp_path / "bad.npz")
    with pytest.raises(TrainreconError, match="nope.npz: file not found"):
        read_npz(tmp_path / "nope.npz")
    with pytest.raises(TrainreconError, match="must lie in"):
        to_float_nchw(np.full((2, 4, 4), 3.0), "f")
