"""Tests for unimdm_jax.data.download against a local http.server (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import threading
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from unimdm_jax.data.__main__ import main
from unimdm_jax.data.download import (
    LOCK_NAME,
    MANIFEST,
    DatasetSpec,
    DownloadError,
    FileSpec,
    OfflineError,
    count_csv_rows,
    download_dataset,
    load_manifest,
    manifest_to_json,
    verify_dataset,
)
from unimdm_jax.data.io import read_rows

FIXTURE = Path(__file__).parent / "fixtures" / "mp20_fixture.csv.gz"
ROWS = {"train": 6, "val": 3, "test": 4}


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    """No proxies, and refuse any URL that is not on 127.0.0.1."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = urllib.request.urlopen

    def guarded(req, *a, **kw):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", f"test tried to reach {url}"
        return real(req, *a, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def _small_manifest(**overrides) -> dict[str, DatasetSpec]:
    files = tuple(FileSpec(split, overrides.get(split, n)) for split, n in ROWS.items())
    spec = MANIFEST["mp_20"]
    return {"mp_20": DatasetSpec("mp_20", "http://unused.invalid", files, spec.required_columns)}


def _write_upstream_csvs(root: Path) -> None:
    """Small CSVs in the CDVAE layout (leading unnamed index column) under root/mp_20/."""
    df = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    d = root / "mp_20"
    d.mkdir(parents=True)
    start = 0
    for split, n in ROWS.items():
        part = df.iloc[start : start + n]
        part.index = range(100 + start, 100 + start + n)
        part.to_csv(d / f"{split}.csv")
        start += n


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    _write_upstream_csvs(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_success_writes_lock(server, tmp_path):
    url, srv = server
    dest = tmp_path / "data"
    res = download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    d = dest / "mp_20"
    assert res.directory == d and sorted(res.downloaded) == ["test.csv", "train.csv", "val.csv"]
    assert res.lock_created and res.lock == d / LOCK_NAME
    assert sorted(p.name for p in d.iterdir()) == [LOCK_NAME, "test.csv", "train.csv", "val.csv"]
    lock = json.loads((d / LOCK_NAME).read_text())
    assert lock["dataset"] == "mp_20"
    for split, n in ROWS.items():
        served = srv / "mp_20" / f"{split}.csv"
        assert (d / f"{split}.csv").read_bytes() == served.read_bytes()
        entry = lock["files"][f"{split}.csv"]
        assert entry == {"size": served.stat().st_size, "sha256": _sha(served), "rows": n}
        assert count_csv_rows(d / f"{split}.csv")[1] == n
    # the files read back through the io layer (upstream index column dropped)
    rows = read_rows(d / "train.csv")
    assert len(rows) == 6 and rows[0].source == "train.csv:0"
    assert set(rows[0].properties) == {"formation_energy_per_atom", "band_gap", "e_above_hull"}

    report = verify_dataset(d, manifest=_small_manifest())
    assert report.locked and [c.rows for c in report.checked] == [6, 3, 4]

    again = download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    assert again.downloaded == [] and sorted(again.kept) == ["test.csv", "train.csv", "val.csv"]
    assert not again.lock_created


def test_sha_mismatch_against_lock_rejected(server, tmp_path):
    url, srv = server
    dest = tmp_path / "data"
    download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    d = dest / "mp_20"
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    # upstream changes one value: same header, same row count, different bytes
    served = srv / "mp_20" / "train.csv"
    text = served.read_text()
    served.write_text(text.replace("mp-", "mq-", 1))
    with pytest.raises(
        DownloadError, match=r"train\.csv: sha256 .* does not match MANIFEST\.lock\.json"
    ) as ei:
        download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), force=True, progress=False)
    assert "\n" not in str(ei.value)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing replaced, no temp files

    # the CLI reports the same thing on one line with exit 1
    mf = tmp_path / "manifest.json"
    mf.write_text(json.dumps(manifest_to_json(_small_manifest())))
    assert (
        main(
            [
                "download",
                "mp_20",
                "--dest",
                str(dest),
                "--base-url",
                url,
                "--manifest",
                str(mf),
                "--force",
                "-q",
            ]
        )
        == 1
    )
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_verify_detects_tampering(server, tmp_path, capsys):
    url, _ = server
    dest = tmp_path / "data"
    download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    mf = tmp_path / "manifest.json"
    mf.write_text(json.dumps(manifest_to_json(_small_manifest())))
    d = dest / "mp_20"
    assert main(["verify", str(d), "--manifest", str(mf)]) == 0
    assert "val.csv: OK (3 rows" in capsys.readouterr().out

    with open(d / "val.csv", "a") as fh:
        fh.write("\n")
    assert main(["verify", str(d), "--manifest", str(mf)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: val.csv: size")
    with pytest.raises(DownloadError, match=r"does not match MANIFEST\.lock\.json .*--force"):
        download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    # --force fetches a fresh copy that matches the lock again
    download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), force=True, progress=False)
    assert main(["verify", str(d), "--manifest", str(mf)]) == 0

    # against the packaged manifest the small files have the wrong row counts
    (d / "val.csv").unlink()
    (d / LOCK_NAME).unlink()
    with pytest.raises(DownloadError, match="missing val.csv"):
        verify_dataset(d)


def test_verify_without_lock_then_lock(server, tmp_path):
    _, srv = server
    d = srv / "mp_20"  # files obtained elsewhere, no lock yet
    report = verify_dataset(d, manifest=_small_manifest())
    assert not report.locked and "no MANIFEST.lock.json" in report.summary()
    report = verify_dataset(d, manifest=_small_manifest(), write_lock=True)
    assert report.lock_written and (d / LOCK_NAME).exists()
    assert verify_dataset(d, manifest=_small_manifest()).locked


@pytest.mark.parametrize(
    "manifest, match",
    [
        (_small_manifest(val=4), r"val\.csv: 3 data rows, manifest expects 4"),
        (
            {
                "mp_20": DatasetSpec(
                    "mp_20", "x", (FileSpec("train", 6, sha256="0" * 64),), ("material_id", "cif")
                )
            },
            r"train\.csv: sha256 .* does not match manifest",
        ),
        (
            {"mp_20": DatasetSpec("mp_20", "x", (FileSpec("train", 6, size=1),), ("material_id", "cif"))},
            r"train\.csv: size \d+ does not match manifest \(1\)",
        ),
        (
            {"mp_20": DatasetSpec("mp_20", "x", (FileSpec("train", 6),), ("material_id", "cif", "heat_ref"))},
            r"train\.csv: header lacks column\(s\) heat_ref",
        ),
    ],
)
def test_manifest_mismatch_leaves_nothing(server, tmp_path, manifest, match):
    url, _ = server
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=match):
        download_dataset("mp_20", dest, base_url=url, manifest=manifest, progress=False)
    assert not dest.exists()  # even the directories this call created are gone


def test_http_404_clean_error(server, tmp_path, capsys):
    url, srv = server
    dest = tmp_path / "data"
    (srv / "mp_20" / "test.csv").unlink()  # train and val download fine, test is 404
    with pytest.raises(
        DownloadError, match=r"mp_20/test\.csv: HTTP 404 .* for http://127\.0\.0\.1:\d+/mp_20/test\.csv"
    ) as ei:
        download_dataset("mp_20", dest, base_url=url, manifest=_small_manifest(), progress=False)
    assert not isinstance(ei.value, OfflineError)
    assert not dest.exists()  # all-or-nothing: train/val temp files removed too

    assert main(["download", "perov_5", "--dest", str(dest), "--base-url", url, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err
    assert not dest.exists()


def test_existing_dest_kept_on_failure(server, tmp_path):
    url, _ = server
    dest = tmp_path / "data"
    (dest / "mp_20").mkdir(parents=True)
    (dest / "mp_20" / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError):
        download_dataset("mp_20", dest, base_url=url + "/nothing", manifest=_small_manifest(), progress=False)
    assert [p.name for p in _all_files(dest)] == ["mp_20", "notes.txt"]


def test_unreachable_port_is_offline_exit_2(tmp_path, capsys):
    port = _free_port()
    dest = tmp_path / "data"
    rc = main(["download", "mp_20", "--dest", str(dest), "--base-url", f"http://127.0.0.1:{port}", "-q"])
    assert rc == 2
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot reach 127.0.0.1:{port}: ")
    assert "download MP-20 on a machine with internet and pass --dest / set UNIMDM_DATA" in lines[0]
    assert not dest.exists() and list(tmp_path.iterdir()) == []

    with pytest.raises(OfflineError):
        download_dataset(
            "mp_20", dest, base_url=f"http://127.0.0.1:{port}", manifest=_small_manifest(), progress=False
        )
    assert not dest.exists()


def test_timeout_is_offline(tmp_path):
    """A server that accepts the connection but never answers -> offline error, no files."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(OfflineError, match=r"cannot reach 127\.0\.0\.1:\d+: timed out"):
            download_dataset(
                "mp_20",
                tmp_path / "d",
                base_url=f"http://127.0.0.1:{port}",
                manifest=_small_manifest(),
                timeout=0.3,
                progress=False,
            )
    assert not (tmp_path / "d").exists()


def test_manifest_roundtrip_and_packaged_values(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(manifest_to_json(MANIFEST)))
    assert load_manifest(f) == MANIFEST
    counts = {n: tuple(x.rows for x in s.files) for n, s in MANIFEST.items()}
    assert counts == {
        "mp_20": (27136, 9047, 9046),
        "perov_5": (11356, 3785, 3785),
        "carbon_24": (6091, 2030, 2030),
        "mpts_52": (27380, 5000, 8096),
    }
    assert all(x.sha256 is None and x.size is None for s in MANIFEST.values() for x in s.files)
    assert MANIFEST["mpts_52"].base_url.startswith("https://raw.githubusercontent.com/jiaor17/DiffCSP/")
    f.write_text("{not json")
    with pytest.raises(DownloadError, match="bad manifest"):
        load_manifest(f)
