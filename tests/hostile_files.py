"""Hostile ECG files, built on demand: the one home of every test's hostile-file builder.

Each builder takes a folder and returns the path of the file it wrote there (other files it needs
go beside it). Builders that make a reader follow a reference take the ``target`` the reference
points at; tests pass ``canary(folder)``, a file of known bytes outside the upload's own folder,
and assert that those bytes never come back (``holds_canary``) and a reason-coded refusal does.

Sizes are what the hostile file *declares*; the files themselves are small (the 60 MB XML flood
aside), and building one takes well under a second.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

#: 48 bytes (a multiple of 12 leads x int16) that look like a secret: a reader that follows a
#: reference to the canary returns these bytes as int16 samples, a message quoting it contains it.
CANARY_TOKEN = b"ecg-atlas-canary/write-token=7f3a9c1e5b2d4680aa!"
assert len(CANARY_TOKEN) == 48
CANARY_REPEATS = 1024  # 48 KiB: 2048 samples of 12 int16 leads, 4096 of 6...
#: Leads of every hostile ECG built here.
LEADS = 12


# --- the canary ----------------------------------------------------------------------------------


def canary(folder: Path) -> Path:
    """A file of known bytes (``CANARY_TOKEN`` repeated) to point references at; never an ECG."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "canary.secret"
    path.write_bytes(CANARY_TOKEN * CANARY_REPEATS)
    return path


def canary_samples() -> np.ndarray:
    """The canary's bytes as a (samples, 12) int16 array: what a reader following it would read."""
    return np.frombuffer(CANARY_TOKEN * CANARY_REPEATS, "<i2").reshape(-1, LEADS)


def holds_canary(value) -> bool:
    """Whether ``value`` (a Recording, an array, bytes or text) carries the canary's bytes (a
    Recording's stored int16 samples when it has them: WFDB gives the canary's bytes as those)."""
    digital = getattr(value, "digital", None)
    if digital is not None:
        value = digital.samples
    elif hasattr(value, "signal"):
        value = value.signal
    if isinstance(value, str):
        return CANARY_TOKEN[:16].decode() in value
    if isinstance(value, (bytes, bytearray)):
        return CANARY_TOKEN[:16] in value
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" or array.size == 0:
        return False
    token = np.frombuffer(CANARY_TOKEN[:24], "<i2")  # 12 int16 samples, in any layout or dtype
    values = set(np.unique(array.astype(np.float64)).tolist())
    return all(float(v) in values for v in token)


def _canary_hdf5(target: Path) -> Path:
    """An HDF5 file beside ``target`` whose 'tracings' (1, n, 12) int16 and 'exam_id' (1,) hold
    ``target``'s bytes: what an external link or a virtual dataset points at (``target`` itself
    when it is HDF5 already)."""
    import h5py

    if h5py.is_hdf5(target):
        return target
    raw = Path(target).read_bytes()
    raw = raw[: len(raw) // (2 * LEADS) * 2 * LEADS]
    path = Path(target).with_name(Path(target).name + ".h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=np.frombuffer(raw, "<i2").reshape(1, -1, LEADS))
        f.create_dataset("exam_id", data=np.frombuffer(raw[:8], "<i8"))
    return path


def _valid_tracings(n_samples: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(24)
    return rng.integers(-500, 500, size=(1, n_samples, LEADS)).astype(np.float32) / 1000


def _hdf5_with(folder: Path, name: str, dataset: str, make) -> Path:
    """An HDF5 file where ``dataset`` ('tracings' or 'exam_id') is made by ``make(file, dataset)``
    and the other one is ordinary and valid."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with h5py.File(path, "w") as f:
        if dataset != "tracings":
            f.create_dataset("tracings", data=_valid_tracings())
        make(f, dataset)
        if dataset != "exam_id":
            f.create_dataset("exam_id", data=np.array([24], dtype=np.int64))
    return path


# --- HDF5 that opens another file ----------------------------------------------------------------


def hdf5_external_link(folder: Path, target: Path, *, dataset: str = "tracings") -> Path:
    """``dataset`` is an h5py ExternalLink to the same name in ``target`` (wrapped in HDF5 if it is not)."""
    import h5py

    source = _canary_hdf5(Path(target))

    def make(f, name):
        f[name] = h5py.ExternalLink(str(source.resolve()), "/" + name)

    return _hdf5_with(folder, "external_link.h5", dataset, make)


def hdf5_external_storage(folder: Path, target: Path, *, dataset: str = "tracings") -> Path:
    """``dataset``'s raw data is HDF5 external storage: the bytes of ``target`` (int16 samples, or
    the first 8 bytes as an int64 exam id)."""
    size = Path(target).stat().st_size

    def make(f, name):
        if name == "tracings":
            n = size // (2 * LEADS)
            f.create_dataset(name, shape=(1, n, LEADS), dtype="<i2",
                             external=[(str(Path(target).resolve()), 0, n * 2 * LEADS)])
        else:
            f.create_dataset(name, shape=(1,), dtype="<i8", external=[(str(Path(target).resolve()), 0, 8)])

    return _hdf5_with(folder, "external_storage.h5", dataset, make)


def hdf5_virtual_dataset(folder: Path, target: Path, *, dataset: str = "tracings") -> Path:
    """``dataset`` is a virtual dataset whose source is the same name in ``target`` (an HDF5 file;
    wrapped in one if it is not)."""
    import h5py

    source = _canary_hdf5(Path(target))
    with h5py.File(source, "r") as f:
        shape, dtype = f[dataset].shape, f[dataset].dtype

    def make(f, name):
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(source.resolve()), name, shape=shape)
        f.create_virtual_dataset(name, layout, fillvalue=0)

    return _hdf5_with(folder, "virtual_dataset.h5", dataset, make)


# --- small files that declare huge sizes ---------------------------------------------------------


def hdf5_huge_shape(folder: Path, shape: tuple[int, ...] = (1, 2**25, 12)) -> Path:
    """A tiny HDF5 file declaring a huge chunked 'tracings' dataset with no chunk written (every
    read returns the fill value, so reading one row allocates the whole declared row)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "huge_shape.h5"
    chunks = tuple(min(s, c) for s, c in zip(shape, (1, 4096, 12)))
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", shape=shape, dtype="<f4", chunks=chunks, fillvalue=1.0)
        f.create_dataset("exam_id", data=np.arange(shape[0], dtype=np.int64))
    return path


def _deflate_zeros(n_bytes: int, head: bytes = b"") -> tuple[bytes, int]:
    """(raw deflate stream of ``head`` + ``n_bytes`` zeros, its CRC-32), without ever holding the
    inflated data: one compressed 16 MiB block of zeros, repeated after a full flush."""
    block_size = 2**24
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(head)
    zeros = bytes(block_size)
    block_crc_parts = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block_crc_parts.compress(zeros) + block_crc_parts.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(n_bytes, block_size)
    stream.extend([block] * whole)
    for _ in range(whole):
        crc = zlib.crc32(zeros, crc)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream.append(last.compress(zeros[:rest]) + last.flush(zlib.Z_FINISH))
    crc = zlib.crc32(zeros[:rest], crc)
    return b"".join(stream), crc


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive of already-deflated members: (name, deflated data, crc, uncompressed size, method)."""
    local, central, offset = [], [], 0
    for name, data, crc, size, method in members:
        encoded = name.encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size,
                             len(encoded), 0) + encoded
        local.append(header + data)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                                   len(encoded), 0, 0, 0, 0, 0o100644 << 16, offset) + encoded)
        offset += len(header) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), offset, 0)
    return b"".join(local) + directory + end


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin-1")


def npz_zip_bomb(folder: Path) -> Path:
    """A ~1.5 MB .npz whose 'signal' member, (12, 2**24) float64 zeros, inflates to 1.5 GiB
    (a valid archive: the CRC is right, so only the size gives it away)."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = (LEADS, 2**24)
    head = _npy_header(shape, "<f8")
    data, crc = _deflate_zeros(LEADS * 2**24 * 8, head)
    fs_npy = _npy_header((), "<f8") + struct.pack("<d", 500.0)
    names = np.array(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"])
    leads_npy = _npy_header((LEADS,), names.dtype.str) + names.tobytes()
    members = [("signal.npy", data, crc, len(head) + LEADS * 2**24 * 8, 8),
               ("fs.npy", fs_npy, zlib.crc32(fs_npy), len(fs_npy), 0),
               ("lead_names.npy", leads_npy, zlib.crc32(leads_npy), len(leads_npy), 0)]
    path = folder / "zip_bomb.npz"
    path.write_bytes(_zip(members))
    return path


def hdf5_huge_chunk(folder: Path) -> Path:
    """Rows of a normal size (4096 x 12) stored in one chunk of 2000 rows (375 MiB, none written):
    reading any row inflates the whole chunk."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "huge_chunk.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", shape=(2000, 4096, LEADS), dtype="<f4", chunks=(2000, 4096, LEADS))
    return path


def npz_many_members(folder: Path, members: int = 20_000) -> Path:
    """An .npz listing ``members`` empty members: ``zipfile`` builds an object for each on opening."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "many_members.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(members):
            archive.writestr("signal.npy" if i == 0 else f"m{i}.npy", b"")
    return path


def npy_header_longer_than_data(folder: Path) -> Path:
    """A .npy whose header declares 12 x 1 000 000 float32 (46 MiB, within the limits) over 4 kB."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "short.npy"
    path.write_bytes(_npy_header((LEADS, 1_000_000), "<f4") + bytes(4096))
    return path


def npy_huge_header(folder: Path, shape: tuple[int, ...] = (12, 2**33)) -> Path:
    """A .npy file of a few bytes whose header declares a huge float32 array."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "huge_header.npy"
    path.write_bytes(_npy_header(shape, "<f4") + bytes(4 * 4096))
    return path


def xml_flood(folder: Path, megabytes: int = 60, *, root: str = "RestingECG") -> Path:
    """A .xml file of ``megabytes`` MB of ``<a/>`` inside a ``root`` element (a GE MUSE root by
    default, so it is sniffed as an export and reaches the XML parser)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flood.xml"
    with open(path, "wb") as f:
        f.write(f'<?xml version="1.0" encoding="UTF-8"?><{root}>'.encode())
        chunk = b"<a/>" * 2**18  # 1 MiB
        f.writelines(chunk for _ in range(-(-megabytes * 10**6 // len(chunk))))
        f.write(f"</{root}>".encode())
    return path


def xml_deep(folder: Path, depth: int = 100_000, *, root: str = "RestingECG") -> Path:
    """A .xml file nesting ``depth`` elements inside a ``root`` element."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "deep.xml"
    path.write_bytes(f'<?xml version="1.0" encoding="UTF-8"?><{root}>'.encode() + b"<a>" * depth
                     + b"</a>" * depth + f"</{root}>".encode())
    return path


# --- WFDB ----------------------------------------------------------------------------------------


def _wfdb_header(record: str, sig_len: int, file_names: list[str], fs: int = 500) -> str:
    lines = [f"{record} {len(file_names)} {fs} {sig_len}"]
    for i, name in enumerate(file_names):
        lines.append(f"{name} 16 1000/mV 16 0 0 0 0 lead{i}")
    return "\n".join(lines) + "\n"


def wfdb_escaping_signal_file(folder: Path, target: Path, *, absolute: bool = False) -> Path:
    """A .hea (12 signals, format 16, sized to ``target``'s bytes) whose signal file is ``target``
    named by a ``../`` relative path (or by its absolute path): put ``target`` outside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = Path(target).resolve()
    name = str(target) if absolute else os.path.relpath(target, folder.resolve())
    if not absolute and os.sep not in name:  # same folder: still a path, not a bare name
        name = os.path.join("..", folder.resolve().name, name)
    sig_len = target.stat().st_size // (2 * LEADS)
    path = folder / "escape.hea"
    path.write_text(_wfdb_header("escape", sig_len, [name] * LEADS))
    return path


def wfdb_huge_sig_len(folder: Path, sig_len: int = 10**12) -> Path:
    """A .hea declaring ``sig_len`` samples of 12 format-16 signals, beside a small .dat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "huge.dat").write_bytes(np.ones((100, LEADS), "<i2").tobytes())
    path = folder / "huge.hea"
    path.write_text(_wfdb_header("huge", sig_len, ["huge.dat"] * LEADS))
    return path


# --- EDF -----------------------------------------------------------------------------------------


def edf_bytes(*, labels: list[str], n_records: int, samples_per_record: int, record_s: float = 1.0,
              digital: tuple[int, int] = (-32768, 32767), physical: tuple[float, float] = (-10.0, 10.0),
              dimension: str = "mV", data: bytes | None = None) -> bytes:
    """A plain EDF file, field by field; ``data`` defaults to a small sine in every signal."""

    def field(value, width: int) -> bytes:
        return str(value).encode("ascii").ljust(width)[:width]

    n = len(labels)
    header = (field(0, 8) + field("X X X X", 80) + field("Startdate X X X X", 80) + field("01.01.20", 8)
              + field("00.00.00", 8) + field(256 * (n + 1), 8) + field("", 44) + field(n_records, 8)
              + field(f"{record_s:g}", 8) + field(n, 4))
    header += b"".join(field(label, 16) for label in labels)
    header += b"".join(field("", 80) for _ in labels)
    header += b"".join(field(dimension, 8) for _ in labels)
    header += b"".join(field(f"{physical[0]:g}", 8) for _ in labels)
    header += b"".join(field(f"{physical[1]:g}", 8) for _ in labels)
    header += b"".join(field(digital[0], 8) for _ in labels)
    header += b"".join(field(digital[1], 8) for _ in labels)
    header += b"".join(field("", 80) for _ in labels)
    header += b"".join(field(samples_per_record, 8) for _ in labels)
    header += b"".join(field("", 32) for _ in labels)
    if data is None:
        t = np.arange(n_records * samples_per_record)
        wave = (1000 * np.sin(2 * np.pi * t / max(samples_per_record, 2))).astype("<i2")
        records = np.repeat(wave.reshape(n_records, 1, samples_per_record), n, axis=1)
        data = records.tobytes()
    return header + data


def edf_flat_digital_range(folder: Path) -> Path:
    """A plain EDF of 12 ECG leads (10 s at 500 Hz) whose signals have digital max == digital min."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flat_digital_range.edf"
    labels = ["ECG " + lead for lead in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")]
    path.write_bytes(edf_bytes(labels=labels, n_records=10, samples_per_record=500, digital=(0, 0)))
    return path


def edf_huge_records(folder: Path, n_records: int = 10**7, samples_per_record: int = 2**20) -> Path:
    """A small EDF whose header declares ``n_records`` data records of ``samples_per_record``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "huge_records.edf"
    path.write_bytes(edf_bytes(labels=["ECG I"], n_records=n_records, samples_per_record=samples_per_record,
                               data=bytes(4096)))
    return path


def status_kb(field: str) -> int:
    """A figure of this process's /proc/self/status in kB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_growth_mb(action) -> float:
    """Run ``action()`` and return how far this process's peak RSS rose above its RSS before, in MB.

    The kernel's high-water mark is reset first (``/proc/self/clear_refs``), so what an earlier test
    allocated does not hide the growth (``ru_maxrss`` never goes down)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status_kb("VmRSS")
    try:
        action()
    finally:
        growth = (status_kb("VmHWM") - before) / 1024
    return growth
