"""`genie play`: the HTTP API of the play server, and the page driven by a real headless browser."""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch

from genie.config import ConfigError
from genie.data.video import read_frames, read_video, write_image
from genie.models.actionmap import ActionMap
from genie.models.pixels import float_to_video
from genie.models.world import WorldModel
from genie.play import make_server, play_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


TINY_PROMPT = np.zeros((2, 16, 16, 3), np.uint8)  # two black frames


def tiny_world(prompt: np.ndarray | None = TINY_PROMPT, tokenizer_frames: int = 4) -> WorldModel:
    """An untrained 16x16 world with 4 latent actions: random weights, real code paths (a tokenizer decoder of
    two blocks: per-block caches)."""
    return tiny.tiny_world(prompt, tokenizer_frames=tokenizer_frames, dec_depth=2)


def test_a_tokenizer_with_a_shorter_window_decodes_the_newest_context_frames_within_it():
    world = tiny_world(tokenizer_frames=2)  # the dynamics model's window is 4 frames
    world.reset(np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), seed=0)
    for i in range(10):
        frame = world.step([i % 4])
        shown = world.decoder.ids.shape[1]
        assert 1 <= shown <= 2 and torch.equal(world.decoder.ids, world.state.ids[:, -shown:])
        expected = float_to_video(world.tokenizer.decode(world.grid_ids(world.decoder.ids))[:, -1:])[:, 0].numpy()
        assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1


def test_warm_up_steps_a_window_cycle_and_the_session_starts_fresh():
    world = tiny_world()  # window 4, slide 2
    calls = []
    step = world.step
    world.step = lambda action: calls.append(world.state.ids.shape[1]) or step(action)
    server = make_server(world, warm_up=True)
    try:
        assert len(calls) == 6 and max(calls) == 4 and calls.count(4) >= 2  # filled the window and slid, twice
        assert server.session.index == 0 and len(server.session.frames) == 1
    finally:
        server.server_close()


def serving(world: WorldModel, model_path: str):
    """A play server for `world` on a free localhost port, serving from a thread until the generator closes."""
    server = make_server(world, None, "127.0.0.1", 0, model_path=model_path)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def server():
    """A play server on a free localhost port, serving from a thread."""
    yield from serving(tiny_world(), "tiny.pt")


NAMED_CODES = {"noop": 2, "left": 0, "right": 3, "up": 1}  # true action -> the latent code that means it


@pytest.fixture
def named_server():
    """A play server for a world whose latent actions have names, as if trained on labelled data."""
    world = tiny_world()
    names = list(NAMED_CODES)
    labels = np.arange(40) % 4
    world.meta.update(ActionMap.fit([NAMED_CODES[names[a]] for a in labels], labels, 4, names).to_meta())
    yield from serving(world, "named.pt")


def get(server, path: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post(server, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(
        server.url + path.lstrip("/"), data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def next_event(stream) -> dict:
    """The next `data:` message of a Server-Sent Events stream."""
    while True:
        line = stream.readline()
        assert line, "event stream closed"
        if line.startswith(b"data: "):
            return json.loads(line[len(b"data: ") :])


# ------------------------------------------------------------------------------------ HTTP API


def test_info_describes_the_world(server):
    status, headers, body = get(server, "/info")
    info = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert info["num_actions"] == 4 and info["resolution"] == 16 and info["model"] == "tiny.pt"
    assert info["frame"] == 0  # the session starts at the prompt's frame


def test_page_and_its_assets_are_served(server):
    status, headers, page = get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for asset in ("/static/play.js", "/static/play.css"):
        assert asset.encode() in page and get(server, asset)[0] == 200
    assert get(server, "/static/../play.py")[0] == 404
    assert get(server, "/nope")[0] == 404


def test_step_returns_a_new_frame_and_counts_it(server):
    _, headers, first_png = get(server, "/frame.png")
    status, frame = post(server, "/step", {"action": 2})
    assert status == 200 and frame["index"] == 1 and frame["action"] == 2 and frame["latency_ms"] > 0
    status, frame = post(server, "/step?action=3")
    assert status == 200 and frame["index"] == 2
    _, headers, png = get(server, "/frame.png")
    assert headers["Content-Type"] == "image/png" and headers["X-Frame-Index"] == "2"
    assert png.startswith(b"\x89PNG") and first_png.startswith(b"\x89PNG")
    assert json.loads(get(server, "/info")[2])["frame"] == 2


def test_event_stream_pushes_each_new_frame(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    assert stream.status == 200 and stream.getheader("Content-Type") == "text/event-stream"
    current = next_event(stream)  # a new listener gets the current frame at once
    assert current["index"] == 0 and current["png"].startswith("data:image/png;base64,")
    post(server, "/step", {"action": 1})
    pushed = next_event(stream)
    assert (pushed["index"], pushed["action"], pushed["session"]) == (1, 1, current["session"])
    assert pushed["png"] != current["png"] or pushed["index"] != current["index"]
    connection.close()


def test_invalid_actions_are_rejected_with_400(server):
    for body in ({"action": 4}, {"action": -1}, {"action": "left"}, {"action": 1.5}, {}):
        status, answer = post(server, "/step", body)
        assert status == 400, body
        assert "action" in answer["error"]
    assert "0..3" in post(server, "/step", {"action": 4})[1]["error"]
    assert get(server, "/step")[0] == 405
    assert json.loads(get(server, "/info")[2])["frame"] == 0  # nothing was generated


def test_info_names_the_actions_and_binds_arrows_and_space_when_the_world_has_a_map(named_server, server):
    info = json.loads(get(named_server, "/info")[2])
    assert info["code_names"] == ["left", "up", "noop", "right"] and info["code_confidence"] == [1.0] * 4
    assert info["controls"] == {"ArrowLeft": 0, "ArrowRight": 3, "ArrowUp": 1, " ": 1} and info["labels"] == 40
    assert "controls" not in json.loads(get(server, "/info")[2])  # without a map, play is as before


def test_step_takes_an_action_name_when_the_world_has_a_map(named_server):
    status, frame = post(named_server, "/step", {"action": "Right"})
    assert status == 200 and frame["action"] == 3
    status, answer = post(named_server, "/step", {"action": "fire"})
    assert status == 400 and "no latent action means 'fire'" in answer["error"] and "left, right" in answer["error"]


def test_reset_starts_a_new_session(server):
    post(server, "/step", {"action": 0})
    status, frame = post(server, "/reset", {"seed": 3})
    assert status == 200 and frame["index"] == 0 and frame["action"] is None and frame["session"] == 2
    assert json.loads(get(server, "/info")[2])["frames_kept"] == 1


def test_save_mp4_holds_the_session(server, tmp_path):
    for action in (0, 1, 2):
        post(server, "/step", {"action": action})
    status, headers, data = get(server, "/video.mp4")
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert "attachment" in headers["Content-Disposition"]
    (tmp_path / "session.mp4").write_bytes(data)
    frames = read_video(tmp_path / "session.mp4")
    assert frames.shape == (4, 256, 256, 3)  # prompt frame + 3 steps, 16x16 upscaled 16x
    assert get(server, "/video.mp4?fps=0")[0] == 400


def test_play_listens_on_localhost_by_default():
    from genie.cli import build_parser

    args = build_parser().parse_args(["play", "--model", "w.pt"])
    assert args.host == "127.0.0.1" and args.port == 8765 and args.prompt is None


def test_server_from_a_saved_bundle_and_an_image_prompt(tmp_path):
    path = tiny_world().save(tmp_path / "w.pt")
    image = write_image(tmp_path / "start.png", np.full((40, 40, 3), 200, np.uint8))
    world = WorldModel.load(path)
    server = make_server(world, read_frames(image, resolution=world.resolution), "127.0.0.1", 0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.session.latest["index"] == 0
    finally:
        server.server_close()


def test_a_bundle_keeps_its_frame_stride_and_prompts_are_read_that_far_apart(tmp_path):
    from genie.models.world import span_frames, step_frames

    world = tiny_world()
    world.frame_stride = 3
    loaded = WorldModel.load(world.save(tmp_path / "w.pt"))
    assert loaded.frame_stride == 3 and tiny_world().frame_stride == 1
    frames = np.arange(10)
    assert step_frames(frames, 3).tolist() == [0, 3, 6, 9]
    assert step_frames(frames[:9], 3, end=True).tolist() == [2, 5, 8]  # a prompt ends at its newest frame
    assert span_frames(4, 3) == 10 and step_frames(frames, 1) is frames


def test_play_without_any_prompt_is_a_clear_error(tmp_path):
    path = tiny_world(prompt=None).save(tmp_path / "w.pt")
    args = argparse.Namespace(
        model=str(path),
        prompt=None,
        host="127.0.0.1",
        port=0,
        device="cpu",
        no_browser=True,
        steps=None,
        temperature=None,
        slide=None,
        compile=False,
    )
    with pytest.raises(ConfigError, match="--prompt"):
        play_command(args)


# -------------------------------------------------------------------------------- the real page


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "browser test needs the playwright Python package (pip install playwright; no `playwright install`)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_page_steps_the_world_on_key_presses(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 820})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    page.wait_for_function("document.getElementById('frame-index').textContent === '0'")
    first_src = page.get_attribute("#frame", "src")
    assert first_src.startswith("data:image/png;base64,")
    assert page.locator(".actions button").count() == 4

    page.keyboard.press("2")
    page.wait_for_function("document.getElementById('frame-index').textContent === '1'")
    assert page.text_content("#action") == "1"
    assert json.loads(get(server, "/info")[2])["frame"] == 1

    # bind ArrowRight to action 3; the binding survives a reload (localStorage)
    page.select_option("select[aria-label='action for →']", "3")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('frame-index').textContent === '2'")
    assert page.text_content("#action") == "3"
    page.reload()
    page.wait_for_function("document.getElementById('frame-index').textContent === '2'")
    assert page.input_value("select[aria-label='action for →']") == "3"

    page.click("#reset")
    page.wait_for_function("document.getElementById('frame-index').textContent === '0'")
    page.keyboard.down("1")  # a held key keeps stepping
    page.wait_for_function("Number(document.getElementById('frame-index').textContent) >= 3")
    page.keyboard.up("1")
    assert page.text_content("#action") == "0"
    with page.expect_download() as download:
        page.click("#save")
    assert download.value.suggested_filename.endswith(".mp4")
    assert len(read_video(download.value.path())) >= 4
    page.wait_for_timeout(300)  # let the highlight transition settle
    page.screenshot(path=str(tmp_path / "play.png"))
    shutil.copy(tmp_path / "play.png", "/tmp/genie_play_screenshot.png")  # to look at after a run
    assert errors == []


def test_page_names_the_actions_and_plays_with_arrows_and_space(named_server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 820})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(named_server.url)
    page.wait_for_function("document.getElementById('frame-index').textContent === '0'")
    assert page.locator(".actions button .name").all_text_contents() == ["left", "up", "noop", "right"]
    assert page.input_value("select[aria-label='action for →']") == "3"  # bound from the map, nothing stored
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('frame-index').textContent === '1'")
    assert page.text_content("#action") == "3 right"
    page.keyboard.press(" ")
    page.wait_for_function("document.getElementById('frame-index').textContent === '2'")
    assert page.text_content("#action") == "1 up"
    page.click("#clear-bindings")  # cleared stays cleared, named controls included
    page.reload()
    page.wait_for_function("document.getElementById('frame-index').textContent === '2'")
    assert page.input_value("select[aria-label='action for →']") == ""
    assert errors == []
