"""Hostile text in reports: rendered by the real runner, opened in a real headless browser.

Survey comments, campaign names and run titles come from users. Each payload
below would run code if it were treated as markup; the browser must show it
as text and run none of it. Chromium comes from Debian's package (the test
set-up in the Makefile installs it where it can); without it this test fails
with a message rather than skipping.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clm_helpers.report import run

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
MARK = "clmpwned"
PAYLOADS = [
    f"<script>document.title='{MARK}'</script>",
    f"<img src=x onerror=\"document.body.setAttribute('{MARK}','1')\">",
    f"\"><svg onload=\"document.body.setAttribute('{MARK}','2')\">",
    f"<a href=\"javascript:document.body.setAttribute('{MARK}','3')\">click</a>",
]


def chromium() -> str:
    path = os.environ.get("CLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not path:
        pytest.fail("these tests need a headless Chromium: `apt-get install chromium` (Debian), or set CLM_CHROMIUM to a Chrome binary")
    return path


def rendered_dom(html_file: Path, tmp_path: Path) -> str:
    """The page's DOM after the browser loaded it and ran whatever scripts it allowed."""
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
         "--dump-dom", html_file.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("payload", PAYLOADS, ids=["script", "img-onerror", "svg-onload", "javascript-href"])
def test_hostile_text_is_shown_literally_and_never_runs(tmp_path, payload):
    text = payload + " " + "A" * 5000  # and a very long string
    result = run(FIXTURES, tmp_path, parameters={"dataset": "sample", "text": text}, only=["d_hostile"], title=payload)
    assert result.ok, result.notebooks[0].error
    # the parameter arrives in the notebook as the same string
    assert (result.folder / "received.txt").read_text() == text
    for page in ("d_hostile.html", "index.html"):
        dom = rendered_dom(result.folder / page, tmp_path)
        title = dom.split("<title>")[1].split("</title>")[0] if "<title>" in dom else ""
        assert title.strip() != MARK, f"{page}: injected script ran"
        assert f'{MARK}="' not in dom, f"{page}: injected code ran"
        assert "&lt;" in dom, f"{page}: the text is not shown literally"
    notebook_dom = rendered_dom(result.folder / "d_hostile.html", tmp_path)
    assert notebook_dom.count("A" * 5000) >= 2  # the long string is shown whole in the table and the printed text


@pytest.mark.parametrize("value", ['it\'s "quoted"', "two\nlines", "back\\slash \\n", "{braces} %s $HOME `tick`", "'''; import os; os.remove('x') #"])
def test_parameters_arrive_as_the_same_string_never_as_code(tmp_path, value):
    result = run(FIXTURES, tmp_path, parameters={"dataset": "sample", "text": value}, only=["d_hostile"])
    assert result.ok, result.notebooks[0].error
    assert (result.folder / "received.txt").read_text() == value
