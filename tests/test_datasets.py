"""Datasets: class folders, VOC devkits (real VOC07 label files), split lists, random splits."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from fvstudio.data.datasets import (Dataset, find_voc_root, load_folder_dataset, load_voc_dataset,
                                    open_dataset, random_splits, split_from_lists, voc_split,
                                    write_split_list)


def _img(path: Path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imencode(".png", np.full((8, 8), value, np.uint8))[1].tofile(str(path))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    for c, n in (("zebra", 3), ("apple", 4), ("mango", 5)):
        for i in range(n):
            _img(root / c / f"img{i}.png")
    _img(root / "apple" / "nested" / "deep.png")
    _img(root / "apple" / ".hidden.png")           # hidden file
    _img(root / ".git" / "x.png")                   # hidden folder (not a class)
    _img(root / "mango" / ".cache" / "y.png")       # hidden folder inside a class
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / "zebra" / "Thumbs.db").write_bytes(b"\x00" * 10)
    _img(root / "stray.png")                        # image outside any class: ignored
    return root


def _read_lines(p):
    with open(p) as fh:
        return [ln.split() for ln in fh if ln.strip()]


def test_folder_dataset_layout(folder):
    ds = open_dataset(folder)
    assert isinstance(ds, Dataset) and ds.kind == "folder" and not ds.multilabel
    assert ds.class_names == ["apple", "mango", "zebra"]
    assert len(ds) == 13 and ds.class_counts().tolist() == [5, 5, 3]
    assert ds.ids[:5] == ["apple/img0.png", "apple/img1.png", "apple/img2.png", "apple/img3.png",
                          "apple/nested/deep.png"]
    assert all(not any(part.startswith(".") for part in i.split("/")) for i in ds.ids)
    assert all(p.is_file() and p.relative_to(folder).as_posix() == i for p, i in zip(ds.paths, ds.ids))
    assert ds.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 3
    assert ds.targets.shape == (13, 3) and ds.targets.dtype == np.int8
    assert (ds.targets[np.arange(13), ds.labels] == 1).all() and (ds.targets.sum(axis=1) == 1 - 2).all()
    assert ds.index_of("zebra/img2.png") == 12
    # ids are stable: reopening gives the same order and fingerprint
    again = load_folder_dataset(folder)
    assert again.ids == ds.ids and again.fingerprint() == ds.fingerprint()


def test_empty_class_is_an_error_naming_it(folder):
    (folder / "empty_class").mkdir()
    (folder / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="'empty_class'"):
        open_dataset(folder)


def test_bad_dataset_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        open_dataset(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        open_dataset(tmp_path / "empty")


def test_split_lists(folder, tmp_path):
    ds = open_dataset(folder)
    train = tmp_path / "train.txt"
    train.write_text("# training images\napple/img0.png\r\n\n./mango/img1.png\nzebra\\img0.png\n")
    sp = split_from_lists(ds, train)
    assert [ds.ids[i] for i in sp.train] == ["apple/img0.png", "mango/img1.png", "zebra/img0.png"]
    assert sp.test.size == len(ds) - 3 and np.intersect1d(sp.train, sp.test).size == 0
    test = write_split_list(ds, [1, 2], tmp_path / "test.txt")
    sp2 = split_from_lists(ds, train, test)
    assert sp2.test.tolist() == [1, 2]

    bad = tmp_path / "bad.txt"
    bad.write_text("apple/img0.png\napple/img99.png\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: 'apple/img99.png' is not an image"):
        split_from_lists(ds, bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("apple/img0.png\napple/img0.png\n")
    with pytest.raises(ValueError, match=r"dup\.txt:2: .*listed twice"):
        split_from_lists(ds, dup)
    overlap = tmp_path / "overlap.txt"
    overlap.write_text("apple/img0.png\n")
    with pytest.raises(ValueError, match="also in the training list"):
        split_from_lists(ds, train, overlap)
    with pytest.raises(ValueError, match="does not exist"):
        split_from_lists(ds, tmp_path / "nope.txt")


def test_random_splits_protocol(folder):
    ds = open_dataset(folder)
    splits = random_splits(ds, n_train=2, n_test=1, repeats=4, seed=7)
    assert len(splits) == 4
    for sp in splits:
        assert np.bincount(ds.labels[sp.train], minlength=3).tolist() == [2, 2, 2]
        assert np.bincount(ds.labels[sp.test], minlength=3).tolist() == [1, 1, 1]
        assert np.intersect1d(sp.train, sp.test).size == 0
        assert (np.diff(sp.train) > 0).all()
    assert len({tuple(s.train) for s in splits}) > 1  # repeats differ
    # deterministic, and repeat r does not depend on the number of repeats
    again = random_splits(ds, 2, 1, repeats=2, seed=7)
    assert all(np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
               for a, b in zip(splits, again))
    rest = random_splits(ds, 2, seed=0)[0]
    assert rest.test.size == len(ds) - 6
    with pytest.raises(ValueError, match=r"'zebra' \(3\)"):
        random_splits(ds, n_train=3, n_test=1)
    with pytest.raises(ValueError, match="n_train"):
        random_splits(ds, n_train=0)


def test_real_voc2007_label_files(voc2007_imagesets):
    main = voc2007_imagesets / "VOC2007" / "ImageSets" / "Main"
    # Expected numbers come from the files themselves, not from memory.
    expect_classes = sorted(ln[0] for ln in _read_lines(main / "class.txt"))
    split_ids = {s: [ln[0] for ln in _read_lines(main / f"{s}.txt")] for s in ("train", "val", "trainval", "test")}
    assert len(expect_classes) == 20
    assert len(split_ids["trainval"]) == 5011 and len(split_ids["test"]) == 4952

    for given in (voc2007_imagesets, voc2007_imagesets / "VOC2007"):
        ds = open_dataset(given, require_images=False)
        assert ds.kind == "voc" and ds.multilabel and ds.root == voc2007_imagesets / "VOC2007"
    assert ds.class_names == expect_classes
    assert len(ds) == len(set(split_ids["trainval"]) | set(split_ids["test"])) == 9963
    for s, lst in split_ids.items():
        assert [ds.ids[i] for i in ds.voc_sets[s]] == sorted(lst)
    assert "trainvalP" in ds.voc_sets and "class" not in ds.voc_sets
    sp = voc_split(ds)
    assert sp.train.size == 5011 and sp.test.size == 4952

    # every flag equals the one in the class file, difficult (0) kept
    for cls in ("aeroplane", "person", "train"):
        c = ds.class_names.index(cls)
        for s in ("trainval", "test"):
            rows = _read_lines(main / f"{cls}_{s}.txt")
            idx = [ds.index_of(r[0]) for r in rows]
            assert ds.targets[idx, c].tolist() == [int(r[1]) for r in rows]
    a = ds.class_names.index("aeroplane")
    tv = ds.voc_sets["trainval"]
    counts = {f: int((ds.targets[tv, a] == f).sum()) for f in (1, -1, 0)}
    raw = [int(r[1]) for r in _read_lines(main / "aeroplane_trainval.txt")]
    assert counts == {f: raw.count(f) for f in (1, -1, 0)} and counts[0] > 0
    assert ds.targets.dtype == np.int8 and set(np.unique(ds.targets)) == {-1, 0, 1}
    single = (ds.targets == 1).sum(axis=1) == 1
    assert (ds.labels[~single] == -1).all() and (ds.targets[single, ds.labels[single]] == 1).all()
    with pytest.raises(ValueError, match="no JPEGImages"):
        load_voc_dataset(voc2007_imagesets)
    with pytest.raises(ValueError, match="'nosuch' is not in the dataset"):
        voc_split(ds, train="nosuch")


def test_voc_root_forms_and_errors(tmp_path):
    year = tmp_path / "holder" / "VOCdevkit" / "VOC2007"
    main = year / "ImageSets" / "Main"
    main.mkdir(parents=True)
    ids = ["000001", "000002", "000003"]
    for i in ids:
        _img(year / "JPEGImages" / f"{i}.jpg")
    (main / "trainval.txt").write_text("000001\n000002\n")
    (main / "test.txt").write_text("000003\n")
    (main / "cat_trainval.txt").write_text("000001  1\n000002  0\n")
    (main / "cat_test.txt").write_text("000003 -1\n")
    (main / "dog_trainval.txt").write_text("000001 -1\n000002 1\n")
    (main / "dog_test.txt").write_text("000003  1\n")
    for given in (tmp_path / "holder", tmp_path / "holder" / "VOCdevkit", year):
        assert find_voc_root(given) == year
        ds = open_dataset(given)
        assert ds.kind == "voc" and ds.ids == ids
    assert ds.targets.tolist() == [[1, -1], [0, 1], [-1, 1]]
    assert ds.labels.tolist() == [0, 1, 1]
    assert all(p.is_file() for p in ds.paths)

    (year / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(ValueError, match="1 of 3 listed images are missing.*000003.jpg"):
        open_dataset(year)
    _img(year / "JPEGImages" / "000003.jpg")
    (main / "cat_test.txt").write_text("000003 maybe\n")
    with pytest.raises(ValueError, match=r"cat_test\.txt:1"):
        open_dataset(year)
    (main / "cat_test.txt").write_text("000003 -1\n")
    (main / "cat_trainval.txt").write_text("000001 -1\n000002 0\n")
    with pytest.raises(ValueError, match="'cat' have no positive image"):
        open_dataset(year)


def test_shipped_sample_data(sample_data_dir):
    tex = open_dataset(sample_data_dir / "textures")
    assert tex.kind == "folder" and tex.n_classes >= 6 and len(tex) >= 6 * 30
    assert tex.class_counts().min() >= 30
    voc = open_dataset(sample_data_dir / "voc_mini")
    assert voc.kind == "voc" and 3 <= voc.n_classes <= 5 and 40 <= len(voc) <= 60
    sp = voc_split(voc)
    assert sp.train.size and sp.test.size
    assert ((voc.targets == 1).sum(axis=1) >= 2).any()  # some multi-label images
    assert (voc.targets == 0).any()                     # some difficult flags
    for idx in (sp.train, sp.test):
        assert ((voc.targets[idx] == 1).sum(axis=0) > 0).all()  # every class has positives on both sides
    with pytest.raises(ValueError, match="folder of datasets"):
        open_dataset(sample_data_dir)
    size = sum(p.stat().st_size for p in sample_data_dir.rglob("*") if p.is_file())
    assert size <= 10_000_000


def test_synthetic_generator_is_deterministic(tmp_path):
    from fvstudio.data.synthetic import generate_textures, generate_voc_mini

    a = generate_textures(tmp_path / "a", seed=5, per_class=2, classes=("moss", "stripes"))
    b = generate_textures(tmp_path / "b", seed=5, per_class=2, classes=("moss", "stripes"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    ds = open_dataset(tmp_path / "a")
    assert ds.class_names == ["moss", "stripes"] and len(ds) == 4
    voc = open_dataset(generate_voc_mini(tmp_path / "voc", seed=5, n_images=12).parent)
    assert len(voc) == 12 and voc.voc_sets["trainval"].size == 6


# ---------------------------------------------------------------- hostile list files (issue #13)
def _copy_voc_lists(src_main: Path, year: Path, classes=("aeroplane", "bird", "cat")):
    """A small devkit from the real VOC 2007 label files: 3 classes, the ids of the first 60 lines."""
    main = year / "ImageSets" / "Main"
    main.mkdir(parents=True)
    keep = {}
    for s in ("trainval", "test"):
        lines = (src_main / f"{s}.txt").read_text().split()[:60]
        keep[s] = lines
        (main / f"{s}.txt").write_text("\n".join(lines) + "\n")
        for c in classes:
            flags = dict(ln.split() for ln in (src_main / f"{c}_{s}.txt").read_text().splitlines() if ln.strip())
            rows = [f"{i} {flags[i]}" for i in lines]
            if not any(flags[i] == "1" for i in lines):  # make sure each class has a positive
                rows[0] = f"{lines[0]}  1"
            (main / f"{c}_{s}.txt").write_text("\n".join(rows) + "\n")
    return main, keep


@pytest.mark.parametrize("bad_id", ["../../../secret/private_photo", "/tmp/secret/private_photo",
                                    "..\\..\\secret\\private_photo", ".hidden", "C:secret"])
def test_voc_ids_cannot_leave_the_devkit(voc2007_imagesets, tmp_path, bad_id):
    secret = tmp_path / "secret"
    _img(secret / "private_photo.jpg")
    year = tmp_path / "devkit" / "VOC2007"
    main, keep = _copy_voc_lists(voc2007_imagesets / "VOC2007" / "ImageSets" / "Main", year)
    assert load_voc_dataset(year, require_images=False).ids  # the clean copy loads
    with open(main / "trainval.txt", "a") as fh:
        fh.write(f"{bad_id}\n")
    with open(main / "aeroplane_trainval.txt", "a") as fh:
        fh.write(f"{bad_id} 1\n")
    with pytest.raises(ValueError) as ei:
        load_voc_dataset(year, require_images=False)
    msg = str(ei.value)
    assert "trainval.txt:61" in msg and repr(bad_id) in msg and "outside JPEGImages" in msg


def test_list_files_are_named_in_errors(folder, tmp_path):
    ds = open_dataset(folder)
    d = tmp_path / "a_folder.txt"
    d.mkdir()
    with pytest.raises(ValueError, match=r"split list .*a_folder\.txt is a directory"):
        split_from_lists(ds, d)
    good = tmp_path / "train.txt"
    good.write_text("apple/img0.png\nmango/img0.png\nzebra/img0.png\n")
    with pytest.raises(ValueError, match=r"split list .*a_folder\.txt is a directory"):
        split_from_lists(ds, good, d)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("apple/img0.png\nmango/img0.png\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt:3: split list is not valid UTF-8"):
        split_from_lists(ds, latin)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + good.read_bytes())
    assert split_from_lists(ds, bom).train.tolist() == split_from_lists(ds, good).train.tolist()
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes(good.read_text().encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16\.txt is UTF-16"):
        split_from_lists(ds, utf16)
    # VOC list files too
    year = tmp_path / "voc" / "VOC2007"
    main = year / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("000001\n000002\n")
    (main / "cat_trainval.txt").write_bytes(b"000001 1\n000002 \xff1\n")
    with pytest.raises(ValueError, match=r"cat_trainval\.txt:2: VOC list file is not valid UTF-8"):
        load_voc_dataset(year, require_images=False)


def test_single_class_training_sets_are_refused(folder, tmp_path):
    ds = open_dataset(folder)
    one = tmp_path / "one.txt"
    one.write_text("apple/img0.png\napple/img1.png\n")
    with pytest.raises(ValueError, match=r"one\.txt.*only one class \('apple'\).*at least two"):
        split_from_lists(ds, one)
    two = tmp_path / "two.txt"
    two.write_text("apple/img0.png\nmango/img0.png\n")
    test = tmp_path / "test.txt"
    test.write_text("apple/img1.png\nzebra/img1.png\n")
    with pytest.raises(ValueError, match=r"test class\(es\) 'zebra' have no training image"):
        split_from_lists(ds, two, test)
    fine = tmp_path / "t2.txt"
    fine.write_text("apple/img1.png\nmango/img2.png\n")
    assert split_from_lists(ds, two, fine).train.size == 2
    root = tmp_path / "single"
    for i in range(6):
        _img(root / "only" / f"{i}.png")
    single = open_dataset(root)
    with pytest.raises(ValueError, match="single class .'only'.*at least two"):
        random_splits(single, n_train=2)
    lst = tmp_path / "s.txt"
    lst.write_text("only/0.png\nonly/1.png\n")
    with pytest.raises(ValueError, match="single class"):
        split_from_lists(single, lst)


def test_voc_split_without_positives_in_training_is_refused(tmp_path):
    year = tmp_path / "VOC2007"
    main = year / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("000001\n000002\n")
    (main / "test.txt").write_text("000003\n")
    (main / "cat_trainval.txt").write_text("000001 1\n000002 -1\n")
    (main / "cat_test.txt").write_text("000003 -1\n")
    (main / "dog_trainval.txt").write_text("000001 -1\n000002 0\n")   # no positive dog in trainval
    (main / "dog_test.txt").write_text("000003 1\n")
    ds = load_voc_dataset(year, require_images=False)
    with pytest.raises(ValueError, match="'dog' have no positive training image"):
        voc_split(ds)
