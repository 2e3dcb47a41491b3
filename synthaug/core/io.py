"""NIfTI I/O, the AutoPET cohort layout and atomic writes.

A cohort on disk::

    <root>/demographics.csv                  case_id, age, sex, height_cm, weight_kg, diagnosis
    <root>/<case_id>/CTres.nii.gz            CT in HU
    <root>/<case_id>/SUV.nii.gz              PET in SUV
    <root>/<case_id>/SEG.nii.gz              lesion mask (0/1)
    <root>/<case_id>/ORGANS.nii.gz           synthaug organ map (optional)

Every write goes to a temporary name in the same folder and is renamed into place,
so an interrupted run never leaves a partial file (or case folder) under its final name.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io as _io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from .case import Case
from .demographics import DEMOGRAPHICS_COLUMNS, Demographics, demographics_rows, read_demographics_csv

CT_FILE = "CTres.nii.gz"
PET_FILE = "SUV.nii.gz"
SEG_FILE = "SEG.nii.gz"
ORGANS_FILE = "ORGANS.nii.gz"
DEMOGRAPHICS_FILE = "demographics.csv"
#: Optional per-case provenance written beside the images.
META_FILE = "meta.json"

#: Largest voxel-to-world difference (mm) for two images to count as the same grid.
GRID_TOLERANCE_MM = 1e-3


class CaseError(ValueError):
    """A case on disk is missing a file, has an unreadable file or inconsistent grids."""


# --- atomic writes ---------------------------------------------------------------------


def _raise_clear_oserror(err: OSError, target: Path) -> None:
    if err.errno == errno.ENOSPC:
        raise OSError(errno.ENOSPC, f"no space left on device while writing {target}") from None
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise OSError(err.errno, f"permission denied writing {target}") from None
    raise err


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        _raise_clear_oserror(err, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_dir(parent: str | Path, name: str) -> Path:
    """A new hidden ``.<name>.*.tmp`` folder in ``parent`` with the usual permissions,
    to be filled and then renamed into place (see :func:`remove_stale_temporaries`)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Rename the finished folder ``tmp`` onto ``final``; an existing ``final`` is moved
    aside first and only deleted once the new folder is in place (restored on failure)."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if os.path.lexists(final):
        old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old.tmp")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: object) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --- NIfTI -----------------------------------------------------------------------------


def read_nifti(path: str | Path, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI image: ``(array (X, Y, Z), affine 4x4)``; scaling applied."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise OSError(f"cannot read NIfTI {path}: {type(err).__name__}: {err}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data, affine


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """Serialise an array + affine to gzipped NIfTI-1 bytes."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if np.issubdtype(array.dtype, np.integer):
        img.header.set_slope_inter(1.0, 0.0)
    raw = _io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": raw, "header": raw})
    img.to_file_map(file_map)
    # level 1: quicker to write than the default level, for somewhat larger files;
    # mtime 0: the same image always gives the same bytes (checksums, re-runs)
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` with ``affine`` to ``path`` (``.nii.gz``) atomically."""
    atomic_write_bytes(path, nifti_bytes(array, affine))


# --- cases in the AutoPET layout --------------------------------------------------------


def same_grid(shape_a, affine_a, shape_b, affine_b, tol: float = GRID_TOLERANCE_MM) -> bool:
    """True if two images share shape and (within ``tol`` mm) affine."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=tol, rtol=0)


def read_case(
    case_dir: str | Path,
    *,
    require_pet: bool = True,
    require_lesions: bool = True,
    demographics: Demographics | None = None,
) -> Case:
    """Read one case folder of a cohort.

    ``ORGANS.nii.gz`` is optional (real AutoPET has none). With ``require_pet=False``
    a CT-only case is returned with ``pet=None``. A missing or unreadable file, or
    images whose grids disagree, raise :class:`CaseError` naming the case and the file.
    """
    case_dir = Path(case_dir)
    case_id = case_dir.name
    if not case_dir.is_dir():
        raise CaseError(f"case {case_id}: folder not found: {case_dir}")

    def load(name: str, required: bool, dtype) -> tuple[np.ndarray, np.ndarray] | None:
        path = case_dir / name
        if not path.exists():
            if required:
                raise CaseError(f"case {case_id}: missing {name} (expected {path})")
            return None
        try:
            return read_nifti(path, dtype)
        except OSError as err:
            raise CaseError(f"case {case_id}: unreadable {name}: {err}") from None

    ct, affine = load(CT_FILE, True, np.float32)
    images = {"pet": load(PET_FILE, require_pet, np.float32), "lesions": load(SEG_FILE, require_lesions, None),
              "organs": load(ORGANS_FILE, False, None)}
    arrays = {}
    for key, loaded in images.items():
        if loaded is None:
            arrays[key] = None
            continue
        arr, aff = loaded
        if not same_grid(ct.shape, affine, arr.shape, aff):
            fname = {"pet": PET_FILE, "lesions": SEG_FILE, "organs": ORGANS_FILE}[key]
            raise CaseError(
                f"case {case_id}: {fname} grid {arr.shape} does not match {CT_FILE} grid {ct.shape} "
                f"(or their affines differ by more than {GRID_TOLERANCE_MM} mm)"
            )
        if key in ("lesions", "organs"):
            if np.issubdtype(arr.dtype, np.floating):
                if not np.all(np.equal(np.mod(arr, 1), 0)):
                    raise CaseError(f"case {case_id}: {key} labels are not integer-valued")
            if arr.min() < 0 or arr.max() > 255:
                raise CaseError(f"case {case_id}: {key} labels outside 0-255")
            arr = arr.astype(np.uint8)
            if key == "lesions":
                arr = (arr > 0).astype(np.uint8)
        arrays[key] = arr
    meta = {"case_id": case_id, "source": "real"}
    meta_path = case_dir / META_FILE
    if meta_path.is_file():
        try:
            meta.update(json.loads(meta_path.read_text()))
        except json.JSONDecodeError as err:
            raise CaseError(f"case {case_id}: unreadable {META_FILE}: {err}") from None
    return Case(ct=ct, pet=arrays["pet"], organs=arrays["organs"], lesions=arrays["lesions"], affine=affine,
                demographics=demographics, meta=meta)


def write_case(root: str | Path, case_id: str, case: Case, *, overwrite: bool = False) -> Path:
    """Write ``case`` as ``<root>/<case_id>/`` atomically (the folder appears whole or not at all)."""
    root = Path(root)
    if not case_id or case_id.startswith(".") or any(sep and sep in case_id for sep in ("/", os.sep, os.altsep)):
        # "" or "." would make the case folder the cohort root itself (and overwrite=True would delete it).
        raise ValueError(f"case_id {case_id!r} must be a plain folder name (not empty, no '/', not starting with '.')")
    final = root / case_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"case folder already exists: {final}")
    root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(root, case_id)
    try:
        write_nifti(tmp / CT_FILE, case.ct.astype(np.float32), case.affine)
        if case.pet is not None:
            write_nifti(tmp / PET_FILE, case.pet.astype(np.float32), case.affine)
        if case.lesions is not None:
            write_nifti(tmp / SEG_FILE, case.lesions.astype(np.uint8), case.affine)
        if case.organs is not None:
            write_nifti(tmp / ORGANS_FILE, case.organs.astype(np.uint8), case.affine)
        meta = dict(case.meta)
        meta["case_id"] = case_id
        if case.demographics is not None:
            meta["demographics"] = case.demographics.to_dict()
        atomic_write_json(tmp / META_FILE, meta)
        replace_dir(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_clear_oserror(err, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_demographics_csv(path: str | Path, demos: Mapping[str, Demographics]) -> None:
    """Write ``demographics.csv`` atomically."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(DEMOGRAPHICS_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(demographics_rows(demos))
    atomic_write_text(path, buf.getvalue())


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Delete temporary files/folders left by interrupted writes in ``root``; return them."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class Cohort:
    """A cohort folder in the AutoPET layout.

    Args:
        root: the cohort folder.
        require_demographics: raise if ``demographics.csv`` is missing.
    """

    def __init__(self, root: str | Path, *, require_demographics: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"cohort folder not found: {self.root}")
        demo_path = self.root / DEMOGRAPHICS_FILE
        if demo_path.is_file():
            self.demographics: dict[str, Demographics] = read_demographics_csv(demo_path)
        elif require_demographics:
            raise FileNotFoundError(f"{self.root}: missing {DEMOGRAPHICS_FILE} (case_id, age, sex, height_cm, weight_kg, diagnosis)")
        else:
            self.demographics = {}
        on_disk = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if self.demographics:
            missing = [c for c in self.demographics if c not in on_disk]
            if missing:
                raise CaseError(f"{self.root}: {len(missing)} case(s) listed in {DEMOGRAPHICS_FILE} have no folder, e.g. {missing[:3]}")
            self.case_ids = list(self.demographics)
        else:
            self.case_ids = [c for c in on_disk if (self.root / c / CT_FILE).exists()]
        if not self.case_ids:
            raise CaseError(f"{self.root}: no cases found (expected <case_id>/{CT_FILE} folders)")

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.case_ids)

    def path(self, case_id: str) -> Path:
        return self.root / case_id

    def load(self, case_id: str, **kwargs) -> Case:
        """Read one case with its demographics (see :func:`read_case`)."""
        return read_case(self.path(case_id), demographics=self.demographics.get(case_id), **kwargs)

    @property
    def has_organs(self) -> bool:
        """True if every case has an ``ORGANS.nii.gz``."""
        return all((self.path(c) / ORGANS_FILE).exists() for c in self.case_ids)


def case_identity(cohort: Cohort, case_id: str) -> str:
    """What makes two cases the same person, so that training and test sets can be kept apart across
    cohorts whose case ids repeat: a phantom's own seed (``phantom-seed:<seed>``), else the case id
    (real studies: AutoPET ids are unique). ``cohort`` may also be a cache read as a cohort (its
    manifest ``entries`` hold each case's metadata)."""
    entries = getattr(cohort, "entries", None)
    meta = entries.get(case_id, {}) if entries is not None else {}
    if entries is None:
        path = cohort.path(case_id) / META_FILE
        if path.is_file():
            try:
                meta = json.loads(path.read_text())
            except json.JSONDecodeError:
                meta = {}
    if meta.get("source") == "phantom" and meta.get("case_seed") is not None:
        return f"phantom-seed:{int(meta['case_seed'])}"
    return case_id
