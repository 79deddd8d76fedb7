"""Deflate streams of every shape, through the mount (issue 13: "correctness
of every new decoding path is tested byte for byte").

Each member of one hand-built .npz (and one multi-member .npy.gz) is a
.npy whose deflate stream is made on purpose:
- stored blocks only (level 0), and incompressible data stored by level 6;
- fixed-Huffman blocks only (Z_FIXED), Huffman-only and run-length blocks;
- matches at the largest distance, 32 KiB (data repeating with that period,
  coded here by a small fixed-Huffman encoder of our own, since zlib never
  reaches further back than 32506 bytes), and just under zlib's limit, so
  every access point's window must be whole and exact;
- back-references across every 128 KiB chunk boundary (a short period);
- empty blocks between the data: sync flushes (empty stored blocks),
  partial flushes (empty fixed blocks) and full flushes, many in a row;
  and an empty last block, after a sync flush (a block boundary at the
  very end, where no access point may go);
- a stream made of segments by other encoders, each segment referring back
  into the one before it (a preset dictionary: its last 32 KiB), with
  stored, fixed and dynamic segments alternating;
- a gzip file of members made by those encoders, split inside the .npy
  header, at a chunk boundary and next to it, with empty members between.

Each is read through the mount with access points 64 KiB apart, lazily and
by the background pass, with read-ahead threads and with none: whole,
by random preads of random lengths, and with np.load(mmap_mode='r'); then
again on a second mount that loads the saved index; and the same from a web
server (nginx on 127.0.0.1, started by the test). Every byte is compared
with the .npy numpy writes. The CI runs this file under both decoders
(ISA-L, then NPYFS_DECODER=zlib).
"""

import gzip
import os
import random
import struct
import zlib

import numpy as np
import pytest

from conftest import assert_same_array, guarded, in_child, load, npy_bytes, read_all
from robust_util import Ent, build_zip

CHUNK = 128 << 10
WBITS = -15


def _deflate(data, level=6, strategy=zlib.Z_DEFAULT_STRATEGY, zdict=None):
    """One finished raw deflate stream of data."""
    kw = {"zdict": zdict} if zdict else {}
    c = zlib.compressobj(level, zlib.DEFLATED, WBITS, 9, strategy, **kw)
    return c.compress(data) + c.flush()


class _Bits:
    """Bits written LSB first into bytes, as deflate packs them."""

    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, count):
        self.acc |= value << self.n
        self.n += count
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def huff(self, code, count):
        """A Huffman code: its bits go most significant first."""
        self.put(int(format(code, f"0{count}b")[::-1], 2), count)

    def finish(self):
        if self.n:
            self.out.append(self.acc & 0xFF)
        return bytes(self.out)


def _fixed_litlen(b, v):
    if v < 144:
        b.huff(0x30 + v, 8)
    elif v < 256:
        b.huff(0x190 + v - 144, 9)
    elif v < 280:
        b.huff(v - 256, 7)
    else:
        b.huff(0xC0 + v - 280, 8)


def _deflate_32k(data):
    """A raw deflate stream of data in fixed-Huffman blocks (a new one every
    4096 codes: access points go at block boundaries) whose only matches are
    258 bytes long at distance 32768, the largest there is (length code
    285; distance code 29 with extra bits 8191)."""
    b = _Bits()
    p, matches, codes = 0, 0, 0
    while p < len(data):
        if codes % 4096 == 0:
            if codes:
                _fixed_litlen(b, 256)  # end of block
            b.put(0, 1)  # BFINAL: not yet
            b.put(1, 2)  # BTYPE 01: fixed Huffman
        codes += 1
        if p >= 32768 and p + 258 <= len(data) and \
                data[p:p + 258] == data[p - 32768:p - 32768 + 258]:
            _fixed_litlen(b, 285)
            b.huff(29, 5)
            b.put(32768 - 24577, 13)
            p += 258
            matches += 1
        else:
            _fixed_litlen(b, data[p])
            p += 1
    _fixed_litlen(b, 256)
    b.put(1, 1)  # a last, empty fixed block
    b.put(1, 2)
    _fixed_litlen(b, 256)
    assert matches > len(data) // 300, matches
    return b.finish()


def _sync_end(data):
    """A raw deflate stream of data whose last block is empty: a sync flush
    after the data, then the finish (a block boundary at the very end)."""
    c = zlib.compressobj(6, zlib.DEFLATED, WBITS)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH) + c.flush(zlib.Z_FINISH)


def _segments(data, pieces):
    """A raw deflate stream of data made by several encoders in turn: each
    piece (length, level, strategy) ends with a sync flush, so the next
    encoder's blocks follow on a byte boundary; each encoder but the first
    has the 32 KiB before its piece as preset dictionary, so its matches
    reach back into the piece before it. The last piece finishes the
    stream."""
    out, at = bytearray(), 0
    for i, (n, level, strategy) in enumerate(pieces):
        last = i == len(pieces) - 1
        piece = data[at:] if last else data[at:at + n]
        kw = {"zdict": bytes(data[max(0, at - 32768):at])} if at else {}
        c = zlib.compressobj(level, zlib.DEFLATED, WBITS, 9, strategy, **kw)
        out += c.compress(piece)
        out += c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        at += len(piece)
    assert at == len(data)
    return bytes(out)


def _flushed(data, step, modes):
    """A raw deflate stream of data with flushes every step bytes, cycling
    through modes; between two pieces, also a few flushes with no data in
    between (empty blocks in a row)."""
    c = zlib.compressobj(6, zlib.DEFLATED, WBITS)
    out = bytearray()
    for i, at in enumerate(range(0, len(data), step)):
        out += c.compress(data[at:at + step])
        out += c.flush(modes[i % len(modes)])
        if i % 3 == 0:
            for mode in modes:
                out += c.flush(mode)
    out += c.flush()
    return bytes(out)


def _arrays():
    rng = np.random.default_rng(1301)
    n = 3 << 20  # 3 MiB of payload: about 24 chunks, 48 access points at 64K
    far32k = np.tile(rng.integers(0, 256, 32768, dtype=np.uint8), n // 32768)
    far32k[::40_009] ^= 1  # not a pure repeat: literals break the matches now and then
    far = np.tile(rng.integers(0, 256, 32500, dtype=np.uint8), n // 32500 + 1)[:n]
    far[::4099] ^= 1
    walk = np.round(np.cumsum(rng.normal(size=n // 8)) * 0.01, 3)  # bench-like floats
    period = np.tile(rng.integers(0, 256, 1000, dtype=np.uint8), n // 1000 + 1)[:n]
    runs = np.repeat(rng.integers(0, 4, n // 700, dtype=np.uint8), 700)
    noise = rng.integers(0, 256, n, dtype=np.uint8)
    text = np.frombuffer(b"".join(b"the quick brown fox %d jumps over the lazy dog\n" % i
                                  for i in range(n // 40))[:n], dtype=np.uint8)
    return {"far32k": far32k, "far": far, "walk": walk, "period": period, "runs": runs,
            "noise": noise, "text": np.array(text)}


ARRAYS = _arrays()


def _members():
    """name -> (array, raw deflate stream of its .npy)."""
    b = {k: npy_bytes(a) for k, a in ARRAYS.items()}
    mixed_pieces = [(200_000, 0, zlib.Z_DEFAULT_STRATEGY), (CHUNK + 1, 6, zlib.Z_FIXED),
                    (3 * CHUNK - 7, 9, zlib.Z_DEFAULT_STRATEGY), (65_536, 1, zlib.Z_RLE),
                    (1, 0, zlib.Z_DEFAULT_STRATEGY), (300_000, 6, zlib.Z_HUFFMAN_ONLY),
                    (0, 6, zlib.Z_DEFAULT_STRATEGY), (0, 6, zlib.Z_DEFAULT_STRATEGY)]
    return {
        "stored": ("walk", _deflate(b["walk"], level=0)),
        "stored_noise": ("noise", _deflate(b["noise"], level=6)),
        "fixed": ("walk", _deflate(b["walk"], strategy=zlib.Z_FIXED)),
        "fixed_text": ("text", _deflate(b["text"], level=9, strategy=zlib.Z_FIXED)),
        "huffman_only": ("text", _deflate(b["text"], strategy=zlib.Z_HUFFMAN_ONLY)),
        "rle": ("runs", _deflate(b["runs"], strategy=zlib.Z_RLE)),
        "far32k": ("far32k", _deflate_32k(b["far32k"])),
        "far": ("far", _deflate(b["far"], level=9)),
        "period": ("period", _deflate(b["period"], level=9)),
        "sync_end": ("walk", _sync_end(b["walk"])),
        "empty_blocks": ("walk", _flushed(b["walk"], 40_000,
                                          [zlib.Z_SYNC_FLUSH, zlib.Z_PARTIAL_FLUSH,
                                           zlib.Z_FULL_FLUSH, zlib.Z_NO_FLUSH])),
        "mixed": ("text", _segments(b["text"], mixed_pieces)),
        "mixed_far": ("far", _segments(b["far"], [(32768 * 5 + 3, 9, zlib.Z_FIXED),
                                                  (32768 * 7, 1, zlib.Z_DEFAULT_STRATEGY),
                                                  (0, 9, zlib.Z_DEFAULT_STRATEGY)])),
    }


MEMBERS = _members()


def _self_check():
    for name, (key, stream) in MEMBERS.items():
        want = npy_bytes(ARRAYS[key])
        assert zlib.decompress(stream, WBITS) == want, name


_self_check()


def _gzip_members(data):
    """A multi-member gzip file of data: pieces split inside the .npy header,
    at a chunk boundary and either side of it, empty members between, each
    piece by another encoder, one with every optional header field; the last
    ends with an empty block."""
    cuts = sorted({0, 9, 60, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17,
                   len(data) // 2, len(data)})
    out = bytearray()
    encoders = [(6, zlib.Z_DEFAULT_STRATEGY), (0, zlib.Z_DEFAULT_STRATEGY),
                (9, zlib.Z_FIXED), (1, zlib.Z_RLE), (6, zlib.Z_HUFFMAN_ONLY)]
    for i, (a, z) in enumerate(zip(cuts, cuts[1:])):
        piece = data[a:z]
        level, strategy = encoders[i % len(encoders)]
        body = _deflate(piece, level, strategy) if z < len(data) else _sync_end(piece)
        flg = 0x1E if i == 2 else 0  # FHCRC, FEXTRA, FNAME, FCOMMENT
        hdr = b"\x1f\x8b\x08" + bytes([flg]) + b"\0\0\0\0\0\xff"
        if flg:
            hdr += struct.pack("<H", 4) + b"xy\0\0" + b"piece.npy\0" + b"a comment\0"
            hdr += struct.pack("<H", zlib.crc32(hdr) & 0xFFFF)
        out += hdr + body + struct.pack("<II", zlib.crc32(piece), len(piece))
        if i % 2:
            out += gzip.compress(b"", mtime=0)  # an empty member
    assert gzip.decompress(bytes(out)) == data
    return bytes(out)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("crafted")
    ents = [Ent(f"{name}.npy", npy_bytes(ARRAYS[key]), method=8, payload=stream)
            for name, (key, stream) in MEMBERS.items()]
    npz = d / "crafted.npz"
    npz.write_bytes(build_zip(ents))
    gz = d / "pieces.npy.gz"
    gz.write_bytes(_gzip_members(npy_bytes(ARRAYS["far"])))
    assert len(MEMBERS["far32k"][1]) < len(npy_bytes(ARRAYS["far32k"])) // 10
    return npz, gz


def _expected(name):
    key = "far" if name == "pieces" else MEMBERS[name][0]
    return key, npy_bytes(ARRAYS[key])


def _random_preads(path, truth, seed, count=120):
    """count preads at random offsets of random lengths (up to 3 chunks),
    some straddling chunk boundaries and the end: each must equal truth."""
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(count):
            if i % 4 == 0:  # across a chunk boundary
                k = rnd.randrange(1, len(truth) // CHUNK + 1)
                off = max(0, k * CHUNK - rnd.randrange(1, 5000))
            else:
                off = rnd.randrange(0, len(truth))
            n = rnd.choice([1, 7, 4096, 65536, CHUNK + 3, 3 * CHUNK])
            got = os.pread(fd, n, off)
            want = truth[off:off + n]
            assert got == want, f"{path.name}: pread({n}, {off}) differs"
    finally:
        os.close(fd)


def _check_all(mnt, names, seed):
    for name in names:
        key, truth = _expected(name)
        path = mnt / f"{name}.npy"
        assert path.stat().st_size == len(truth), name
        guarded(_random_preads, path, truth, seed, timeout=300)

        def mapped(p=path, k=key):
            a, want = load(p), ARRAYS[k]
            # the end first, then from the middle, then all: the map's
            # faults come out of order before the whole is compared
            ok = (np.array_equal(a[-5000:], want[-5000:]) and
                  np.array_equal(a[len(a) // 2:], want[len(a) // 2:]))
            assert_same_array(a, want)
            return bool(ok)
        assert in_child(mapped, timeout=300), name
        assert guarded(read_all, path, timeout=300) == truth, name


@pytest.mark.parametrize("how", [("index=lazy", "threads=2"), ("index=lazy", "threads=0"),
                                 ("index=background", "threads=2")],
                         ids=["lazy", "lazy-no-readahead", "background"])
def test_crafted_npz(how, sources, mount, tmp_path):
    npz, _ = sources
    idx = tmp_path / "idx"
    mnt = mount(npz, f"index_dir={idx}", "spacing=64K", *how)
    names = list(MEMBERS)
    _check_all(mnt, names, seed=zlib.crc32(" ".join(how).encode()))
    # a second mount loads the saved indexes (every member is larger than a
    # chunk, so each was worth saving once its pass ended)
    assert not mount.mount_of(mnt).teardown()
    assert len(list(idx.glob("*.dfx"))) == len(names)
    again = mount(npz, f"index_dir={idx}", "spacing=64K", *how, name="again")
    _check_all(again, reversed(names), seed=7)
    _loaded_every_index(mount, again, names)


def _loaded_every_index(mount, mnt, names):
    """The second mount read through the saved indexes, none refused (a
    file the load refuses is rebuilt: the bytes would still be right)."""
    log = mount.mount_of(mnt).stderr()
    for name in names:
        assert f"member '{name}.npy': index loaded from" in log, (name, log)
    assert "damaged" not in log and "saved" not in log, log


@pytest.mark.parametrize("how", [("index=lazy", "threads=2"), ("index=lazy", "threads=0")],
                         ids=["lazy", "lazy-no-readahead"])
def test_crafted_gzip_members(how, sources, mount, tmp_path):
    _, gz = sources
    idx = tmp_path / "idx"
    mnt = mount(gz, f"index_dir={idx}", "spacing=64K", *how)
    _check_all(mnt, ["pieces"], seed=11)
    assert not mount.mount_of(mnt).teardown()
    assert len(list(idx.glob("*.dfx"))) == 1
    again = mount(gz, f"index_dir={idx}", "spacing=64K", *how, name="again")
    _check_all(again, ["pieces"], seed=12)
    _loaded_every_index(mount, again, ["pieces"])


@pytest.mark.parametrize("kind", ["npz", "gz"])
def test_crafted_over_http(kind, sources, remote, remote_mount, tmp_path):
    """The same streams from a web server (ranged GETs, the remote block
    cache): every byte right, and the indexes saved for the object are
    loaded by the next mount."""
    npz, gz = sources
    src = npz if kind == "npz" else gz
    names = list(MEMBERS) if kind == "npz" else ["pieces"]
    ng = remote.nginx()
    ng.put(src.name, src)
    idx = tmp_path / "idx"
    mnt = remote_mount(ng.url(src.name), f"index_dir={idx}", "spacing=64K", "index=lazy")
    _check_all(mnt, names, seed=21)
    assert not remote_mount.mount_of(mnt).teardown()
    again = remote_mount(ng.url(src.name), f"index_dir={idx}", "spacing=64K", "index=lazy",
                         name="again")
    _check_all(again, reversed(names), seed=22)
    _loaded_every_index(remote_mount, again, names)
