"""`genie play`: a local web page where keys step a world model with latent actions.

Standard library only: a ThreadingHTTPServer serves the page (genie/static/), takes step and reset
requests, and streams every new frame to the page over Server-Sent Events. One world, one session:
a lock serialises the model, so a second tab shares (and races for) the same world.

    GET  /              the page                      POST /step   {"action": 2} -> frame metadata
    GET  /info          JSON: num_actions, ...        POST /reset  {"seed": 0}   -> frame metadata

A bundle trained on labelled data names its latent actions (genie/models/actionmap.py): /info then gives each code's
name and the codes the arrow keys and space stand for, and /step also takes a name ({"action": "right"}).
    GET  /events        SSE: the newest frame, as it is generated (PNG data URL in JSON)
    GET  /frame.png     the newest frame              GET  /video.mp4  the session so far
"""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import tempfile
import threading
import time
import webbrowser
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from genie.config import ConfigError
from genie.data.video import read_frames, write_video
from genie.models.actionmap import ActionMap
from genie.models.world import ActionError, WorldModel, resolve_device, span_frames, step_frames
from genie.rollout import upscale

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
MAX_KEPT_FRAMES = 20_000  # the mp4 holds the last this-many frames (~30 min at 10 fps, 250 MB at 64x64)
KEEPALIVE_S = 15.0  # an SSE comment this often finds closed tabs and keeps proxies from timing out
VIDEO_SIDE = 256  # the mp4 is upscaled (nearest) to at least this side: yuv420p smears tiny frames


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 image (H, W, 3) -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


class PlaySession:
    """One world and one player: serialises the model, keeps the session's frames, and wakes frame listeners."""

    def __init__(self, world: WorldModel, prompt: np.ndarray, max_kept: int = MAX_KEPT_FRAMES):
        self.world, self.prompt = world, prompt  # prompt: uint8 (T, H, W, 3)
        self.action_map = ActionMap.from_meta(world.meta)  # None: the latent actions have no names
        # every model call runs on this one thread, in order: it serialises the model, and CUDA graphs
        # (`--compile` on a GPU) keep per-thread state that request threads would each record anew
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genie-model")
        self.changed = threading.Condition()  # guards everything below
        self.frames: deque[np.ndarray] = deque(maxlen=max_kept)  # uint8 (H, W, 3) each
        self.session = 0  # +1 on every reset, so pages can tell a new session from the next frame
        self.index = -1  # frames generated this session - 1 (the deque may have dropped the oldest)
        self.latest: dict | None = None
        self.closed = False

    def reset(self, seed: int | None = None) -> dict:
        """Start a new session from the prompt (seeded when `seed` is given) on the model thread; returns the first
        frame's record (session, index, action, latency_ms, png)."""

        def run() -> dict:
            start = time.perf_counter()
            frame = self.world.reset(self.prompt, seed=seed)[0]
            return self._publish(frame, None, time.perf_counter() - start, new_session=True)

        return self.model_thread.submit(run).result()

    def warm_up(self, progress: bool = True) -> int:
        """Step through one full cycle of the context window (every cache length the session will meet, and a
        slide), so compiled passes are compiled and their CUDA graphs recorded, on the model thread, before the
        player's first frame. Returns the frames made; the session's state is left to `reset`."""
        from tqdm import tqdm

        def run() -> int:
            world = self.world
            world.reset(self.prompt, seed=0)
            frames = world.dynamics.cfg.max_frames + world.slide
            for i in tqdm(range(frames), desc="compiling", unit="frame", disable=None if progress else True):
                world.step([i % world.num_actions])
            return frames

        return self.model_thread.submit(run).result()

    def step(self, action: int) -> dict:
        """One latent action; raises ActionError for an id outside 0..num_actions-1."""

        def run() -> dict:
            start = time.perf_counter()
            frame = self.world.step([action])[0]
            return self._publish(frame, action, time.perf_counter() - start)

        return self.model_thread.submit(run).result()

    def _publish(self, frame: np.ndarray, action: int | None, seconds: float, new_session: bool = False) -> dict:
        png = encode_png(frame)
        with self.changed:
            if new_session:
                self.session += 1
                self.index = -1
                self.frames.clear()
            self.index += 1
            self.frames.append(frame)
            self.latest = {
                "session": self.session,
                "index": self.index,
                "action": action,
                "latency_ms": round(seconds * 1000, 2),
                "png": png,
            }
            self.changed.notify_all()
            return self.latest

    def wait_for_frame(self, after: tuple[int, int] | None, timeout: float) -> dict | None:
        """The newest frame once it differs from `after` (session, index); None on timeout or close."""

        def fresh() -> bool:
            return self.closed or (self.latest is not None and (self.latest["session"], self.latest["index"]) != after)

        with self.changed:
            self.changed.wait_for(fresh, timeout)
            return self.latest if fresh() and not self.closed else None

    def video(self, fps: int, scale: int) -> bytes:
        """The session's frames as a browser-playable (H.264 yuv420p) mp4."""
        with self.changed:
            frames = np.stack(self.frames)  # (T, R, R, 3)
        with tempfile.TemporaryDirectory(prefix="genie-play-") as tmp:
            path = write_video(Path(tmp) / "session.mp4", upscale(frames, scale), fps=fps, lossless=False)
            return path.read_bytes()

    def close(self) -> None:
        """Wake every waiting event stream to end, and stop the model thread without waiting for it."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.model_thread.shutdown(wait=False)


class RequestError(Exception):
    """An HTTP error answered as JSON {"error": message}."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def action_info(action_map: ActionMap | None) -> dict:
    """/info's fields on what the latent actions mean: {} without a map; else `action_names` (the game's),
    `code_names` and `code_confidence` (each code's most frequent true action and its share, null for a code
    never seen), `controls` (browser key -> code, for the arrow keys and space) and `labels` (transitions counted)."""
    if action_map is None:
        return {}
    share = action_map.action_given_code().max(1)
    return {
        "action_names": action_map.names,
        "code_names": action_map.code_names(),
        "code_confidence": [
            round(float(p), 3) if name is not None else None for p, name in zip(share, action_map.code_names())
        ],
        "controls": action_map.key_bindings(),
        "labels": action_map.labels,
    }


def frame_json(frame: dict, with_png: bool = False) -> dict:
    """A frame record as JSON-able data: without the PNG bytes, or with them as a data: URL when `with_png`."""
    out = {k: v for k, v in frame.items() if k != "png"}
    if with_png:
        out["png"] = "data:image/png;base64," + base64.b64encode(frame["png"]).decode()
    return out


def int_param(value, name: str, low: int, high: int) -> int:
    """A request parameter (int or decimal string) as an int in low..high. Raises RequestError (400 Bad Request)
    naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer in {low}..{high}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"{name} must be an integer in {low}..{high}, got {value!r}"
        ) from None
    if not low <= number <= high:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be in {low}..{high}, got {number}")
    return number


class PlayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a held key sends many small requests
    disable_nagle_algorithm = True  # headers and body go out in separate writes: Nagle would hold the body ~40 ms
    server: PlayServer

    # ---------------------------------------------------------------------------------- routing

    def do_GET(self) -> None:
        """Serve a GET: the page, /info, /events, /frame.png, /video.mp4 or a static file."""
        routes = {
            "/": lambda q: self.send_static("play.html"),
            "/info": self.get_info,
            "/events": self.get_events,
            "/frame.png": self.get_frame,
            "/video.mp4": self.get_video,
        }
        self.route(routes, post_only=("/step", "/reset"))

    def do_POST(self) -> None:
        """Serve a POST: /step or /reset."""
        self.route({"/step": self.post_step, "/reset": self.post_reset}, post_only=())

    def route(self, routes: dict, post_only: tuple[str, ...]) -> None:
        """Dispatch the request to the handler for its path in `routes`; a RequestError becomes a JSON error response
        with its status, and a path in `post_only` asked by GET a 405."""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in routes:
                routes[url.path](query)
            elif url.path.startswith("/static/") and self.command == "GET":
                self.send_static(url.path.removeprefix("/static/"))
            elif url.path in post_only:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes POST")
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
        except RequestError as e:
            self.send_json({"error": str(e)}, e.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # keep serving; the page shows the message
            log.exception("%s %s failed", self.command, url.path)
            self.send_json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    # -------------------------------------------------------------------------------- endpoints

    def get_info(self, query: dict) -> None:
        """GET /info: the model's actions, frame size, names and sampling settings, and the latest frame, as JSON."""
        session, world = self.server.session, self.server.session.world
        latest = session.latest
        height, width = world.frame_size
        info = {
            "num_actions": world.num_actions,
            "resolution": world.resolution,
            "height": height,
            "width": width,
            "model": self.server.model_path,
            "prompt": self.server.prompt_name,
            "device": str(world.device),
            "maskgit_steps": world.steps,
            "session": latest["session"],
            "frame": latest["index"],
            "frames_kept": len(session.frames),
        }
        self.send_json({**info, **action_info(session.action_map)})

    def post_step(self, query: dict) -> None:
        """POST /step {"action": ID or name}: advance one frame and answer with its record. Raises RequestError (400)
        for a missing or malformed action or an id outside the model's actions."""
        body = self.read_json()
        if "action" not in body and "action" not in query:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'missing action: POST {"action": ID} or /step?action=ID')
        action = body.get("action", query.get("action"))
        action_map = self.server.session.action_map
        named = action_map is not None and isinstance(action, str) and not action.lstrip("-").isdigit()
        if not named and (
            isinstance(action, bool) or not isinstance(action, (int, str)) or not str(action).lstrip("-").isdigit()
        ):
            kind = (
                "an integer latent action id or an action name"
                if action_map is not None
                else "an integer latent action id"
            )
            raise RequestError(HTTPStatus.BAD_REQUEST, f"action must be {kind}, got {action!r}")
        try:
            frame = self.server.session.step(action_map.code_for(action) if named else int(action))
        except ActionError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        self.send_json(frame_json(frame))

    def post_reset(self, query: dict) -> None:
        """POST /reset {"seed": N} (optional): start over from the prompt and answer with the first frame's record.
        Raises RequestError (400) for a seed that is not an integer in 0..2**63-1."""
        seed = self.read_json().get("seed", query.get("seed"))
        seed = None if seed is None else int_param(seed, "seed", 0, 2**63 - 1)
        self.send_json(frame_json(self.server.session.reset(seed)))

    def get_frame(self, query: dict) -> None:
        """GET /frame.png: the latest frame as PNG, with X-Frame-Index and X-Session headers."""
        latest = self.server.session.latest
        self.send_bytes(
            latest["png"], "image/png", {"X-Frame-Index": str(latest["index"]), "X-Session": str(latest["session"])}
        )

    def get_video(self, query: dict) -> None:
        """GET /video.mp4?fps=&scale=: the session's frames so far as an MP4 download. Raises RequestError (400) for
        fps outside 1..60 or scale outside 1..32."""
        session = self.server.session
        fps = int_param(query.get("fps", 10), "fps", 1, 60)
        scale = int_param(query.get("scale", max(1, -(-VIDEO_SIDE // min(session.world.frame_size)))), "scale", 1, 32)
        name = f"genie-play-{Path(self.server.model_path or 'world').stem}-{session.session}.mp4"
        self.send_bytes(
            session.video(fps, scale), "video/mp4", {"Content-Disposition": f'attachment; filename="{name}"'}
        )

    def get_events(self, query: dict) -> None:
        """Server-Sent Events: one `data:` line of JSON per new frame; slow readers skip to the newest."""
        session = self.server.session
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # no length: the stream ends when either side closes
        self.end_headers()
        self.close_connection = True
        self.wfile.write(b"retry: 1000\n\n")
        last = None
        while not session.closed:
            frame = session.wait_for_frame(last, KEEPALIVE_S)
            if frame is None:
                self.wfile.write(b": keep-alive\n\n")
                continue
            last = (frame["session"], frame["index"])
            self.wfile.write(f"data: {json.dumps(frame_json(frame, with_png=True))}\n\n".encode())

    # ---------------------------------------------------------------------------------- helpers

    def read_json(self) -> dict:
        """The request body as a JSON object ({} when empty). Raises RequestError (400) for invalid JSON or a body
        that is not an object."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
        return body

    def send_static(self, name: str) -> None:
        """Send the file `name` from the static folder. Raises RequestError (404) for a path with a separator, a
        missing file or an unknown suffix."""
        path = STATIC_DIR / name
        # only files directly in static/: no "..", no subfolders
        if "/" in name or "\\" in name or not path.is_file() or path.suffix not in CONTENT_TYPES:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such file: /static/{name}")
        self.send_bytes(path.read_bytes(), CONTENT_TYPES[path.suffix], {"Cache-Control": "no-cache"})

    def send_json(self, obj: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        """Send `obj` as a JSON response with `status`."""
        self.send_bytes(json.dumps(obj).encode(), "application/json", status=status)

    def send_bytes(
        self, data: bytes, content_type: str, headers: dict | None = None, status: HTTPStatus = HTTPStatus.OK
    ) -> None:
        """Send `data` with its content type, extra headers and `status`."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        """Request logs go to the debug log, not stderr."""
        log.debug("%s %s", self.address_string(), format % args)


class PlayServer(ThreadingHTTPServer):
    daemon_threads = True  # open event streams must not keep the process alive

    def __init__(self, address: tuple[str, int], session: PlaySession, model_path: str | None, prompt_name: str):
        self.session, self.model_path, self.prompt_name = session, model_path, prompt_name
        super().__init__(address, PlayHandler)

    @property
    def url(self) -> str:
        """The page's URL (a wildcard host shown as the loopback address)."""
        host, port = self.server_address[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        return f"http://{host}:{port}/"

    def handle_error(self, request, client_address) -> None:
        """Log errors of a request, except a closed connection (a closed tab), which is routine."""
        if not isinstance(sys.exc_info()[1], ConnectionError):  # closed tabs are routine
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        """Close the play session (ending event streams), then the socket."""
        self.session.close()
        super().server_close()


def make_server(
    world: WorldModel,
    prompt: np.ndarray | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    model_path: str | None = None,
    prompt_name: str | None = None,
    warm_up: bool = False,
) -> PlayServer:
    """A server (not yet serving: call serve_forever) whose session starts from `prompt`, or the bundle's sample
    prompt when None. Port 0 picks a free port; `server.url` says which. `warm_up` steps through one window
    cycle first (PlaySession.warm_up), for a compiled world."""
    if prompt is None:
        if world.prompt is None:
            raise ConfigError("this world model has no sample prompt: pass --prompt VIDEO|IMAGE")
        prompt, prompt_name = world.prompt, prompt_name or "the bundle's sample prompt"
    session = PlaySession(
        world, np.array(prompt, dtype=np.uint8)
    )  # a writable copy: torch.from_numpy warns on read-only arrays
    if warm_up:
        session.warm_up()
    session.reset()
    try:
        return PlayServer((host, port), session, model_path, prompt_name or "prompt frames")
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): pass another --port, or --port 0 for any free one"
        ) from None


def play_command(args) -> None:
    """`genie play`: serve a bundle as a playable page on `args.host`:`args.port` until Ctrl-C. Raises ConfigError
    for bad sampling settings, a bundle without a sample prompt and no --prompt, or a port that cannot be bound;
    RunError for a file that is not a bundle; VideoError for an unreadable prompt."""
    world = WorldModel.load(args.model, device=resolve_device(args.device))
    world.set_sampling(
        args.steps, args.temperature, args.slide, getattr(args, "guidance", None)
    )  # a bad value is a ConfigError
    if args.compile:
        # compiled (and on a GPU, CUDA graphs recorded) for every cache length before the page opens
        print("compiling the per-frame passes: one cycle of the context window is stepped first (minutes on a CPU)")
        world.compile_sampling()
    prompt = None
    if args.prompt:
        # the first frames of a video: the world keeps at most max_frames - 1 of them as context
        span = span_frames(world.dynamics.cfg.max_frames - 1, world.frame_stride)  # frames one world step apart
        prompt = read_frames(args.prompt, resolution=world.resolution, max_frames=span, fit=world.fit)
        prompt = step_frames(prompt, world.frame_stride)
    elif world.prompt is None:
        raise ConfigError(f"{args.model} holds no sample prompt: pass --prompt VIDEO|IMAGE")
    server = make_server(
        world, prompt, args.host, args.port, model_path=str(args.model), prompt_name=args.prompt, warm_up=args.compile
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page")
    height, width = world.frame_size
    print(f"genie play: {world.num_actions} latent actions, {width}x{height} (width x height), {world.device}")
    action_map = server.session.action_map
    if action_map is not None:
        names = action_map.code_names()
        print("latent actions: " + ", ".join(f"{c}={n or '?'}" for c, n in enumerate(names)))
        keys = {"ArrowLeft": "left", "ArrowRight": "right", "ArrowUp": "up", "ArrowDown": "down", " ": "space"}
        print("keys: " + ", ".join(f"{keys[k]} -> {c} ({names[c]})" for k, c in action_map.key_bindings().items()))
    print(f"open {server.url}  (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        try:
            webbrowser.open(server.url)
        except Exception:  # a headless machine has no browser; the URL is printed
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        server.server_close()
