"""analysis.store: behaviours no other test reached (found by branch coverage).

Pinned down here: a store is still written, sized at once and read back exactly where Linux's
helpers (fallocate, sync_file_range, O_DIRECT) are missing or refused, and where direct writes
fail after all (EINVAL: the page cache; anything else: the capture fails in one sentence); the
writer waits for a slow disk instead of dropping chunks, and after a failed write it drops what
was queued and raises that failure; a failure that is no OS error is raised as it is; a
``with StoreWriter()`` block removes the folder on an exception before :meth:`finish` and keeps
a finished store; descriptors whose close fails do not fail the capture or keep the store;
empty selections, boolean indexes, ``itemsize``, negative levels and pickled stacks behave like
numpy's; a store pickled by a process that is not its owner is handed over (:func:`disown_sent`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from analysis import store as store_mod
from analysis.errors import CaptureError
from analysis.store import (
    StoreWriter,
    disown_sent,
    forget_sent,
    is_stored,
    open_store,
    write_stacks,
)

#: every test writes its stores into its own cache folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture
def fresh_libc():
    """Linux's libc functions are looked up again in the test and again after it."""
    store_mod._libc.cache_clear()
    yield
    store_mod._libc.cache_clear()


def _maps(shape, seed=0) -> np.ndarray:
    a = np.random.default_rng(seed).random(shape).astype(np.float32) + 0.01
    return (a / a.sum(-1, keepdims=True)).astype(np.float16)


def _sizes(sf) -> dict[str, int]:
    """The size each of a stack's files must have: its header and every map's cells."""
    n_layers, n_heads = sf.shape[:2]
    return {fname: header + n_layers * n_heads * lq * lk * 2 for fname, _, header, (lq, lk) in sf.files.values()}


# --------------------------------------------------------------------------------------------
# without Linux's helpers
# --------------------------------------------------------------------------------------------
def _not_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")


def _no_libc(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("libc.so.6: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", refuse)


def _libc_without_the_functions(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda *args, **kwargs: object())


@pytest.mark.parametrize("system", [_not_linux, _no_libc, _libc_without_the_functions],
                         ids=["not-linux", "no-libc", "libc-without-fallocate"])
def test_without_fallocate_a_store_is_sized_at_once_and_written_through_the_page_cache(
        system, monkeypatch, fresh_libc):
    arr = _maps((1, 2, 256, 2048))  # a chunk of rows is 1 MiB: enough to be sent on to the disk
    with monkeypatch.context() as m:
        system(m)
        with StoreWriter() as writer:
            sf = writer.begin("attentions", arr.shape)
            for fname, size in _sizes(sf).items():  # sized before any map is written
                assert (writer.path / fname).stat().st_size == size, fname
            assert sf.direct_fd is None  # no O_DIRECT into a file without allocated blocks
            writer.write("attentions", 0, 0, arr[0])
            st = writer.finish()
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)
    for fname, size in _sizes(sf).items():
        assert (st.path / fname).stat().st_size == size, fname


def _no_o_direct(monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT", raising=False)


def _o_direct_refused(monkeypatch):
    real_open = os.open

    def refuse_direct(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_direct)


@pytest.mark.parametrize("system", [_no_o_direct, _o_direct_refused], ids=["no-o-direct", "o-direct-refused"])
def test_without_o_direct_the_maps_go_through_the_page_cache(system, monkeypatch):
    arr = _maps((2, 3, 40, 300))
    with monkeypatch.context() as m:
        system(m)
        with StoreWriter() as writer:
            sf = writer.begin("attentions", arr.shape)
            assert sf.direct_fd is None
            assert len(sf.fds) == len(sf.files)  # one descriptor per file: no second one
            for layer in range(2):
                writer.write("attentions", layer, 0, arr[layer])
            st = writer.finish()
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)


# --------------------------------------------------------------------------------------------
# direct writes that fail
# --------------------------------------------------------------------------------------------
def _aligned_maps(shape) -> np.ndarray:
    """Float16 maps in memory aligned for direct writes (as torch's casts are)."""
    out = store_mod.aligned_empty(shape, np.float16)
    out[...] = _maps(shape, seed=7)
    return out


def _refuse_direct_writes(monkeypatch, err: int) -> list[int]:
    """Level 0 gets a direct descriptor (a plain one here, on any file system) whose writes fail
    with ``err``; returns the list of descriptors such writes were tried on."""
    monkeypatch.setattr(store_mod, "_open_direct", lambda path: os.open(path, os.O_WRONLY))
    real = store_mod._pwrite_all
    tried: list[int] = []

    def pwrite_all(fd, data, offset, behind=True):
        if not behind:  # only the direct writes are sent without write-behind
            tried.append(fd)
            raise OSError(err, os.strerror(err))
        real(fd, data, offset, behind)

    monkeypatch.setattr(store_mod, "_pwrite_all", pwrite_all)
    return tried


def test_direct_writes_refused_with_einval_fall_back_to_the_page_cache(monkeypatch):
    arr = _aligned_maps((1, 3, 8, 512))  # each map is two whole disk blocks, on a block boundary
    tried = _refuse_direct_writes(monkeypatch, errno.EINVAL)
    with StoreWriter() as writer:
        sf = writer.begin("attentions", arr.shape)
        assert sf.direct_fd is not None
        writer.write("attentions", 0, 0, arr[0])
        st = writer.finish()
    assert len(tried) == 1 and sf.direct_fd is None  # tried once, then never again
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)


def test_a_direct_write_that_fails_otherwise_fails_the_capture_in_one_sentence(monkeypatch):
    arr = _aligned_maps((1, 3, 8, 512))
    tried = _refuse_direct_writes(monkeypatch, errno.EIO)
    writer = StoreWriter()
    writer.begin("attentions", arr.shape)
    writer.write("attentions", 0, 0, arr[0])
    with pytest.raises(CaptureError) as excinfo:
        writer.finish()
    assert str(excinfo.value) == (
        f"the attention maps could not be written to {writer.path} (Input/output error); "
        "check the cache folder (HEADMAP_CACHE)"
    )
    assert len(tried) == 1 and not writer.path.exists()


# --------------------------------------------------------------------------------------------
# the writer thread
# --------------------------------------------------------------------------------------------
def _gated_pwrite(monkeypatch, gate: threading.Event, fail: int | None = None) -> list[int]:
    """``os.pwrite`` that waits for ``gate`` (a slow disk), then writes, or fails with ``fail``;
    returns the list of its calls (their byte counts)."""
    real = os.pwrite
    calls: list[int] = []

    def pwrite(fd, data, offset):
        calls.append(len(data))
        if not gate.wait(10):
            raise TimeoutError("the test's gate never opened")
        if fail is not None:
            raise OSError(fail, os.strerror(fail))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return calls


def test_a_writer_that_outpaces_the_disk_waits_for_it_and_drops_no_chunk(monkeypatch):
    arr = _maps((1, 6, 4, 4))
    writer = StoreWriter()
    writer.begin("attentions", arr.shape)
    gate = threading.Event()
    opened: list[float] = []

    def open_gate():
        opened.append(time.monotonic())
        gate.set()

    with monkeypatch.context() as m:
        _gated_pwrite(m, gate)
        timer = threading.Timer(0.5, open_gate)
        timer.start()
        try:
            returned = []
            for head in range(6):  # one chunk each: the thread holds one, the queue two, then the writer waits
                writer.write("attentions", 0, 0, arr[0, head], head=head)
                returned.append(time.monotonic())
        finally:
            timer.join()
        st = writer.finish()
    assert returned[3] >= opened[0]  # the fourth chunk waited for the disk
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)


def test_after_a_failed_write_queued_chunks_are_dropped_and_every_write_raises_the_failure(monkeypatch):
    arr = _maps((1, 3, 4, 4))
    writer = StoreWriter()
    writer.begin("attentions", arr.shape)
    gate = threading.Event()
    message = (f"the attention maps could not be written to {writer.path} (Input/output error); "
               "check the cache folder (HEADMAP_CACHE)")
    with monkeypatch.context() as m:
        calls = _gated_pwrite(m, gate, fail=errno.EIO)
        writer.write("attentions", 0, 0, arr[0, 0], head=0)  # the thread takes it and waits on the disk
        writer.write("attentions", 0, 0, arr[0, 1], head=1)  # queued behind it
        gate.set()  # the first write fails
        deadline = time.monotonic() + 10
        with pytest.raises(CaptureError) as excinfo:
            while time.monotonic() < deadline:
                writer.write("attentions", 0, 0, arr[0, 2], head=2)
                time.sleep(0.02)
        assert str(excinfo.value) == message
        # the failure comes first, before any complaint about the chunk itself
        with pytest.raises(CaptureError) as excinfo:
            writer.write("attentions", 0, 2, np.zeros((3, 5, 9), np.float32))
        assert str(excinfo.value) == message
        with pytest.raises(CaptureError) as excinfo:
            writer.finish()
        assert str(excinfo.value) == message
    assert len(calls) == 1  # the chunks queued after the failure were never written
    assert not writer.path.exists()


def test_a_failure_that_is_no_os_error_is_raised_as_it_is(monkeypatch):
    arr = _maps((1, 2, 4, 4))
    writer = StoreWriter()
    writer.begin("attentions", arr.shape)
    boom = MemoryError("no memory for the chunk")

    def fail(*args):
        raise boom

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", fail)
        writer.write("attentions", 0, 0, arr[0])
        with pytest.raises(MemoryError) as excinfo:
            writer.finish()
    assert excinfo.value is boom
    assert not writer.path.exists()


def test_a_with_block_removes_its_folder_on_an_error_but_keeps_a_finished_store():
    with pytest.raises(RuntimeError, match="cancelled"):
        with StoreWriter() as writer:
            writer.begin("attentions", (1, 1, 4, 4))
            raise RuntimeError("cancelled")
    assert not writer.path.exists() and str(writer.path) not in store_mod.WRITING

    arr = _maps((1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="after"):
        with StoreWriter() as writer:
            writer.begin("attentions", arr.shape)
            writer.write("attentions", 0, 0, arr[0])
            st = writer.finish()
            raise RuntimeError("after finish")
    writer.abort()  # again: nothing happens
    assert st.path.is_dir() and not st.closed
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)


def _close_then_fail(monkeypatch) -> list[int]:
    """``os.close`` of the store's own descriptors closes, then reports an error (as a network
    file system may); returns the descriptors so closed."""
    real = os.close
    closed: list[int] = []

    def close(fd):
        real(fd)
        if sys._getframe(1).f_code.co_filename == store_mod.__file__:  # not shutil.rmtree's
            closed.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "close", close)
    return closed


def test_descriptors_whose_close_fails_neither_fail_the_capture_nor_keep_the_store(monkeypatch):
    arr = _maps((1, 2, 40, 40))
    writer = StoreWriter()
    writer.begin("attentions", arr.shape)
    writer.write("attentions", 0, 0, arr[0])
    with monkeypatch.context() as m:
        closed = _close_then_fail(m)
        st = writer.finish()
    assert len(closed) >= 2  # the stack's files: the maps and their levels
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr)
    with monkeypatch.context() as m:
        closed = _close_then_fail(m)
        st.close()
    assert len(closed) >= 2
    assert st.closed and not st.path.exists()


# --------------------------------------------------------------------------------------------
# reading like numpy
# --------------------------------------------------------------------------------------------
def test_empty_selections_and_stacks_of_empty_maps_read_as_empty_arrays():
    arr = _maps((1, 2, 8, 8))
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    for key in [(0, 0, slice(3, 3)), (0, slice(None), slice(5, 2)), (0, 1, np.array([], dtype=np.int64))]:
        got = stack[key]
        assert got.shape == arr[key].shape and got.dtype == np.float16, key
    with StoreWriter() as writer:  # maps of no rows (nothing to write)
        writer.begin("attentions", (1, 2, 0, 300))
        empty = writer.finish().stacks["attentions"]
    assert np.asarray(empty).shape == (1, 2, 0, 300)
    assert empty.levels == (2, 3, 4, 5)
    assert empty.level(2).shape == (1, 2, 0, 75)
    assert empty.level(3, 0).shape == (2, 0, 38)


def test_a_boolean_index_selects_like_numpy():
    arr = _maps((2, 3, 6, 5))
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    for key in [(1, np.array([True, False, True])), (0, 2, np.array([False, True, False, False, True, True])),
                (1, np.array([False, True, True]), 4), (0, 0, np.zeros(6, bool))]:
        got, want = stack[key], arr[key]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_two_index_arrays_are_refused_rather_than_read_otherwise_than_numpy():
    """numpy pairs index arrays element by element (``arr[[0, 1], [2, 0]]`` is two maps); a stored
    stack refuses the key instead of reading every combination (four maps), and says how to
    index; one array at a time gives numpy's answer."""
    arr = _maps((2, 3, 6, 5))
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    for key in [([0, 1], [2, 0]), (np.array([0, 1]), slice(None), [1, 2]), (0, [0, 2], [True] * 6),
                (Ellipsis, [0, 1], [2, 3])]:
        with pytest.raises(IndexError, match=r"^a stored attention stack takes one index array at most \(numpy "
                                             r"would pair several element by element\); index one axis at a time, "
                                             r"e.g. stack\[\[0, 1\]\]\[:, \[2, 3\]\]$"):
            stack[key]
    np.testing.assert_array_equal(stack[[0, 1]][:, [2, 0]], arr[[0, 1]][:, [2, 0]])
    np.testing.assert_array_equal(stack[1, [2, 0], 3], arr[1, [2, 0], 3])
    np.testing.assert_array_equal(stack[..., [4, 0]], arr[..., [4, 0]])
    # the pyramid levels keep their own (per axis) selection of layers and heads
    np.testing.assert_array_equal(stack.level(0, [0, 1], [2, 0]), arr[np.ix_([0, 1], [2, 0])].astype(np.float32))


def test_an_empty_index_list_selects_nothing_like_numpy():
    arr = _maps((2, 3, 6, 5))
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    for key in [(0, 1, []), ([],), (1, slice(None), [], 2), (0, 0, slice(None), np.array([], np.int64))]:
        got, want = stack[key], arr[key]
        assert got.shape == want.shape, key


@pytest.mark.parametrize("key", [(1, slice(None), [2, 3], 0), (0, slice(1, 3), np.array([True] * 3 + [False] * 3), 4),
                                 ([1, 0], slice(None), 2), (1, slice(None), 4, [3, 1, 0]),
                                 (1, [2, 0], 3), (Ellipsis, [2, 3], 1), (0, 2, slice(None), [4, 1])])
def test_an_index_array_with_ints_apart_from_it_puts_its_axis_first_like_numpy(key):
    """numpy's rule for an index array and ints separated by a slice: the array's axis comes first
    (``arr[1, :, [2, 3], 0]`` is ``[2, H]``); next to each other, it stays in place."""
    arr = _maps((2, 3, 6, 5))
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    got, want = stack[key], arr[key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert not got.flags.writeable
    with pytest.raises(IndexError):  # an empty boolean mask fits no axis of size 6 (numpy refuses it too)
        stack[0, 0, np.zeros(0, bool)]


def test_itemsize_is_that_of_the_dtype_read():
    stack = write_stacks({"attentions": _maps((1, 1, 4, 4))}).stacks["attentions"]
    assert stack.itemsize == 2
    assert stack.astype(np.float32).itemsize == 4


def test_a_negative_level_of_a_stack_with_stored_levels_is_refused():
    stack = write_stacks({"attentions": _maps((1, 1, 100, 100))}).stacks["attentions"]
    assert stack.levels == (2, 3)
    with pytest.raises(ValueError) as excinfo:
        stack.level(-1)
    assert str(excinfo.value) == "pyramid levels start at 0, got -1"


def test_a_pickled_stack_reads_the_same_maps_as_the_same_dtype():
    arr = _maps((2, 2, 6, 6))
    st = write_stacks({"attentions": arr})
    for stack, dtype in [(st.stacks["attentions"], np.float16), (st.stacks["attentions"].astype(np.float32), np.float32)]:
        again = pickle.loads(pickle.dumps(stack))
        assert is_stored(again) and again.name == "attentions" and again.dtype == dtype
        assert again.store.path == st.path and not again.store.owned  # a reader of the same store
        np.testing.assert_array_equal(again[1, 0], arr[1, 0].astype(dtype))
    assert st.owned


def test_nbytes_skips_a_file_removed_while_it_is_counted(monkeypatch):
    st = write_stacks({"attentions": _maps((1, 2, 100, 100))})
    sizes = {p.name: p.stat().st_size for p in st.path.iterdir()}
    assert st.nbytes == sum(sizes.values())
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self.name == "attentions.level3.npy":
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    assert st.nbytes == sum(size for name, size in sizes.items() if name != "attentions.level3.npy")


# --------------------------------------------------------------------------------------------
# handing a store over
# --------------------------------------------------------------------------------------------
def test_a_store_pickled_by_a_process_that_is_not_its_owner_is_handed_over():
    forget_sent()
    owner = os.getppid()  # another live process (the window the capture is for)
    st = write_stacks({"attentions": _maps((1, 1, 4, 4))}, owner=owner)
    try:
        assert st.owner == owner and st.owned
        copy = pickle.loads(pickle.dumps(st))
        assert not copy.owned  # this process is not the owner: it unpickles a reader
        assert st.owned  # sent, not yet handed over
        disown_sent()
        assert not st.owned
        st.close()
        copy.close()
        assert st.closed and st.path.is_dir()  # the owner removes it, not this process
        again = open_store(st.path, owned=False)
        assert again.owner == owner
        again.close()
    finally:
        shutil.rmtree(st.path, ignore_errors=True)
