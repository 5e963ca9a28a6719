"""The HTML leaderboard opens in a real headless browser (Debian's chromium) and shows the tables and plots."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dlscience.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (install Debian's `chromium` to run this check)"
)
def test_report_renders_in_headless_chromium(tmp_path):
    out = tmp_path / "suite"
    argv = ["eval", "run", "--model", "mock", "--model", "mock:mock-b", "--scenarios", "everyday_qa,wordnet_synonym",
            "--max-eval-instances", "4", "--no-cache", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = out / "report.html"
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--dump-dom", report.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert '<h1 id="title">dlscience eval leaderboard</h1>' in dom
    assert dom.count('class="leaderboard"') == 7  # one table per metric group
    assert "mock-b" in dom and "wordnet_synonym" in dom and "data:image/png;base64," in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000  # a rendered page, not a blank one
