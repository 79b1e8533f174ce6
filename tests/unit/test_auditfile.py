"""audit.log on disk: appended in whole lines, rotated by size, read across the files."""

from __future__ import annotations

from pathlib import Path

from controller.auditfile import AuditFile


def lines(first: int, n: int) -> bytes:
    return b"".join(b'{"n": %06d}\n' % i for i in range(first, first + n))  # 14 bytes each


def test_rotation_keeps_keep_files_of_at_most_max_bytes(tmp_path: Path) -> None:
    log = AuditFile(tmp_path / "audit.log", max_bytes=140, keep=2)
    for i in range(50):
        log.append(lines(i * 2, 2))
    assert [p.name for p in log.files()] == ["audit.log", "audit.log.1", "audit.log.2"]
    for p in log.files():
        assert 0 < p.stat().st_size <= 140
    assert not (tmp_path / "audit.log.3").exists()
    # the newest 30 lines: the 3 files hold 10 each, in order
    got = log.tail(1000)
    assert got == lines(70, 30).splitlines()
    assert log.tail(15) == lines(85, 15).splitlines()
    assert log.tail(0) == []


def test_a_batch_is_never_split_and_a_torn_line_is_ended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditFile(path, max_bytes=4096, keep=1)
    path.write_bytes(b'{"torn"')
    log.append(lines(0, 1))
    assert path.read_bytes() == b'{"torn"\n' + lines(0, 1)
    big = lines(1, 400)  # 5600 bytes: more than max_bytes, written whole to a fresh file
    log.append(big)
    assert path.read_bytes() == big
    assert (tmp_path / "audit.log.1").read_bytes() == b'{"torn"\n' + lines(0, 1)
    assert log.tail(2) == [*lines(399, 2).splitlines()]


def test_lowering_keep_deletes_the_extra_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    wide = AuditFile(path, max_bytes=28, keep=5)
    for i in range(12):
        wide.append(lines(i, 1))
    assert len(wide.files()) == 6
    narrow = AuditFile(path, max_bytes=28, keep=2)
    narrow.append(lines(99, 1))
    assert [p.name for p in narrow.files()] == ["audit.log", "audit.log.1", "audit.log.2"]
    assert narrow.tail(100)[-1] == lines(99, 1).strip()


def test_no_file_reads_as_empty(tmp_path: Path) -> None:
    assert AuditFile(tmp_path / "audit.log", 4096, 3).tail(10) == []
