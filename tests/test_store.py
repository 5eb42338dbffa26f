"""Long captures on disk (analysis.store, analysis.stream): the streamed maps are transformers' own,
the store reads what is asked, and no store outlives its capture, a cancel, a failure or its window."""

from __future__ import annotations

import errno
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import store as store_mod
from analysis.capture import capture
from analysis.errors import Cancelled, CaptureError, InputError
from analysis.overview import downsample
from analysis.pyramid import MapSource, block_for, pool
from analysis.store import (
    StoredStack,
    StoreWriter,
    is_stored,
    open_store,
    stores_root,
    sweep_stores,
    write_stacks,
)
from analysis.tasks import TaskState
from tests.tiny_models import SEQ2SEQ

TEXT = "The students are reading and writing and thinking about attention heads " * 4
TARGET = "Les étudiants lisent et écrivent et pensent aux têtes d'attention"


#: every test writes its stores into its own cache folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("own_cache")


def _stores() -> list[str]:
    root = stores_root()
    return sorted(os.listdir(root)) if root.exists() else []


def _direct(lm, text, target=None):
    """transformers' own eager maps, with output_attentions=True."""
    import torch

    enc = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=64)
    kw = {}
    if target is not None:
        labels = lm.tokenizer(text_target=target, return_tensors="pt", truncation=True, max_length=64)["input_ids"]
        kw["labels"] = labels
    with torch.inference_mode():
        return lm.model(**enc, **kw, output_attentions=True)


# --------------------------------------------------------------------------------------------
# the streamed maps are transformers' output_attentions=True maps, in float16
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "distilbert", "gpt2", "llama", "bart", "t5", "marian"])
def test_streamed_store_equals_output_attentions(arch, loaded):
    lm = loaded(arch)
    target = TARGET if arch in SEQ2SEQ else None
    cap = capture(lm, TEXT, target=target, store=True)
    assert cap.stored
    out = _direct(lm, TEXT, target)
    names = ("encoder_attentions", "decoder_attentions", "cross_attentions") if arch in SEQ2SEQ else ("attentions",)
    assert cap.stack_names == names
    for name in names:
        stack = cap.stacks[name]
        assert isinstance(stack, StoredStack) and stack.dtype == np.float16
        ref = getattr(out, name)
        assert stack.shape[0] == len(ref)
        for layer, a in enumerate(ref):
            want = a[0].float().numpy()
            got = stack[layer]
            assert got.dtype == np.float16 and got.shape == want.shape
            # within float16 rounding of transformers' float32 maps (half a unit in the last place)
            np.testing.assert_allclose(got.astype(np.float32), want, rtol=2**-11, atol=2**-25,
                                       err_msg=f"{arch} {name} layer {layer}")


@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_streamed_capture_equals_the_in_memory_one(arch, loaded):
    lm = loaded(arch)
    target = TARGET if arch in SEQ2SEQ else None
    mem = capture(lm, TEXT, target=target, store_dtype=np.float16)
    disk = capture(lm, TEXT, target=target, store=True)
    for name in mem.stack_names:
        np.testing.assert_allclose(np.asarray(disk.stacks[name], dtype=np.float32),
                                   mem.stacks[name].astype(np.float32), rtol=2**-10, atol=2**-24)
    assert disk.source.raw == mem.source.raw and disk.output_text == mem.output_text
    assert [label for label, _ in disk.prediction.items] == [label for label, _ in mem.prediction.items]
    np.testing.assert_allclose([p for _, p in disk.prediction.items], [p for _, p in mem.prediction.items], rtol=1e-5)


def test_a_continued_decoder_streams_its_prompt_and_continuation(loaded):
    lm = loaded("llama")
    mem = capture(lm, "I like this course", generate=True, max_new_tokens=5)
    disk = capture(lm, "I like this course", generate=True, max_new_tokens=5, store=True)
    assert disk.output_text == mem.output_text and disk.stored
    assert len(disk.prediction.per_position) == len(mem.prediction.per_position) == 5
    np.testing.assert_allclose(np.asarray(disk.stacks["attentions"], np.float32),
                               mem.stacks["attentions"].astype(np.float16).astype(np.float32), atol=1e-3)


# --------------------------------------------------------------------------------------------
# the store: what it keeps, and reading it
# --------------------------------------------------------------------------------------------
def _random_stacks():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 300, 300)).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    cross = rng.random((2, 3, 70, 300)).astype(np.float32)
    return {"attentions": a, "cross_attentions": cross}


def test_the_store_keeps_the_maps_their_levels_and_ranges():
    stacks = _random_stacks()
    st = write_stacks(stacks)
    for name, arr in stacks.items():
        half = arr.astype(np.float16)
        stack = st.stacks[name]
        assert stack.shape == arr.shape and stack.dtype == np.float16 and stack.nbytes == half.nbytes
        np.testing.assert_array_equal(np.asarray(stack), half)
        q, k = arr.shape[2:]
        assert stack.levels == tuple(range(2, store_mod.n_levels(q, k)))
        for lv in stack.levels:  # each stored level is analysis.pyramid.pool of the map
            raw = np.load(st.path / f"{name}.level{lv}.npy")
            np.testing.assert_array_equal(raw.astype(np.float32), pool(half.astype(np.float32), 2**lv))
        stats = stack.map_stats()
        np.testing.assert_array_equal(stats[..., 0], half.min(axis=(2, 3)))
        np.testing.assert_array_equal(stats[..., 1], half.max(axis=(2, 3)))
        np.testing.assert_array_equal(stats[..., 2], np.where(half > 0, half, np.inf).min(axis=(2, 3)))


def test_a_stored_stack_indexes_like_the_array():
    arr = _random_stacks()["attentions"].astype(np.float16)
    s = write_stacks({"attentions": arr}).stacks["attentions"]
    for key in [(1, 2), 1, (0, slice(None), 5), (1, 2, slice(10, 40, 3), 7), (slice(None), 0, 3),
                (Ellipsis, 4), (1, 2, slice(None), slice(5, 9)), (-1, -1, -1), (0, [2, 0]), (1, 1, [5, 2, 9])]:
        got, want = s[key], arr[key]
        assert got.shape == want.shape and got.dtype == want.dtype, key
        np.testing.assert_array_equal(got, want, err_msg=str(key))
        assert not got.flags.writeable
    assert s.astype(np.float32)[1, 2].dtype == np.float32 and s.astype(np.float16) is s
    with pytest.raises(IndexError):
        s[2]
    with pytest.raises(IndexError):
        s[0, 0, 0, 0, 0]


@pytest.mark.parametrize("name,max_cell", [("attentions", 64), ("attentions", 160), ("attentions", 7),
                                           ("cross_attentions", 64), ("cross_attentions", 16)])
def test_tiles_equal_the_in_memory_overview_pooling(name, max_cell):
    arr = _random_stacks()[name].astype(np.float16)
    s = write_stacks({name: arr}).stacks[name]
    np.testing.assert_array_equal(s.tiles(max_cell), downsample(arr.astype(np.float32), max_cell))
    np.testing.assert_array_equal(s.layer_tiles(1, max_cell), downsample(arr[1].astype(np.float32), max_cell))


@pytest.mark.parametrize("max_cell", [16, 64, 160])
def test_layer_tiles_pool_the_coarsest_stored_level_that_fits(max_cell, monkeypatch):
    # not the full maps: a layer's tiles of a long capture read a few MB, not the layer's GB
    arr = _random_stacks()["attentions"].astype(np.float16)
    s = write_stacks({"attentions": arr}).stacks["attentions"]
    read = []
    real = type(s).level
    monkeypatch.setattr(type(s), "level", lambda self, k, *a, **kw: read.append(k) or real(self, k, *a, **kw))
    tiles = s.layer_tiles(1, max_cell)
    f = block_for(300, max_cell)  # the block side of the tiles
    assert read == [max(lv for lv in (0, *s.levels) if 2**lv <= f)]
    assert read[0] > 0 or f < 2**store_mod.FIRST_STORED_LEVEL  # the full maps only when no stored level fits
    np.testing.assert_array_equal(tiles, downsample(arr[1].astype(np.float32), max_cell))


def test_a_map_source_reads_every_level_and_region():
    arr = _random_stacks()["attentions"].astype(np.float16)
    s = write_stacks({"attentions": arr}).stacks["attentions"]
    src = s.map_source(1, 2)
    assert isinstance(src, MapSource) and src.shape == (300, 300)
    for k in range(0, 9):
        want = pool(arr[1, 2].astype(np.float32), 2**k)
        got = src.level(k)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"level {k}")
        np.testing.assert_array_equal(src.region(k, 1, 6, 2, 9), want[1:6, 2:9], err_msg=f"region of level {k}")
    with pytest.raises(IndexError):
        s.map_source(2, 0)


# --------------------------------------------------------------------------------------------
# no store outlives its capture
# --------------------------------------------------------------------------------------------
def test_a_dropped_capture_removes_its_store(loaded):
    cap = capture(loaded("llama"), TEXT, store=True)
    folder = cap.stacks["attentions"].store.path
    assert folder.is_dir() and _stores() == [folder.name]
    del cap
    gc.collect()
    assert not folder.exists() and _stores() == []


def test_close_removes_the_store_and_a_copy_in_one_process_is_a_reader():
    st = write_stacks(_random_stacks())
    again = pickle.loads(pickle.dumps(st))
    assert not again.owned and st.owned
    del again
    gc.collect()
    assert st.path.is_dir()
    st.close()
    assert not st.path.exists()


def test_a_cancelled_capture_leaves_no_store(loaded):
    import threading

    cancel = threading.Event()
    seen = []

    def progress(stage, fraction, message):
        seen.append(message)
        if "layer 1 of" in message:  # half-way: the first layer is written, the second is not
            cancel.set()

    with pytest.raises(Cancelled):
        capture(loaded("marian"), TEXT, target=TARGET, store=True, task=TaskState(progress, cancel))
    assert any("layer 1 of" in m for m in seen)
    assert _stores() == []


def test_a_capture_that_fails_its_checks_leaves_no_store(loaded, monkeypatch):
    import analysis.capture as cap_mod

    def bad_rows(m, name, layer, arch):
        if layer == 1:
            raise CaptureError("rows do not sum to 1")

    monkeypatch.setattr(cap_mod, "check_rows", bad_rows)
    with pytest.raises(CaptureError):
        capture(loaded("llama"), TEXT, store=True)
    assert _stores() == []


def test_sweep_removes_a_dead_owners_store_and_keeps_a_live_ones(tmp_path):
    root = stores_root()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f"{dead_pid}-w{dead_pid}-aaaa",           # a crashed window's store
            "live": f"{live.pid}-w{dead_pid}-bbbb",           # another window's, alive
            "writer_alive": f"{os.getpid()}-w{live.pid}-cccc",  # ours, its model process still writing
            "half": f"{os.getpid()}-w{dead_pid}-dddd",        # ours, its writer died before handing it over
            "other": "not-a-store",
        }
        held = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)})  # ours, open
        for n in names.values():
            (root / n).mkdir()
        assert sweep_stores() == 2
        left = set(os.listdir(root))
        assert left == {names["live"], names["writer_alive"], names["other"], held.path.name}
    finally:
        live.kill()
        live.wait()


def test_two_model_processes_write_two_stores_owned_by_their_windows(tiny_model_dir):
    from analysis.host import ModelHost

    hosts = [ModelHost(preload=False), ModelHost(preload=False)]
    try:
        caps = [h.call(capture, h.load(str(tiny_model_dir("llama")), device="cpu"), TEXT, store=True) for h in hosts]
        folders = [c.stacks["attentions"].store.path for c in caps]
        assert folders[0] != folders[1] and all(f.is_dir() for f in folders)
        for f, h in zip(folders, hosts, strict=True):  # named after this window and the model process that wrote it
            assert f.name.startswith(f"{os.getpid()}-w{h.pid}-")
        assert all(c.stacks["attentions"].store.owned for c in caps)
        np.testing.assert_array_equal(np.asarray(caps[0].stacks["attentions"]), np.asarray(caps[1].stacks["attentions"]))
        del caps
        gc.collect()
        assert not any(f.exists() for f in folders)
    finally:
        for h in hosts:
            h.close()


def test_a_full_disk_is_refused_before_the_model_runs(loaded, monkeypatch):
    import shutil

    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100 * 10**6))
    ran = []
    lm = loaded("llama")
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: ran.append(1))
    with pytest.raises(InputError) as err:
        capture(lm, TEXT, store=True)
    msg = str(err.value)
    assert "needs" in msg and "only 0.1 GB is free" in msg and str(stores_root()) in msg
    assert "HEADMAP_CACHE" in msg and "--max-tokens" in msg and "\n" not in msg
    assert not ran and _stores() == []


def test_tokens_that_fit_and_the_store_rule(monkeypatch):
    stacks = [("attentions", 30, 9)]
    need_8192 = store_mod.capture_bytes(store_mod.stack_shapes(stacks, "decoder", 8192))
    assert 36e9 < need_8192 < 40e9  # 36 GB of float16 maps and their levels
    assert store_mod.tokens_that_fit(stacks, "decoder", 8192, free=need_8192 + store_mod.SPACE_MARGIN) == 8192
    n = store_mod.tokens_that_fit(stacks, "decoder", 8192, free=10 * 10**9)
    assert store_mod.capture_bytes(store_mod.stack_shapes(stacks, "decoder", n)) + store_mod.SPACE_MARGIN <= 10 * 10**9
    assert store_mod.capture_bytes(store_mod.stack_shapes(stacks, "decoder", n + 1)) + store_mod.SPACE_MARGIN > 10 * 10**9
    monkeypatch.delenv("HEADMAP_STORE", raising=False)
    assert not store_mod.store_wanted([(30, 9, 512, 512)], None)  # 142 MB of float16 maps: in memory
    assert store_mod.store_wanted([(30, 9, 1024, 1024)], None)  # 566 MB: on disk
    monkeypatch.setenv("HEADMAP_STORE", "1")
    assert store_mod.store_wanted([(1, 1, 4, 4)], None) and not store_mod.store_wanted([(1, 1, 4, 4)], False)


def test_is_stored_tells_stored_stacks_from_arrays():
    st = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)})
    assert is_stored(st.stacks["attentions"]) and not is_stored(np.zeros(3))
    assert open_store(st.path, owned=False).stacks["attentions"].shape == (1, 1, 4, 4)


@pytest.mark.parametrize("route", ["hooks", "held"])
def test_models_outside_the_attention_function_are_stored_too(route, tiny_model_dir, monkeypatch):
    """Forward hooks on the attention modules (one layer at a time), or, where even those give no
    maps, every layer at once then stored: the same maps either way."""
    from analysis import stream
    from analysis.loader import load_model

    lm = load_model(str(tiny_model_dir("marian")), device="cpu")  # a fresh copy: the plan is cached per model
    if route == "hooks":
        real = stream._match
        monkeypatch.setattr(stream, "_match", lambda out, record, outputs: real(out, [], outputs))
    else:
        def unsupported(*a, **k):
            raise stream.StreamUnsupported("no")
        monkeypatch.setattr(stream, "probe", unsupported)
    cap = capture(lm, TEXT, target=TARGET, store=True)
    if route == "hooks":
        assert stream._PLANS[lm.model].mode == "hooks"
    out = _direct(lm, TEXT, TARGET)
    for name in cap.stack_names:
        for layer, a in enumerate(getattr(out, name)):
            np.testing.assert_allclose(cap.stacks[name][layer].astype(np.float32), a[0].float().numpy(),
                                       rtol=2**-11, atol=2**-25)


# --------------------------------------------------------------------------------------------
# sessions of stored captures
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_a_stored_capture_saves_and_reopens_as_a_session(arch, loaded, tmp_path, monkeypatch):
    from analysis.session import captures_equal, load_session, save_session

    lm = loaded(arch)
    cap = capture(lm, TEXT, target=TARGET if lm.kind == "seq2seq" else None, store=True)
    seen = []
    path = save_session(tmp_path / "long.headmap", cap, model_ref=cap.model, inputs={"text": TEXT}, options={},
                        task=TaskState(lambda *report: seen.append(report)))
    # copied from the store a chunk at a time, each chunk reported as the session stage
    assert {(stage, message) for stage, _, message in seen} == {("session", "saving the session…")}
    fractions = [f for _, f, _ in seen]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1
    assert np.load(path)[f"stack__{cap.stack_names[0]}"].dtype == np.float16  # plain npz members
    monkeypatch.setenv("HEADMAP_STORE", "1")  # reopened as a stored capture (as a big one is)
    seen = []
    again = load_session(path, task=TaskState(lambda *report: seen.append(report))).capture
    # the progress of the reopening only goes forward, each map stored counted on the way to 0.8
    fractions = [f for _, f, _ in seen]
    assert all(isinstance(f, float) for f in fractions)
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:], strict=False))  # (0.8 * 24 / 24 > 0.8)
    assert {stage for stage, _, _ in seen} == {"session"} and 0.0 == fractions[0] and fractions[-1] <= 1
    storing = [f for _, f, m in seen if m == "checking and storing the maps of long.headmap…"]
    n_maps = sum(int(np.prod(cap.shape(n)[:2])) for n in cap.stack_names)
    assert storing == pytest.approx([0.8 * (i + 1) / n_maps for i in range(n_maps)])
    assert again.stored and captures_equal(again, cap)
    assert again.stacks[cap.stack_names[0]].store.path != cap.stacks[cap.stack_names[0]].store.path
    monkeypatch.setenv("HEADMAP_STORE", "0")  # in memory
    mem = load_session(path).capture
    assert not mem.stored and captures_equal(mem, cap)


def test_a_damaged_long_session_is_refused_and_leaves_no_store(loaded, tmp_path, monkeypatch):
    from analysis.errors import InputError as Refused
    from analysis.session import load_session, save_session

    cap = capture(loaded("llama"), TEXT, store=True)
    path = save_session(tmp_path / "long.headmap", cap, model_ref=cap.model, inputs={}, options={})
    folder = cap.stacks["attentions"].store.path.name
    data = bytearray(path.read_bytes())
    at = data.find(np.float16(cap.stacks["attentions"][1, 1, 5, 0]).tobytes(), len(data) // 2)
    data[at:at + 2] = np.float16(7.0).tobytes()  # a weight outside 0…1 in a late map
    path.write_bytes(bytes(data))
    monkeypatch.setenv("HEADMAP_STORE", "1")
    with pytest.raises(Refused, match="damaged"):
        load_session(path)
    assert _stores() == [folder]  # only the capture's own store


def test_a_closed_store_refuses_to_read_in_one_sentence():
    st = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)})
    stack = st.stacks["attentions"]
    st.close()
    assert st.closed and not st.path.exists()
    with pytest.raises(CaptureError, match="removed from the disk"):
        stack[0, 0]


def test_levels_coarser_than_a_chunk_are_pooled_once_a_map_is_complete():
    """Maps over 4,096 tokens a side have levels above 2**CHUNK_LEVEL rows: pooled from the finest
    chunk level when each map's last chunk is in."""
    rng = np.random.default_rng(3)
    arr = rng.random((1, 2, 300, 4500)).astype(np.float16)  # two chunks of rows; levels 2 … 9
    st = write_stacks({"cross_attentions": arr})
    stack = st.stacks["cross_attentions"]
    assert max(stack.levels) > store_mod.CHUNK_LEVEL
    for lv in stack.levels:
        np.testing.assert_array_equal(stack.level(lv), pool(arr.astype(np.float32), 2**lv), err_msg=f"level {lv}")
    np.testing.assert_array_equal(stack.map_stats()[..., 1], arr.max(axis=(2, 3)))


def test_a_causal_maps_zero_tails_read_back_and_its_smallest_positive_weight_is_found():
    """The smallest positive weight is looked for only left of where rows hold weights (their
    zero tails, read off level 2, are skipped): it must still be the map's."""
    n = 1300
    rng = np.random.default_rng(4)
    arr = np.tril(rng.random((n, n)) + 0.01).astype(np.float16)[None, None]  # a causal map: zeros above
    arr[0, 0, 1001, 1001] = 2.0**-20  # the smallest positive weight: the last nonzero of its row
    st = write_stacks({"attentions": arr})
    np.testing.assert_array_equal(st.stacks["attentions"][0, 0], arr[0, 0])
    np.testing.assert_array_equal(st.stacks["attentions"][0, 0, 100:120, 50:], arr[0, 0, 100:120, 50:])
    half = arr[0, 0]
    np.testing.assert_array_equal(st.stacks["attentions"].map_stats()[0, 0],
                                  [0.0, half.max(), half[half > 0].min()])


def test_full_maps_go_past_the_page_cache_where_aligned_and_read_back_the_same(monkeypatch):
    """Level 0 (chunks cast by torch into aligned memory, rows of whole disk blocks) is written
    with O_DIRECT; a chunk whose bytes are not whole blocks goes through the page cache; both read
    back exactly."""
    import torch

    calls = []
    real = store_mod._pwrite_all

    def spy(fd, data, offset, behind=True):
        calls.append((fd, int(np.asarray(data).nbytes), offset))
        real(fd, data, offset, behind)

    monkeypatch.setattr(store_mod, "_pwrite_all", spy)
    q, k = 297, 1024  # a chunk of 256 rows (512 kB: whole blocks), then one of 41 rows (not)
    w = torch.rand(2, 3, q, k, generator=torch.Generator().manual_seed(0)).softmax(-1)
    with StoreWriter() as writer:
        sf = writer.begin("attentions", (2, 3, q, k))
        direct = sf.direct_fd
        if direct is None:
            pytest.skip("this file system has no O_DIRECT")
        assert sf.files[0][2] == store_mod.DIRECT_ALIGN  # the header pads the data onto a block
        for layer in range(2):
            for r0 in range(0, q, 256):
                writer.write("attentions", layer, r0, w[layer, :, r0:r0 + 256])
        st = writer.finish()
    # a map is 297 × 2 kB: every other map starts on a block; its first chunk goes direct
    aligned = {sf.offset(0, layer, h, 0) for layer in range(2) for h in range(3)
               if sf.offset(0, layer, h, 0) % store_mod.DIRECT_ALIGN == 0}
    assert len(aligned) == 3
    assert {(off, n) for fd, n, off in calls if fd == direct} == {(off, 256 * k * 2) for off in aligned}
    buffered = {(off, n) for fd, n, off in calls if fd == sf.files[0][1] and off >= store_mod.DIRECT_ALIGN}
    assert len(buffered) == 3 + 6 and {n for _, n in buffered} == {256 * k * 2, 41 * k * 2}
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), w.half().numpy())
    np.testing.assert_array_equal(np.load(st.path / "attentions.npy", mmap_mode="r"), w.half().numpy())


def test_aligned_empty_is_aligned_and_a_padded_header_is_a_valid_npy_header(tmp_path):
    for shape in [(3, 5, 7), (1,), (2, 4096)]:
        a = store_mod.aligned_empty(shape, np.float16)
        assert a.shape == shape and a.dtype == np.float16 and a.ctypes.data % store_mod.DIRECT_ALIGN == 0
    head = store_mod._npy_header((2, 3), np.dtype(np.float16), 4096)
    assert len(head) == 4096
    path = tmp_path / "x.npy"
    path.write_bytes(head + np.arange(6, dtype=np.float16).tobytes())
    np.testing.assert_array_equal(np.load(path), np.arange(6, dtype=np.float16).reshape(2, 3))


def test_a_disowned_store_closes_and_keeps_its_folder():
    """After disown, close() closes the store without error and leaves its folder for the new owner."""
    st = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)})
    try:
        assert st.owned
        st.disown()
        assert not st.owned
        st.close()
        assert st.closed and st.path.is_dir()
    finally:
        shutil.rmtree(st.path, ignore_errors=True)


def test_regions_of_coarse_levels_of_a_small_stored_map():
    """A map small enough to store no levels still serves regions of levels above 1 (pooled from the map)."""
    rng = np.random.default_rng(5)
    arr = rng.random((1, 2, 20, 30)).astype(np.float16)  # at most 32 a side: no stored levels
    st = write_stacks({"attentions": arr})
    try:
        stack = st.stacks["attentions"]
        assert stack.levels == ()
        src = stack.map_source(0, 1)
        for k in (2, 3):
            want = pool(arr[0, 1].astype(np.float32), 2**k)
            np.testing.assert_array_equal(src.region(k, 1, 3, 0, 4), want[1:3, 0:4], err_msg=f"level {k}")
    finally:
        st.close()


def test_the_writers_direct_descriptor_is_closed_with_the_store():
    """No descriptor of this process still points into a store once it is written and closed."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    arr = np.random.default_rng(6).random((1, 2, 20, 30)).astype(np.float32)
    with StoreWriter() as writer:
        writer.begin("attentions", arr.shape)
        writer.write("attentions", 0, 0, arr[0])
        st = writer.finish()
    folder = str(st.path)
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr.astype(np.float16))
    st.close()
    assert not os.path.exists(folder)

    def target(fd: str) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    left = [t for t in map(target, os.listdir("/proc/self/fd")) if t.startswith(folder)]
    assert left == []


# --------------------------------------------------------------------------------------------
# what the errors say, word for word
# --------------------------------------------------------------------------------------------
def _small_store():
    return write_stacks({"attentions": np.full((1, 2, 4, 4), 0.25, np.float32)})


def _store_error(path) -> str:
    with pytest.raises(CaptureError) as excinfo:
        open_store(path, owned=False)
    return str(excinfo.value)


def test_a_store_that_does_not_fit_says_how_much_is_needed_and_free_and_what_to_do(tmp_path, monkeypatch):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100 * 10**6))
    with pytest.raises(InputError) as excinfo:
        store_mod.check_space(2_500_000_000, tmp_path)
    assert str(excinfo.value) == (
        f"this capture needs 2.5 GB of disk for its attention maps in {tmp_path} (and 0.3 GB kept free), "
        "but only 0.1 GB is free; free some space, set HEADMAP_CACHE (or XDG_CACHE_HOME) to a folder on a disk "
        "with room, or lower the token limit (--max-tokens)"
    )
    assert (excinfo.value.needed, excinfo.value.free) == (2_500_000_000, 100 * 10**6)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=40_000))
    with pytest.raises(InputError) as excinfo:
        store_mod.check_space(3_000_000, tmp_path, what="the session")
    assert str(excinfo.value) == (
        f"the session needs 3 MB of disk for its attention maps in {tmp_path} (and 0.3 GB kept free), "
        "but only 40 kB is free; free some space, set HEADMAP_CACHE (or XDG_CACHE_HOME) to a folder on a disk "
        "with room, or lower the token limit (--max-tokens)"
    )


def test_reading_a_closed_store_says_it_was_replaced():
    st = _small_store()
    stack = st.stacks["attentions"]
    st.close()
    with pytest.raises(CaptureError) as excinfo:
        stack[0, 0]
    assert str(excinfo.value) == (
        "this capture's attention maps were removed from the disk (a newer capture replaced it); run it again"
    )


def test_a_truncated_attention_file_says_the_store_was_damaged():
    st = _small_store()
    f = st.path / "attentions.npy"
    os.truncate(f, f.stat().st_size - 8)
    with pytest.raises(CaptureError) as excinfo:
        st.stacks["attentions"][0, 1]
    assert str(excinfo.value) == (
        "a stored attention file is shorter than its header says (the store was damaged or removed); "
        "run the capture again"
    )


def test_a_store_without_its_manifest_is_gone_or_incomplete(tmp_path):
    err = _store_error(tmp_path)
    manifest = tmp_path / "manifest.json"
    assert err == (
        f"the stored capture in {tmp_path} is gone or incomplete ([Errno 2] No such file or directory: "
        f"'{manifest}'); run the capture again"
    )


def test_a_store_of_another_version_says_to_run_the_capture_again():
    st = _small_store()
    manifest = st.path / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    manifest.write_text(json.dumps({**data, "version": 99}), encoding="utf-8")
    assert _store_error(st.path) == f"{st.path} is not a store of this Headmap version; run the capture again"
    manifest.write_text(json.dumps({**data, "format": "other"}), encoding="utf-8")
    assert _store_error(st.path) == f"{st.path} is not a store of this Headmap version; run the capture again"


def test_a_store_whose_file_disagrees_with_its_manifest_says_so():
    st = _small_store()
    manifest = st.path / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["stacks"]["attentions"]["shape"] = [1, 2, 4, 5]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert _store_error(st.path) == (
        f"attentions.npy in {st.path} does not match its manifest; run the capture again"
    )


def test_a_fortran_ordered_attention_file_says_the_store_is_damaged():
    st = _small_store()
    np.save(st.path / "attentions.npy", np.asfortranarray(np.zeros((1, 2, 4, 4), np.float16)))
    assert _store_error(st.path) == "attentions.npy is not a C-ordered array; the store is damaged"


def test_rows_that_do_not_fit_the_stack_say_where_and_what_fits():
    with StoreWriter() as writer:
        writer.begin("attentions", (2, 3, 8, 5))
        with pytest.raises(CaptureError) as excinfo:
            writer.write("attentions", 1, 4, np.zeros((3, 6, 5), np.float32))
        writer.abort()
    assert str(excinfo.value) == (
        "attentions layer 1: rows 4–10 of shape (3, 6, 5) do not fit the stack's maps of 3 heads × 8 × 5"
    )


def test_a_model_that_skips_layers_says_how_many_it_computed():
    writer = StoreWriter()
    writer.begin("attentions", (3, 1, 4, 4))
    writer.write("attentions", 0, 0, np.full((1, 4, 4), 0.25, np.float32))
    with pytest.raises(CaptureError) as excinfo:
        writer.finish()
    assert str(excinfo.value) == (
        "the model computed attentions for 1 of its 3 layers only; Headmap cannot show this architecture's maps"
    )
    assert not writer.path.exists()


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (
            errno.ENOSPC,
            "the disk of {root} filled up while the attention maps were written; free some space, set "
            "HEADMAP_CACHE to a disk with room, or lower the token limit (--max-tokens)",
        ),
        (
            errno.EIO,
            "the attention maps could not be written to {path} (Input/output error); check the cache folder "
            "(HEADMAP_CACHE)",
        ),
    ],
)
def test_a_write_that_fails_says_what_to_do(err, message, monkeypatch):
    writer = StoreWriter()
    writer.begin("attentions", (1, 1, 4, 4))

    def fail(*args):
        raise OSError(err, os.strerror(err))

    with monkeypatch.context() as m, pytest.raises((InputError, CaptureError)) as excinfo:
        m.setattr(os, "pwrite", fail)
        writer.write("attentions", 0, 0, np.full((1, 4, 4), 0.25, np.float32))
        writer.finish()
    assert str(excinfo.value) == message.format(root=stores_root(), path=writer.path)
    assert not writer.path.exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ((1,), "index 1 is out of bounds for an axis of size 1"),
        ((0, -3), "index -3 is out of bounds for an axis of size 2"),
        ((0, 0, [1, 4]), "an index is out of bounds for an axis of size 4"),
        ((0, 0, np.array([True, False])), "a boolean index of shape (2,) does not fit an axis of size 4"),
        ((0, 0, 1.5), "a stored attention stack takes ints, slices and 1-D index arrays, not 1.5"),
        ((0, 0, 0, 0, 0), "too many indices for a stored stack of 4 axes: (0, 0, 0, 0, 0)"),
        ((0, None), "too many indices for a stored stack of 4 axes: (0, None)"),
    ],
)
def test_a_bad_index_of_a_stored_stack_says_what_is_wrong(key, message):
    stack = _small_store().stacks["attentions"]
    with pytest.raises(IndexError) as excinfo:
        stack[key]
    assert str(excinfo.value) == message


def test_other_misuses_of_a_stored_stack_say_what_is_allowed():
    stack = _small_store().stacks["attentions"]
    with pytest.raises(TypeError) as excinfo:
        stack.astype(np.float64)
    assert str(excinfo.value) == "a stored attention stack reads as float16 or float32, not float64"
    with pytest.raises(IndexError) as excinfo:
        stack.map_source(0, 2)
    assert str(excinfo.value) == "map (0, 2) is outside this stack of 1 layers × 2 heads"
    source = stack.map_source(0, 1)
    for read in (lambda: source.level(-1), lambda: source.region(-1, 0, 1, 0, 1)):
        with pytest.raises(ValueError) as excinfo:
            read()
        assert str(excinfo.value) == "pyramid levels start at 0, got -1"
