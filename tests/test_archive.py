"""analysis.archive: an ``.npz`` read as untrusted input (a session file from anywhere). Each
check on its own, on archives built here and then damaged on purpose."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy

from analysis.archive import ArchiveError, SafeNpz, TooBig, _directory_size, format_bytes


def npy_bytes(arr: np.ndarray, version=(1, 0)) -> bytes:
    buf = io.BytesIO()
    npy.write_array(buf, arr, version=version, allow_pickle=True)
    return buf.getvalue()


def archive(members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def safe(data: bytes, known=("a", "b"), limit: int = 1 << 20) -> SafeNpz:
    return SafeNpz(io.BytesIO(data), len(data), known, limit)


def patch_directory(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Change a field of the (first) central directory entry."""
    at = data.rindex(b"PK\x01\x02")
    out = bytearray(data)
    struct.pack_into(fmt, out, at + offset, value)
    return bytes(out)


A = np.arange(6, dtype=np.float32).reshape(2, 3)


# -- sizes in words ----------------------------------------------------------------------------
@pytest.mark.parametrize("n, words", [
    (0, "0 bytes"), (1023, "1023 bytes"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (int(3.2 * 1024**2), "3.2 MiB"), (4 * 1024**3, "4.0 GiB"), (4 * 1024**4, "4.0 TiB"),
    (3 * 1024**5, "3.0 PiB"), (1024**6, "1024.0 PiB"), (1024**2 - 1, "1024.0 KiB"),
])
def test_format_bytes(n, words):
    assert format_bytes(n) == words


def test_too_big_says_what_how_much_and_the_limit():
    err = TooBig("it", 5 * 1024**3, 1024**3)
    assert str(err) == "it declares 5.0 GiB, more than the 1.0 GiB allowed"
    assert (err.what, err.size, err.limit) == ("it", 5 * 1024**3, 1024**3)
    assert isinstance(err, ArchiveError)


# -- a good archive ----------------------------------------------------------------------------
@pytest.mark.parametrize("arr, version", [
    (A, (1, 0)), (A.astype(np.float16), (2, 0)), (np.array(7, dtype=np.int32), (1, 0)),
    (np.zeros((0, 4), dtype=bool), (1, 0)),
])
def test_members_read_back_exactly(arr, version):
    data = archive({"a.npy": npy_bytes(arr, version), "b.npy": npy_bytes(A)})
    with safe(data) as z:
        assert set(z.members) == {"a", "b"}
        m = z.header("a")
        assert (m.key, m.dtype, m.shape, m.nbytes) == ("a", arr.dtype, arr.shape, arr.nbytes)
        assert m.offset + m.nbytes == m.info.file_size
        got = z.read(m)
        np.testing.assert_array_equal(got, arr)
        assert got.dtype == arr.dtype and not got.flags.writeable
        with z.open(m) as stream:
            assert stream.read() == arr.tobytes()


def test_directory_size_reads_the_end_record_and_the_zip64_one(monkeypatch):
    data = archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)})
    plain = _directory_size(io.BytesIO(data), len(data))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert plain == (2, sum(46 + len(i.filename) for i in zf.infolist()))
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes zip64 end records
    data64 = bytearray(archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)}))
    assert b"PK\x06\x06" in data64 and b"PK\x06\x07" in data64
    # the end record's counts saturated, as in an archive of 65,535 members or more: only the zip64
    # record has them
    struct.pack_into("<HH", data64, bytes(data64).rindex(b"PK\x05\x06") + 8, 0xFFFF, 0xFFFF)
    data64 = bytes(data64)
    assert _directory_size(io.BytesIO(data64), len(data64)) == plain
    with safe(data64) as z:
        np.testing.assert_array_equal(z.read(z.header("b")), A)
    # the locator or the record damaged
    at = data64.rindex(b"PK\x06\x07")
    with pytest.raises(ArchiveError, match="^its zip64 end record is missing$"):
        _directory_size(io.BytesIO(data64[:at] + b"XX" + data64[at + 2:]), len(data64))
    at = data64.rindex(b"PK\x06\x06")
    with pytest.raises(ArchiveError, match="^its zip64 end record is damaged$"):
        _directory_size(io.BytesIO(data64[:at] + b"XX" + data64[at + 2:]), len(data64))
    # an end record that says zip64 with no room for a locator before it
    eocd = data[data.rindex(b"PK\x05\x06"):]
    fake = eocd[:8] + struct.pack("<HH", 0xFFFF, 0xFFFF) + eocd[12:]
    with pytest.raises(ArchiveError, match="^its zip64 end record is missing$"):
        _directory_size(io.BytesIO(fake), len(fake))


@pytest.mark.parametrize("data", [b"", b"not a zip at all" * 10, b"PK\x05\x06" + b"\0" * 10])
def test_what_is_not_a_zip_archive(data):
    with pytest.raises(ArchiveError, match="^it is not a zip archive$"):
        _directory_size(io.BytesIO(data), len(data))


def test_the_end_record_is_found_after_a_long_comment():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", npy_bytes(A))
        zf.comment = b"c" * 0xFFFF  # the longest comment: the end record is 64 KiB from the end
    data = buf.getvalue()
    assert _directory_size(io.BytesIO(data), len(data))[0] == 1


# -- the directory ----------------------------------------------------------------------------
def test_more_members_than_known_keys():
    data = archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)})
    with pytest.raises(ArchiveError, match="^it has 2 members, more than the 1 it may have$"):
        safe(data, known=("a",))
    safe(data, known=("a", "b"))  # exactly as many: fine


def test_a_directory_larger_than_its_members_need():
    data = archive({"x" * 200 + ".npy": npy_bytes(A)})
    with pytest.raises(ArchiveError, match="^its directory takes 250 bytes, far more than its members need$"):
        safe(data, known=("a",))
    # the allowance: 46 + 32 + the longest key + 4 bytes per known key
    assert len("x" * 168) + 46 + 32 + 4 == 250
    with pytest.raises(ArchiveError, match="does not belong"):  # the directory fits: the name is checked next
        safe(data, known=("x" * 168,))


@pytest.mark.parametrize("members, message", [
    ({"c.npy": npy_bytes(A)}, "^it holds a member 'c.npy' that does not belong there$"),
    ({"a": npy_bytes(A)}, "^it holds a member 'a' that does not belong there$"),
    ({"a.npz": npy_bytes(A)}, "^it holds a member 'a.npz' that does not belong there$"),
])
def test_members_must_be_known_npy_files(members, message):
    with pytest.raises(ArchiveError, match=message):
        safe(archive(members))


def test_a_long_unknown_name_is_cut_in_the_message():
    name = "z" * 200 + ".npy"
    with pytest.raises(ArchiveError) as err:
        SafeNpz(io.BytesIO(data := archive({name: npy_bytes(A)})), len(data), ["z" * 300], 1 << 20)
    assert str(err.value) == f"it holds a member '{name[:80]}' that does not belong there"


def test_two_members_of_one_name():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a.npy", npy_bytes(A))
        zf.writestr("a.npy", npy_bytes(A))
    with pytest.raises(ArchiveError, match="^it holds two members named 'a.npy'$"):
        safe(buf.getvalue(), known=("a", "b"))


def test_compressed_encrypted_and_inconsistent_members():
    with pytest.raises(ArchiveError, match="^its member 'a.npy' is compressed, which a session never is$"):
        safe(archive({"a.npy": npy_bytes(A)}, compress=zipfile.ZIP_DEFLATED))
    good = archive({"a.npy": npy_bytes(A)})
    flags = struct.unpack_from("<H", good, good.rindex(b"PK\x01\x02") + 8)[0]
    with pytest.raises(ArchiveError, match="^its member 'a.npy' is encrypted$"):
        safe(patch_directory(good, 8, "<H", flags | 0x1))
    size = struct.unpack_from("<L", good, good.rindex(b"PK\x01\x02") + 24)[0]
    with pytest.raises(ArchiveError, match="^its member 'a.npy' declares two different sizes$"):
        safe(patch_directory(good, 20, "<L", size - 1))  # compressed size
    # both sizes larger than the whole file
    big = patch_directory(patch_directory(good, 20, "<L", 5000), 24, "<L", 5000)
    with pytest.raises(ArchiveError, match=rf"^its members declare 4\.9 KiB but the file holds {len(good)} bytes$"):
        safe(big)
    with pytest.raises(TooBig, match="^it declares 4.9 KiB, more than the 4.0 KiB allowed$"):
        safe(big, limit=4096)


def test_the_limit_counts_every_member_and_is_inclusive():
    data = archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)})
    total = 2 * len(npy_bytes(A))
    with safe(data, limit=total) as z:
        assert sum(i.file_size for i in z.members.values()) == total
    with pytest.raises(TooBig) as err:
        safe(data, limit=total - 1)
    assert (err.value.what, err.value.size, err.value.limit) == ("it", total, total - 1)


# -- one member's header ------------------------------------------------------------------------
def raw_npy(header: dict, body: bytes, version=(1, 0)) -> bytes:
    buf = io.BytesIO()
    (npy.write_array_header_1_0 if version == (1, 0) else npy.write_array_header_2_0)(buf, header)
    return buf.getvalue() + body


def test_headers_that_do_not_account_for_the_member():
    lying = raw_npy({"descr": "<f4", "fortran_order": False, "shape": (2, 3)}, b"\0" * 16)
    with safe(archive({"a.npy": lying})) as z, pytest.raises(ArchiveError) as err:
        z.header("a")
    assert str(err.value) == "its member 'a.npy' declares a 2×3 float32 array (24 bytes) but holds 16 bytes"
    scalar = raw_npy({"descr": "<i8", "fortran_order": False, "shape": ()}, b"\0" * 4)
    with safe(archive({"a.npy": scalar})) as z, pytest.raises(ArchiveError) as err:
        z.header("a")
    assert str(err.value) == "its member 'a.npy' declares a single int64 array (8 bytes) but holds 4 bytes"
    long = raw_npy({"descr": "<f4", "fortran_order": False, "shape": (2, 3)}, b"\0" * 28)
    with safe(archive({"a.npy": long})) as z, pytest.raises(ArchiveError, match="but holds 28 bytes$"):
        z.header("a")


def test_a_header_declaring_more_than_the_limit_is_too_big_before_anything_is_read():
    huge = raw_npy({"descr": "<f8", "fortran_order": False, "shape": (1000, 1000)}, b"\0" * 8)
    with safe(archive({"a.npy": huge}), limit=1 << 20) as z, pytest.raises(TooBig) as err:
        z.header("a")
    assert str(err.value) == "its member 'a.npy' declares 7.6 MiB, more than the 1.0 MiB allowed"
    exact = raw_npy({"descr": "<f4", "fortran_order": False, "shape": (2, 3)}, b"\0" * 24)
    with safe(archive({"a.npy": exact}), limit=len(exact)) as z:
        assert z.header("a").nbytes == 24  # a limit of exactly the array's size is enough


@pytest.mark.parametrize("header, message", [
    ({"descr": "<f4", "fortran_order": True, "shape": (2, 3)}, "has an unusual array layout"),
    ({"descr": "<f4", "fortran_order": False, "shape": (-2, 3)}, "has an unusual array layout"),
    ({"descr": "|O", "fortran_order": False, "shape": (2,)}, "holds Python objects"),
])
def test_layouts_and_objects_are_refused(header, message):
    data = archive({"a.npy": raw_npy(header, b"\0" * 24)})
    with safe(data) as z, pytest.raises(ArchiveError, match=f"^its member 'a.npy' {message}$"):
        z.header("a")


def test_an_unknown_array_format_version():
    data = npy_bytes(A, version=(3, 0))
    with safe(archive({"a.npy": data})) as z, pytest.raises(ArchiveError) as err:
        z.header("a")
    assert str(err.value) == "its member 'a.npy' is in an unknown array format (3, 0)"


def test_a_header_longer_than_numpy_allows_is_refused():
    header = {"descr": "<f4", "fortran_order": False, "shape": (2, 3), "x" * 20_000: 1}
    body = raw_npy(header, A.tobytes())
    with safe(archive({"a.npy": body})) as z, pytest.raises(ValueError):
        z.header("a")


# -- reading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [6, 20_000])
def test_a_damaged_member_is_found_by_its_checksum(n):
    """A small member is read whole with its header (zipfile checks the sum then); a large one
    when its array is read."""
    arr = np.arange(n, dtype=np.float32)
    data = bytearray(archive({"a.npy": npy_bytes(arr)}))
    data[bytes(data).index(arr.tobytes()) + len(arr.tobytes()) - 3] ^= 0xFF
    damaged = r"^its member 'a.npy' is damaged \(its checksum does not match\)$"
    with safe(bytes(data)) as z, pytest.raises(ArchiveError, match=damaged):
        z.read(z.header("a"))


def test_other_zip_errors_stay_what_zipfile_said(monkeypatch):
    data = archive({"a.npy": npy_bytes(np.arange(20_000, dtype=np.float32))})
    with safe(data) as z:
        m = z.header("a")

        def broken(*args, **kwargs):
            raise zipfile.BadZipFile("Bad magic number for file header")

        monkeypatch.setattr(z._zip, "open", broken)
        for call in (lambda: z.header("a"), lambda: z.read(m)):
            with pytest.raises(zipfile.BadZipFile, match="^Bad magic number"):
                call()


# -- the end records, byte by byte ----------------------------------------------------------------
LOCATOR, RECORD, EOCD = b"PK\x06\x07", b"PK\x06\x06", b"PK\x05\x06"


def end_record(entries=0xFFFF, cd_size=0, cd_offset=0) -> bytes:
    return struct.pack("<4s4H2LH", EOCD, 0, 0, entries, entries, cd_size, cd_offset, 0)


def zip64_record(entries: int, cd_size: int) -> bytes:
    return RECORD + b"\0" * 28 + struct.pack("<QQ", entries, cd_size) + b"\0" * 8


def test_a_zip64_locator_at_the_very_start_of_the_file():
    # [locator → record][end record, counts saturated][zip64 record]
    record_at = 20 + 22
    data = LOCATOR + b"\0" * 4 + struct.pack("<Q", record_at) + b"\0" * 4 + end_record() + zip64_record(3, 99)
    assert _directory_size(io.BytesIO(data), len(data)) == (3, 99)


@pytest.mark.parametrize("saturate", [12, 16])  # the directory's size, or its offset
def test_any_saturated_field_of_the_end_record_means_zip64(monkeypatch, saturate):
    plain = archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)})
    at = plain.rindex(EOCD)
    damaged = bytearray(plain)
    struct.pack_into("<L", damaged, at + saturate, 0xFFFFFFFF)
    with pytest.raises(ArchiveError, match="^its zip64 end record is missing$"):  # there is none
        _directory_size(io.BytesIO(bytes(damaged)), len(damaged))
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    data64 = bytearray(archive({"a.npy": npy_bytes(A), "b.npy": npy_bytes(A)}))
    struct.pack_into("<L", data64, bytes(data64).rindex(EOCD) + saturate, 0xFFFFFFFF)
    assert _directory_size(io.BytesIO(bytes(data64)), len(data64)) == _directory_size(io.BytesIO(plain), len(plain))


def test_a_zip64_record_with_absurd_values_is_refused():
    for record_at in (2**64 - 1, 2**63, 43):  # past the end (43: a record of 56 bytes cannot start there)
        data = LOCATOR + b"\0" * 4 + struct.pack("<Q", record_at) + b"\0" * 4 + end_record()
        with pytest.raises(ArchiveError, match="^its zip64 end record is damaged$"):
            _directory_size(io.BytesIO(data), len(data))
    huge = LOCATOR + b"\0" * 4 + struct.pack("<Q", 42) + b"\0" * 4 + end_record() + zip64_record(2**64 - 1, 2**64 - 2)
    assert _directory_size(io.BytesIO(huge), len(huge)) == (2**64 - 1, 2**64 - 2)
    with pytest.raises(ArchiveError, match=f"^it has {2**64 - 1} members, more than the 2 it may have$"):
        safe(huge)


def test_the_last_end_record_counts_not_one_inside_a_member():
    data = archive({"a.npy": npy_bytes(np.frombuffer(EOCD * 64, dtype=np.uint8))})
    assert _directory_size(io.BytesIO(data), len(data))[0] == 1
    cut = b"x" * 30 + EOCD + b"\0" * 10  # a signature with too few bytes after it
    with pytest.raises(ArchiveError, match="^it is not a zip archive$"):
        _directory_size(io.BytesIO(cut), len(cut))


def test_the_directory_allowance_is_exact_and_an_empty_archive_is_empty():
    data = archive({"x" * 200 + ".npy": npy_bytes(A)})  # a 250-byte directory
    with pytest.raises(ArchiveError, match="^its directory takes 250 bytes"):
        safe(data, known=("x" * 167,))  # allowance 249
    empty = archive({})
    with safe(empty, known=()) as z:
        assert z.members == {}


def test_a_member_shorter_or_longer_than_its_header_says(monkeypatch):
    data = archive({"a.npy": npy_bytes(A)})
    with safe(data) as z:
        m = z.header("a")
        whole = npy_bytes(A)
        for wrong in (whole[:-1], whole + b"x"):
            monkeypatch.setattr(z._zip, "open", lambda info, wrong=wrong: io.BytesIO(wrong))
            with pytest.raises(ArchiveError, match="^its member 'a.npy' is truncated$"):
                z.read(m)
