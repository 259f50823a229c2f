"""
``mirror`` and ``upload`` output for scripts: ``--json``, ``-v``, ``-q``, ``--log-file``, and
the wall-clock wait figure, from real command lines against the embedded portal.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from support import PNG_HEAD, Terminal, ThreadPortal, run_cli

ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied."}
INVALID_CREDENTIALS = {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request."}
LOG_FIELDS = {"time", "event", "product", "name", "image_id", "bytes", "reason"}

pytestmark = [
    pytest.mark.usefixtures("cli_env"),
    pytest.mark.served(products=4, images_per_product=2),
]


def mirror(served: ThreadPortal, *options: str, products: tuple[int, ...] = (1, 2)) -> list[str]:
    ids = [f"--product={pid}" for pid in products]
    return ["mirror", "out", *ids, "--webhook", served.url, *options]


def no_credentials(secret_watch: Any, served: ThreadPortal, *texts: str) -> None:
    """None of *texts* holds a credential, a signed download link or its token."""
    secret_watch.check(*texts)
    for text in texts:
        assert served.portal.webhook_code not in text
        assert "download_url" not in text
        assert "downloadUrl" not in text
        assert "token=" not in text
        assert "/download/" not in text  # the signed link's path


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- --json -----------------------------------------------------------------------------------


def test_mirror_json_is_the_whole_of_stdout(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    code, out, err = run_cli(capsys, *mirror(served, "--json", "--via", "rest"))
    assert code == 0, err
    summary = json.loads(out)  # stdout holds the one object, nothing else
    assert out.count("\n") == 1
    assert summary["command"] == "mirror"
    assert (summary["ended"], summary["error"], summary["dry_run"]) == ("done", None, False)
    assert (summary["products"], summary["images"], summary["downloaded"]) == (2, 4, 4)
    assert (summary["skipped"], summary["failed"], summary["removed"]) == (0, 0, 0)
    assert summary["bytes"] == sum(p.stat().st_size for p in Path("out").rglob("*.png"))
    assert (summary["via_public"], summary["via_rest"]) == (0, 4)
    assert summary["requests"] >= 5
    assert 0 <= summary["held"] <= summary["seconds"]
    assert summary["failures"] == []
    assert "waited" not in summary  # summed over concurrent requests: held says it
    assert "planned" not in summary
    no_credentials(secret_watch, served, out, err)


def test_mirror_json_names_each_failure(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    argv = mirror(served, "--json", "--via", "rest", "--concurrency", "1", products=(1,))
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    summary = json.loads(out)
    assert (summary["ended"], summary["failed"], summary["downloaded"]) == ("failed", 1, 1)
    assert summary["error"] == "1 image failed to download; run again to retry them"
    [failure] = summary["failures"]
    image = next(i for i in served.portal.catalog.images(1) if i.id == failure["image_id"])
    assert failure["product"] == 1
    assert failure["name"] == image.name
    assert "ACCESS_DENIED" in failure["reason"]
    # The warning and the error line are on standard error.
    assert "bitrix-images: warning: product 1, image" in err
    assert err.strip().splitlines()[-1].startswith("bitrix-images: error: 1 image failed")
    no_credentials(secret_watch, served, out, err)


def test_a_run_stopped_by_an_error_still_prints_its_object(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    served.call(
        served.portal.inject, "error", method="download", status=401, body=INVALID_CREDENTIALS
    )
    argv = mirror(served, "--json", "--via", "rest", "--concurrency", "1", products=(1,))
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    summary = json.loads(out)
    assert summary["ended"] == "error"
    assert "INVALID_CREDENTIALS" in summary["error"]
    assert summary["products"] == 1
    assert "bitrix-images: error:" in err
    no_credentials(secret_watch, served, out, err)


def test_upload_json_before_the_run_started(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "upload", "nowhere", "--json", "--webhook", served.url)
    assert code == 1
    assert json.loads(out) == {
        "command": "upload",
        "ended": "error",
        "error": "not a directory: nowhere",
        "bytes": 0,
        "failures": [],
    }
    assert err == "bitrix-images: error: not a directory: nowhere\n"


def test_upload_json_and_its_plan_on_stderr(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos" / "3"
    folder.mkdir(parents=True)
    (folder / "side.png").write_bytes(PNG_HEAD + b"side")
    (folder / "notes.txt").write_text("no image")
    argv = ("upload", "photos", "--webhook", served.url, "--json")
    code, out, err = run_cli(capsys, *argv, "--dry-run")
    assert code == 0
    plan = json.loads(out)
    assert (plan["dry_run"], plan["added"], plan["files"], plan["not_images"]) == (True, 1, 1, 1)
    assert "+ 3/side.png" in err.splitlines()
    assert "3/notes.txt: not a JPEG" in err

    code, out, err = run_cli(capsys, *argv)
    assert code == 0
    done = json.loads(out)
    assert (done["ended"], done["added"], done["present"]) == ("done", 1, 0)
    assert done["bytes"] == len(PNG_HEAD) + 4
    assert "+ 3/side.png" not in err  # a file line only with -v (or a plan)


def test_demo_json_keeps_stdout_for_the_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "mirror", "--demo", "demo", "--json", "--concurrency", "8")
    assert code == 0, err
    assert json.loads(out)["downloaded"] > 0
    assert err.startswith("demo: an embedded demo portal")


# --- -v and -q --------------------------------------------------------------------------------


def test_verbose_prints_a_line_per_file_of_each_kind(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    catalog = served.portal.catalog
    code, out, _ = run_cli(capsys, *mirror(served, "-v"))
    assert code == 0
    first = out.splitlines()
    assert sorted(first[:-1]) == sorted(
        f"+ {pid}/{image.name}" for pid in (1, 2) for image in catalog.images(pid)
    )
    assert first[-1].startswith("2 products, 4 images (4 downloaded")

    gone, kept = catalog.images(1)
    served.call(catalog.delete_image, 1, gone.id)
    changed, same = catalog.images(2)
    Path("out", "2", changed.name).write_bytes(b"edited")
    # The one download of the run, the changed file's, is refused.
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    code, out, err = run_cli(capsys, *mirror(served, "-v", "--prune", "--via", "rest"))
    lines = out.splitlines()
    assert code == 1
    assert f"- 1/{gone.name} (id {gone.id})" in lines
    assert f"= 1/{kept.name}" in lines
    assert f"= 2/{same.name}" in lines
    assert f"! 2/{changed.name} (id {changed.id}): " in "\n".join(lines)
    assert "ACCESS_DENIED" in out
    assert lines[-1].startswith("2 products, 3 images (0 downloaded, 2 skipped, 1 failed")

    code, out, _ = run_cli(capsys, *mirror(served, "-v", "--via", "rest"))
    assert code == 0
    assert f"~ 2/{changed.name}" in out.splitlines()
    no_credentials(secret_watch, served, out, err)


def test_verbose_with_json_goes_to_stderr(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *mirror(served, "-v", "--json"))
    assert code == 0
    assert json.loads(out)["downloaded"] == 4
    assert sum(line.startswith("+ ") for line in err.splitlines()) == 4


def test_quiet_prints_nothing_on_success(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "photos" / "3").mkdir(parents=True)
    (tmp_path / "photos" / "3" / "notes.txt").write_text("a warning, not an error")
    assert run_cli(capsys, *mirror(served, "-q")) == (0, "", "")
    assert Path("out", "1").is_dir()
    assert run_cli(capsys, "upload", "photos", "-q", "--webhook", served.url) == (0, "", "")


def test_quiet_still_prints_each_failure(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    argv = mirror(served, "-q", "--via", "rest", "--concurrency", "1", products=(1, 9))
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (1, "")
    *failures, error = err.splitlines()
    failed, unlisted = sorted(failures)  # "! 1/..." and "! 9: ..."; the listing may come first
    assert failed.startswith("! 1/photo-")
    assert "ACCESS_DENIED" in failed
    assert unlisted == "! 9: Product was not found"
    assert error == "bitrix-images: error: 1 image failed to download; run again to retry them"
    assert "warning" not in err
    no_credentials(secret_watch, served, out, err)


def test_upload_files_refused_before_any_request_are_failures_too(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos" / "3"
    folder.mkdir(parents=True)
    (folder / "big.png").write_bytes(PNG_HEAD + bytes(100))
    (folder / "ok.png").write_bytes(PNG_HEAD + b"ok")
    argv = ("upload", "photos", "--max-file-size", "50", "--webhook", served.url)
    code, out, err = run_cli(capsys, *argv, "-q", "--dry-run")
    assert (code, out) == (1, "")
    failure, error = err.splitlines()
    assert failure.startswith("! 3/big.png: ")
    assert "larger than the 50 allowed" in failure
    assert error.startswith("bitrix-images: error: 1 file or image failed")

    code, out, _ = run_cli(capsys, *argv, "--json")
    assert code == 1
    [refused] = json.loads(out)["failures"]
    assert (refused["product"], refused["name"], refused["image_id"]) == (3, "big.png", None)


@pytest.mark.parametrize("command", ["mirror", "upload"])
def test_verbose_and_quiet_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    target = ("out", "--product", "1") if command == "mirror" else ("src",)
    code, out, err = run_cli(capsys, command, *target, "-v", "-q")
    assert (code, out) == (2, "")
    assert "not allowed with argument" in err


def test_on_a_terminal_quiet_shows_no_bar(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run_cli(capsys, *mirror(served, "-q"))[:2] == (0, "")
    assert terminal.getvalue() == ""


def test_on_a_terminal_the_log_takes_the_warnings_beside_the_bar(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    argv = mirror(served, "--log-file", "run.log", "--via", "rest", "-v", products=(1,))
    code, out, _ = run_cli(capsys, *argv)
    assert code == 1
    shown = terminal.getvalue()
    assert "1/1 products" in shown  # the bar
    assert "\rbitrix-images: warning: product 1, image " in shown  # the bar cleared first
    assert sum(line.startswith("+ 1/") for line in out.splitlines()) == 1
    [warning] = [r for r in log_records(Path("run.log")) if r["event"] == "warning"]
    assert warning["message"].startswith("product 1, image ")


# --- --log-file -------------------------------------------------------------------------------


def test_the_log_file_holds_every_event_and_warning(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], secret_watch: Any
) -> None:
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    argv = mirror(served, "--log-file", "run.log", "--via", "rest", "--concurrency", "1")
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert out.startswith("2 products, 4 images")  # the log changes nothing printed
    records = log_records(Path("run.log"))
    events = [r for r in records if r["event"] not in ("warning", "end")]
    assert [r["event"] for r in events].count("add") == 3
    assert [r["event"] for r in events].count("fail") == 1
    for record in events:
        assert set(record) >= LOG_FIELDS
        assert record["time"].endswith("+00:00")
    added = [r for r in events if r["event"] == "add"]
    assert {(r["product"], r["name"]) for r in added} <= {
        (pid, i.name) for pid in (1, 2) for i in served.portal.catalog.images(pid)
    }
    assert all(r["bytes"] > 0 and r["image_id"] for r in added)
    [warning] = [r for r in records if r["event"] == "warning"]
    assert warning["message"].startswith("product ")
    assert "ACCESS_DENIED" in warning["message"]
    assert records[-1]["event"] == "end"
    assert (records[-1]["ended"], records[-1]["failed"]) == ("failed", 1)

    # Appended: a second run adds its records after the first run's.
    assert run_cli(capsys, *mirror(served, "--log-file", "run.log"))[0] == 0
    again = log_records(Path("run.log"))
    assert again[: len(records)] == records
    assert [r["event"] for r in again[len(records) :]].count("keep") == 3
    no_credentials(secret_watch, served, out, err, Path("run.log").read_text())


def test_a_log_file_that_cannot_be_written_stops_before_any_request(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    before = served.portal.counters.requests
    code, out, err = run_cli(capsys, *mirror(served, "--log-file", "no/such/dir/run.log"))
    assert (code, out) == (1, "")
    assert err.startswith("bitrix-images: error: cannot write the log file no/such/dir/run.log")
    assert served.portal.counters.requests == before


def test_a_dry_run_logs_its_plan_as_planned(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, *mirror(served, "--dry-run", "--log-file", "plan.log"))
    assert code == 0
    records = log_records(Path("plan.log"))
    planned = [r for r in records if r["event"] == "add"]
    assert len(planned) == 4
    assert all(r["dry_run"] for r in planned)
    assert [line for line in out.splitlines() if line.startswith("+ ")] == [
        f"+ {r['product']}/{r['name']}" for r in planned
    ]


# --- the wall-clock wait ----------------------------------------------------------------------


@pytest.mark.served(products=2, images_per_product=4)
def test_held_is_wall_clock_time_under_concurrency(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five requests a second, none in advance: eight downloads at once wait together.
    code, out, err = run_cli(
        capsys,
        *("--rate", "5", "--burst", "1"),
        *mirror(served, "--json", "--via", "rest", "--concurrency", "8"),
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["downloaded"] == 8
    assert 0 < summary["held"] <= summary["seconds"]

    code, out, _ = run_cli(capsys, "--rate", "5", "--burst", "1", *mirror(served))
    assert code == 0
    assert "s held back by the limits" in out
    assert "summed" not in out


# --- a signal ---------------------------------------------------------------------------------


def test_a_stopped_run_still_prints_its_json(served: ThreadPortal, tmp_path: Path) -> None:
    from test_interrupt import PATIENCE, start_cli, wait_until

    portal = served.portal
    # One request a second: the mirror is still running when the signal comes.
    process = start_cli(
        *("--webhook", served.url, "--rate", "1", "--burst", "1"),
        *("mirror", str(tmp_path / "out"), "--via", "rest", "--json"),
        *(f"--product={pid}" for pid in (1, 2, 3, 4)),
        env={},
    )
    try:
        wait_until(lambda: portal.counters.by_method["download"] >= 1, "a download")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    summary = json.loads(out)
    assert (summary["ended"], summary["error"]) == ("interrupted", None)
    assert summary["downloaded"] < 8
    assert "interrupted" in err
    assert portal.webhook_code not in out + err
