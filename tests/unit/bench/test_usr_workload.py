"""The usr workload's pure parts: the file selection and the change plan are the same for the same input."""

from bench.usr_workload import (CHANGE_MIX, Op, apply_delta, apply_plan, change_plan, diff_blocks, plan_bytes, scan,
                                select)


def _tree(root):
    for rel, size in (("b/two", 5000), ("a/one", 3000), ("a/z/deep", 9000), ("c", 100), ("a/aa", 7000)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
    (root / "link").symlink_to(root / "c")  # not a regular file: never taken


def test_scan_is_sorted_and_regular_files_only(tmp_path):
    _tree(tmp_path)
    listing = list(scan(tmp_path))
    assert listing == [("a/aa", 7000), ("a/one", 3000), ("a/z/deep", 9000), ("b/two", 5000), ("c", 100)]
    assert listing == list(scan(tmp_path))


def test_select_takes_files_in_order_until_the_budget_and_skips_unreadable():
    listing = [("a", 400), ("b", 300), ("c", 500), ("d", 100)]
    assert select(listing, 600) == [("a", 400), ("b", 300)]
    assert select(listing, 10_000) == listing
    assert select(listing, 600, readable=lambda p: p != "b") == [("a", 400), ("c", 500)]
    assert select(listing, 0) == []


def _files(n=400):
    return [(f"lib/f{i:04d}", 4096 + (i * 7919) % 200_000) for i in range(n)]


def test_change_plan_is_a_function_of_the_seed():
    files = _files()
    a, b, c = change_plan(files, seed=3), change_plan(files, seed=3), change_plan(files, seed=4)
    assert a == b and a != c
    assert {op.kind for op in a} == {kind for kind, _ in CHANGE_MIX}


def test_change_plan_touches_about_the_asked_share_and_each_file_once():
    files = _files()
    total = sum(size for _, size in files)
    ops = change_plan(files, seed=1, percent=2.0)
    assert 0.015 * total <= plan_bytes(ops) <= 0.025 * total
    touched = [op.path for op in ops if op.kind != "new"]
    assert len(touched) == len(set(touched))
    sizes = dict(files)
    for op in ops:
        if op.kind == "rewrite":
            assert 0 <= op.offset and op.offset + op.length <= sizes[op.path]
        elif op.kind == "append":
            assert op.offset == sizes[op.path]
        elif op.kind == "delete":
            assert op.length == sizes[op.path]


def test_apply_plan_and_delta_give_the_same_bytes(tmp_path):
    root = tmp_path / "fs"
    files = []
    for i in range(40):
        path = root / f"d/f{i:02d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (8192 + i * 512))
        files.append((f"d/f{i:02d}", 8192 + i * 512))
    ops = change_plan(files, seed=2, percent=10.0)
    apply_plan(root, ops, seed=2)
    for op in ops:
        target = root / op.path
        if op.kind == "delete":
            assert not target.exists()
        elif op.kind == "new":
            assert target.stat().st_size == op.length
        elif op.kind == "append":
            assert target.stat().st_size == op.offset + op.length
    assert Op("delete", "x").as_list() == ["delete", "x", 0, 0]

    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(bytes(64 * 1024))
    changed = bytearray(64 * 1024)
    changed[5000:5003] = b"abc"
    changed[40960] = 7
    b.write_bytes(bytes(changed))
    offsets = diff_blocks(a, b, chunk=16 * 1024)
    assert offsets == [4096, 40960]
    apply_delta(a, b, offsets)
    assert a.read_bytes() == b.read_bytes()
