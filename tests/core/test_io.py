"""NIfTI I/O, the AutoPET cohort layout, atomic writes and reading errors."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthaug.core import io as sio
from synthaug.core.case import Case
from synthaug.core.demographics import Demographics, read_demographics_csv
from synthaug.core.io import (
    CT_FILE,
    DEMOGRAPHICS_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    CaseError,
    Cohort,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    read_case,
    read_nifti,
    remove_stale_temporaries,
    write_case,
    write_demographics_csv,
    write_nifti,
)

SHAPE = (7, 6, 5)


def oblique_affine() -> np.ndarray:
    """Rotated about two axes, anisotropic, with X flipped (negative determinant)."""
    a, b = np.deg2rad(20.0), np.deg2rad(-7.5)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([-2.0364, 2.5, 3.0])
    aff[:3, 3] = [210.25, -97.5, -812.125]
    return aff


def make_case(seed: int = 0, affine: np.ndarray | None = None, **meta) -> Case:
    rng = np.random.default_rng(seed)
    return Case(
        ct=rng.uniform(-1024, 1500, SHAPE).astype(np.float32),
        pet=rng.gamma(2.0, 1.5, SHAPE).astype(np.float32),
        organs=rng.integers(0, 12, SHAPE, dtype=np.uint8),
        lesions=(rng.random(SHAPE) < 0.2).astype(np.uint8),
        affine=oblique_affine() if affine is None else affine,
        demographics=Demographics(57.0, "M", 178.0, 82.5, "LYMPHOMA"),
        meta={"source": "phantom", "seed": seed, **meta},
    )


def assert_same_case(a: Case, b: Case) -> None:
    for key in ("ct", "pet", "organs", "lesions"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    np.testing.assert_allclose(a.affine, b.affine, rtol=1e-6, atol=1e-6)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- NIfTI ---------------------------------------------------------------------------


def test_write_read_nifti_keeps_values_dtype_and_affine(tmp_path):
    rng = np.random.default_rng(1)
    aff = oblique_affine()
    for dtype in (np.float32, np.uint8, np.int16):
        arr = (rng.random(SHAPE) * 100).astype(dtype)
        write_nifti(tmp_path / "x.nii.gz", arr, aff)
        back, back_aff = read_nifti(tmp_path / "x.nii.gz")
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, arr)
        np.testing.assert_allclose(back_aff, aff, rtol=1e-6, atol=1e-6)
    # Other tools read the qform (ITK) or the sform (nibabel): both must carry the orientation.
    img = nib.load(str(tmp_path / "x.nii.gz"))
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-4)
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(aff)
    # dtype= converts; a trailing singleton 4th axis is dropped.
    back, _ = read_nifti(tmp_path / "x.nii.gz", dtype=np.float32)
    assert back.dtype == np.float32
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 1), np.float32), aff), str(tmp_path / "y.nii.gz"))
    assert read_nifti(tmp_path / "y.nii.gz")[0].shape == SHAPE


def test_read_nifti_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        read_nifti(tmp_path / "nothere.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(OSError, match="bad.nii.gz"):
        read_nifti(bad)


# --- AutoPET layout round trip --------------------------------------------------------


def test_cohort_round_trip(tmp_path):
    root = tmp_path / "cohort"
    cases = {"case_b": make_case(1), "case_a": make_case(2, affine=np.diag([-4.0, -4.0, 4.0, 1.0]))}
    demos = {
        "case_b": Demographics(57.0, "M", 178.0, 82.5, "LYMPHOMA"),
        "case_a": Demographics(None, "F", 162.25, None, None),
    }
    for cid, case in cases.items():
        assert write_case(root, cid, case) == root / cid
    write_demographics_csv(root / DEMOGRAPHICS_FILE, demos)
    assert sorted(os.listdir(root / "case_b")) == sorted([CT_FILE, PET_FILE, SEG_FILE, ORGANS_FILE, "meta.json"])
    # On disk: float32 images, uint8 label maps (as AutoPET and nnU-Net expect).
    for name, dtype in ((CT_FILE, np.float32), (PET_FILE, np.float32), (SEG_FILE, np.uint8), (ORGANS_FILE, np.uint8)):
        assert nib.load(str(root / "case_b" / name)).get_data_dtype() == dtype, name

    cohort = Cohort(root)
    assert len(cohort) == 2 and list(cohort) == ["case_b", "case_a"]
    assert cohort.has_organs
    assert cohort.demographics == demos
    for cid in cohort:
        back = cohort.load(cid)
        assert_same_case(back, cases[cid])
        assert back.demographics == demos[cid]
        assert back.meta["case_id"] == cid and back.meta["source"] == "phantom"
        assert back.meta["seed"] == cases[cid].meta["seed"]
    # read_case on its own reads the same arrays.
    assert_same_case(read_case(root / "case_a"), cases["case_a"])
    # The shared header format: the CSV is the documented one.
    assert (root / DEMOGRAPHICS_FILE).read_text().splitlines()[0] == "case_id,age,sex,height_cm,weight_kg,diagnosis"
    assert read_demographics_csv(root / DEMOGRAPHICS_FILE) == demos


def test_case_without_pet_lesions_or_organs_round_trips(tmp_path):
    c = make_case(3)
    ct_only = Case(ct=c.ct, pet=None, organs=None, lesions=None, affine=c.affine)
    write_case(tmp_path, "ct_only", ct_only)
    assert sorted(os.listdir(tmp_path / "ct_only")) == [CT_FILE, "meta.json"]
    back = read_case(tmp_path / "ct_only", require_pet=False, require_lesions=False)
    assert back.pet is None and back.lesions is None and back.organs is None
    np.testing.assert_array_equal(back.ct, c.ct)


def test_write_case_refuses_to_overwrite(tmp_path):
    first, second = make_case(4), make_case(5)
    write_case(tmp_path, "c1", first)
    with pytest.raises(FileExistsError, match="c1"):
        write_case(tmp_path, "c1", second)
    assert_same_case(read_case(tmp_path / "c1"), first)
    write_case(tmp_path, "c1", second, overwrite=True)
    assert_same_case(read_case(tmp_path / "c1"), second)
    assert listing(tmp_path) == sorted(
        ["c1", *(f"c1/{n}" for n in (CT_FILE, PET_FILE, SEG_FILE, ORGANS_FILE, "meta.json"))]
    )


@pytest.mark.parametrize("case_id", ["", ".", "..", "a/b", "../escape", ".hidden"])
def test_write_case_rejects_unsafe_case_ids(tmp_path, case_id):
    root = tmp_path / "cohort"
    write_case(root, "keep", make_case(6))
    before = listing(tmp_path)
    with pytest.raises(ValueError, match="case"):
        write_case(root, case_id, make_case(7), overwrite=True)
    assert listing(tmp_path) == before
    assert_same_case(read_case(root / "keep"), make_case(6))


# --- atomic writes ---------------------------------------------------------------------


def _fail_on_call(monkeypatch, n: int, exc: BaseException):
    """Make ``synthaug.core.io.nifti_bytes`` raise ``exc`` on its n-th call."""
    real = sio.nifti_bytes
    calls = []

    def flaky(array, affine):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(array, affine)

    monkeypatch.setattr(sio, "nifti_bytes", flaky)
    return calls


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_write_case_leaves_nothing(tmp_path, monkeypatch, exc):
    root = tmp_path / "cohort"
    write_case(root, "old", make_case(8))
    before = listing(root)
    calls = _fail_on_call(monkeypatch, 2, exc)
    with pytest.raises(type(exc)):
        write_case(root, "new", make_case(9))
    assert len(calls) == 2  # it really failed mid-case, after the first file
    assert not (root / "new").exists()
    assert listing(root) == before  # no partial folder, no temporaries


def test_interrupted_overwrite_keeps_the_previous_case(tmp_path, monkeypatch):
    old = make_case(10)
    write_case(tmp_path, "c", old)
    _fail_on_call(monkeypatch, 3, RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        write_case(tmp_path, "c", make_case(11), overwrite=True)
    assert_same_case(read_case(tmp_path / "c"), old)
    assert listing(tmp_path) == sorted(["c", *(f"c/{n}" for n in os.listdir(tmp_path / "c"))])


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failed_final_rename_of_an_overwrite_keeps_the_previous_case(tmp_path, monkeypatch, exc):
    old = make_case(12)
    write_case(tmp_path, "c", old)
    final = tmp_path / "c"
    real_replace = os.replace
    failed = []

    def replace(src, dst):
        if Path(dst) == final and not failed:
            failed.append(src)
            raise exc
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(type(exc)):
        write_case(tmp_path, "c", make_case(13), overwrite=True)
    monkeypatch.undo()
    assert failed, "the test did not reach the final rename"
    assert_same_case(read_case(final), old)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_atomic_path_error_leaves_target_untouched(tmp_path):
    target = tmp_path / "f.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["f.json"]
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["f.json"]


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_disk_full_names_target_and_keeps_previous_content(tmp_path, monkeypatch, where):
    target = tmp_path / "sub" / "img.nii.gz"
    write_nifti(target, np.ones(SHAPE, np.float32), np.eye(4))
    previous = target.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, where, full)
    with pytest.raises(OSError) as info:
        write_nifti(target, np.zeros(SHAPE, np.float32), np.eye(4))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert "no space left" in str(info.value).lower() and str(target) in str(info.value)
    assert target.read_bytes() == previous
    assert os.listdir(target.parent) == ["img.nii.gz"]


def test_disk_full_during_write_case_names_the_case(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_case(tmp_path, "case_x", make_case(14))
    monkeypatch.undo()
    assert "no space left" in str(info.value).lower() and "case_x" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_atomic_write_json_and_bytes(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": np.int64(3), "b": np.arange(2), "p": tmp_path})
    assert '"a": 3' in (tmp_path / "m.json").read_text()
    atomic_write_bytes(tmp_path / "m.json", b"x")
    assert (tmp_path / "m.json").read_bytes() == b"x"
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "m.json", {"x": object()})
    assert (tmp_path / "m.json").read_bytes() == b"x"
    assert os.listdir(tmp_path) == ["m.json"]


def test_remove_stale_temporaries(tmp_path):
    write_case(tmp_path, "keep", make_case(15))
    (tmp_path / DEMOGRAPHICS_FILE).write_text("case_id\nkeep\n")
    stale_file = tmp_path / ".demographics.csv.ab12cd.tmp"
    stale_file.write_text("partial")
    stale_dir = tmp_path / ".case_9.xy34.tmp"
    stale_dir.mkdir()
    (stale_dir / CT_FILE).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert not stale_file.exists() and not stale_dir.exists()
    assert sorted(os.listdir(tmp_path)) == [DEMOGRAPHICS_FILE, "keep"]
    assert Cohort(tmp_path).case_ids == ["keep"]
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_cohort_ignores_stale_temporary_case_folders(tmp_path):
    write_case(tmp_path, "keep", make_case(16))
    (tmp_path / ".keep2.abcd.tmp").mkdir()
    (tmp_path / ".keep2.abcd.tmp" / CT_FILE).write_bytes(b"partial")
    cohort = Cohort(tmp_path, require_demographics=False)
    assert cohort.case_ids == ["keep"] and cohort.demographics == {}


# --- reading errors ----------------------------------------------------------------------


@pytest.fixture
def case_dir(tmp_path) -> Path:
    return write_case(tmp_path, "case_007", make_case(17))


@pytest.mark.parametrize("name", [PET_FILE, CT_FILE, SEG_FILE])
def test_missing_file_names_case_and_file(case_dir, name):
    (case_dir / name).unlink()
    with pytest.raises(CaseError) as info:
        read_case(case_dir)
    assert "case_007" in str(info.value) and name in str(info.value)


def test_optional_files(case_dir):
    (case_dir / ORGANS_FILE).unlink()
    (case_dir / SEG_FILE).unlink()
    (case_dir / PET_FILE).unlink()
    case = read_case(case_dir, require_pet=False, require_lesions=False)
    assert case.organs is None and case.lesions is None and case.pet is None
    assert case.ct.shape == SHAPE


def test_missing_case_folder(tmp_path):
    with pytest.raises(CaseError, match="case_404"):
        read_case(tmp_path / "case_404")


@pytest.mark.parametrize("name", [CT_FILE, PET_FILE, SEG_FILE, ORGANS_FILE])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "gzip_of_garbage"])
def test_unreadable_file_names_the_file(case_dir, name, damage):
    path = case_dir / name
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(400), "empty": b"",
         "gzip_of_garbage": gzip.compress(b"\x00" * 50)}[damage]
    )
    with pytest.raises(CaseError) as info:
        read_case(case_dir)
    assert name in str(info.value) and "case_007" in str(info.value)


def test_unreadable_meta_json(case_dir):
    (case_dir / "meta.json").write_text("{not json")
    with pytest.raises(CaseError, match="meta.json"):
        read_case(case_dir)


@pytest.mark.parametrize("name", [PET_FILE, SEG_FILE, ORGANS_FILE])
def test_grids_that_disagree(case_dir, name):
    arr, aff = read_nifti(case_dir / name)
    write_nifti(case_dir / name, arr[:-1], aff)  # other shape
    with pytest.raises(CaseError, match=name):
        read_case(case_dir)
    shifted = aff.copy()
    shifted[0, 3] += 1.0  # same shape, 1 mm off
    write_nifti(case_dir / name, arr, shifted)
    with pytest.raises(CaseError, match=name):
        read_case(case_dir)
    flipped = aff @ np.diag([1.0, 1.0, -1.0, 1.0])  # same shape, Z reversed
    write_nifti(case_dir / name, arr, flipped)
    with pytest.raises(CaseError, match=name):
        read_case(case_dir)
    tiny = aff.copy()
    tiny[2, 3] += 1e-5  # far below the tolerance: the same grid
    write_nifti(case_dir / name, arr, tiny)
    read_case(case_dir)


@pytest.mark.parametrize("name", [SEG_FILE, ORGANS_FILE])
@pytest.mark.parametrize("bad", ["fraction", "nan", "negative", "too_large"])
def test_bad_label_values(case_dir, name, bad):
    arr, aff = read_nifti(case_dir / name)
    if bad in ("fraction", "nan"):
        arr = arr.astype(np.float32)
        arr[0, 0, 0] = 0.5 if bad == "fraction" else np.nan
    else:
        arr = arr.astype(np.int16)
        arr[0, 0, 0] = -1 if bad == "negative" else 300
    write_nifti(case_dir / name, arr, aff)
    with pytest.raises(CaseError, match="case_007"):
        read_case(case_dir)


def test_float_labels_with_integer_values_are_accepted(case_dir):
    organs, aff = read_nifti(case_dir / ORGANS_FILE)
    write_nifti(case_dir / ORGANS_FILE, organs.astype(np.float32), aff)
    write_nifti(case_dir / SEG_FILE, read_nifti(case_dir / SEG_FILE)[0].astype(np.float32), aff)
    case = read_case(case_dir)
    assert case.organs.dtype == np.uint8 and case.lesions.dtype == np.uint8
    np.testing.assert_array_equal(case.organs, organs)


def test_cohort_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        Cohort(tmp_path / "absent")
    write_case(tmp_path, "a", make_case(18))
    with pytest.raises(FileNotFoundError, match=DEMOGRAPHICS_FILE):
        Cohort(tmp_path)
    write_demographics_csv(tmp_path / DEMOGRAPHICS_FILE, {"a": Demographics(50.0, "F", None, None), "b": Demographics(None, None, None, None)})
    with pytest.raises(CaseError, match="b"):
        Cohort(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaseError, match="no cases"):
        Cohort(empty, require_demographics=False)


# --- the real reference CT -----------------------------------------------------------------


def test_reference_ct_keeps_affine_and_hu(reference_dir):
    path = reference_dir / "example_ct.nii.gz"
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.int32
    raw = np.asanyarray(img.dataobj)
    data, aff = read_nifti(path, dtype=np.float32)
    assert data.dtype == np.float32 and data.shape == img.shape
    np.testing.assert_allclose(aff, img.affine, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(data, raw.astype(np.float32))
    assert -1300 < data.min() <= -1000  # air
    assert -150 < np.median(data[data > -500]) < 100  # body: fat and soft tissue


def test_reference_case_without_pet(reference_dir, tmp_path):
    case_dir = tmp_path / "ref_case"
    case_dir.mkdir()
    (case_dir / CT_FILE).symlink_to(reference_dir / "example_ct.nii.gz")
    with pytest.raises(CaseError) as info:
        read_case(case_dir)
    assert PET_FILE in str(info.value) and "ref_case" in str(info.value)
    case = read_case(case_dir, require_pet=False, require_lesions=False)
    assert case.pet is None and case.lesions is None and case.organs is None
    assert case.ct.dtype == np.float32 and case.ct.shape == nib.load(str(reference_dir / "example_ct.nii.gz")).shape
    np.testing.assert_allclose(case.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    assert case.meta["source"] == "real" and case.meta["case_id"] == "ref_case"


def test_nifti_bytes_do_not_depend_on_the_clock(monkeypatch):
    """The gzip header used to carry the write time, so preparing the same study twice in
    different seconds gave different files (and checksums)."""
    import time

    array, affine = np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 2.0, 3.0, 1.0])
    first = sio.nifti_bytes(array, affine)
    monkeypatch.setattr(time, "time", lambda: 2.0e9)
    assert sio.nifti_bytes(array, affine) == first
