"""The draw-a-digit page end to end in a real headless Chromium, and the server's answers to bad requests."""

import http.client
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnist_kit.serve import MAX_REQUEST, make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def url(trained_run):
    server = make_server(trained_run.run_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post(url, body: bytes, headers=None):
    request = urllib.request.Request(url + "/predict", data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_requests_get_400s_not_tracebacks(url):
    status, answer = post(url, b"not a png")
    assert status == 400 and "not an image" in answer["error"]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)  # announces too much, sends nothing
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(MAX_REQUEST + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "bytes" in json.loads(response.read())["error"]
    connection.close()
    import io

    from PIL import Image
    blank = io.BytesIO()
    Image.new("RGB", (280, 280), "white").save(blank, format="PNG")
    status, answer = post(url, blank.getvalue())
    assert status == 400 and "no ink" in answer["error"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url + "/nothing", timeout=10)
    assert missing.value.code == 404


def stroke(page, box, points, steps=12):
    """Press, move through `points` (fractions of the canvas), release: one pen stroke."""
    (x, y), *rest = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(x, y)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium here (apt-get install chromium; .ci/run does)")
def test_drawing_a_digit_shows_the_prediction(url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            box = page.locator("#pad").bounding_box()
            stroke(page, box, [(0.28, 0.18), (0.72, 0.18)])  # a 7: the bar...
            stroke(page, box, [(0.72, 0.18), (0.6, 0.5), (0.45, 0.85)])  # ...then the stem, stroke by stroke
            page.wait_for_function("document.querySelectorAll('#bars .bar').length === 3")
            page.wait_for_timeout(600)  # the answer to the last stroke's release
            assert page.locator("#digit").inner_text() == "7"
            assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
            assert page.locator("#message").inner_text() == ""
            page.click("#clear")
            assert page.locator("#digit").inner_text() == ""
            page.wait_for_timeout(400)  # an answer still on its way about the cleared drawing must not show
            assert page.locator("#digit").inner_text() == "" and page.locator("#message").inner_text() == ""
        finally:
            browser.close()
