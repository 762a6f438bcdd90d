"""Serve a fine-tuned model (or its export) over HTTP with JSON (``make serve``)::

    python -m tasks.serve --model out/dureader_qg/inference [--host 127.0.0.1] [--port 8189] [-o decode.num_beams=1]

    curl -s localhost:8189/predict -d '{"inputs": [{"context": "青石镇人口约3万。", "answer": "3万"}]}'
    -> {"predictions": ["青石镇有多少人口"]}

``POST /predict`` takes ``{"inputs": [record, ...]}`` (a record as ``tasks.pipeline`` takes it: a mapping of the
task's fields, or a text -- for a GLUE pair task a list ``[text_a, text_b]``, for VQA ``[image, question]``, for
SNLI-VE ``[image, hypothesis]``, for retrieval ``{"text": ..., "images": [...]}`` or ``{"image": ..., "texts":
[...]}``; an image a name in the region store, or with ``--detector`` an image file on the server, which clients
then choose: serve such a model to trusted clients only) and answers ``{"predictions": [...]}``, one per input
(a list of candidates with ``--num-return-sequences``), as ``tasks.pipeline`` gives them: the model folder's
``task.yaml`` settings, ``-o`` on top. ``GET /health`` answers the task, the model folder and the decoding
settings (null for a classifier). A bad request (not JSON, no ``inputs`` list, a record without a field, more
than ``--max-inputs`` records, a retrieval record counting the pairs it scores) is a 400 with ``{"error": "..."}``
naming the input (411 without a Content-Length, 413 above 16 MiB, 405 for another method); an error while
decoding is a 500 (and a traceback in the log). Connections are served in threads, requests decoded one at a
time, each as batches of ``decode.batch_size`` (a classifier's ``eval.batch_size``); the server listens on
127.0.0.1 unless ``--host`` says otherwise, and has no authentication. Ctrl-C or SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from paddle_unimo.fileio import DataError  # noqa: E402
from paddle_unimo.typed import ConfigError  # noqa: E402

from tasks.cli import add_runtime_argument, run_tool  # noqa: E402

logger = logging.getLogger("paddle_unimo")
MAX_BODY = 16 << 20  # bytes of one request
TIMEOUT = 30  # seconds a connection may stay silent
ROUTES = {"/health": "GET", "/predict": "POST"}


class BadRequest(ValueError):
    """A request the server refuses; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def body_size(headers) -> int:
    """The request body's length from its ``Content-Length``: 411 without one (chunked bodies included), 400 for
    one that is not a number."""
    value = headers.get("Content-Length")
    if value is None:
        raise BadRequest("no Content-Length (a chunked body is not read): send the JSON with its length", 411)
    if not value.strip().isdigit():
        raise BadRequest(f"Content-Length {value!r} is not a number of bytes")
    return int(value)


def parse_request(body: bytes, max_inputs: int, cost=lambda record: 1) -> list:
    """The ``inputs`` of a ``/predict`` body, each counting ``cost(record)`` toward ``max_inputs``; ``BadRequest``
    says what is wrong with it."""
    try:
        request = json.loads(body.decode("utf-8-sig"))  # a byte order mark is allowed, as in data files
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadRequest(f"the body is not UTF-8 JSON ({type(e).__name__}: {e})") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list):
        raise BadRequest('expected {"inputs": [record, ...]}')
    count = sum(map(cost, inputs))
    if count > max_inputs:
        raise BadRequest(f"{count} inputs; at most {max_inputs} per request (--max-inputs; a retrieval record "
                         "counts the pairs it scores)")
    return inputs


def make_server(pipeline, model: str, host: str, port: int, max_inputs: int = 256) -> ThreadingHTTPServer:
    """A server answering ``/predict`` and ``/health`` with ``pipeline``: connections are served in threads (a
    slow or silent client holds only its own, for ``TIMEOUT`` seconds at most), decoding one request at a time."""
    decode = getattr(pipeline.config, "decode", None)  # a classifier has none
    health = {"task": pipeline.task.name, "model": model, "decode": decode and dict(vars(decode)),
              **({"runtime": pipeline.runtime} if pipeline.runtime else {})}
    decoding = threading.Lock()
    cost = getattr(pipeline.runner, "pipeline_cost", lambda record: 1)  # retrieval: the pairs a record scores

    class Handler(BaseHTTPRequestHandler):
        timeout = TIMEOUT

        def answer(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if status >= 400:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client left before its answer
                self.close_connection = True
                logger.info("%s left before the %d answer", self.address_string(), status)

        def send_error(self, code, message=None, explain=None):
            """http.server's own refusals (a malformed request line, an unknown method) in JSON, as ours."""
            self.answer(code, {"error": message or self.responses.get(code, ("",))[0]})

        def discard(self, size: int) -> None:
            while size > 0:
                chunk = self.rfile.read(min(size, 1 << 20))
                if not chunk:
                    return
                size -= len(chunk)

        def route(self, method: str) -> bool:
            """True when ``method`` on this path is served; else answers 404 (no such path) or 405."""
            allowed = ROUTES.get(urlsplit(self.path).path)
            if allowed == method or (method, allowed) == ("HEAD", "GET"):
                return True
            if allowed is None:
                self.answer(404, {"error": f"no {self.path}; GET /health, POST /predict"})
            else:
                self.answer(405, {"error": f"{method} {self.path}: use {allowed}"}, {"Allow": allowed})
            return False

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.route(self.command):
                self.answer(200, health)

        do_HEAD = do_GET  # noqa: N815 (the headers of GET's answer)

        def do_PUT(self):  # noqa: N802
            self.route("PUT")

        do_DELETE = do_PATCH = do_PUT  # noqa: N815

        def do_POST(self):  # noqa: N802
            if not self.route("POST"):
                return
            try:
                size = body_size(self.headers)
                if size > MAX_BODY:
                    self.discard(min(size, 4 * MAX_BODY))  # so that the client, still sending, sees the answer
                    raise BadRequest(f"a body of {size} bytes; at most {MAX_BODY}", 413)
                try:
                    body = self.rfile.read(size)
                except TimeoutError:
                    raise BadRequest(f"the body did not arrive within {TIMEOUT} s", 408) from None
                if len(body) < size:
                    raise BadRequest(f"the body ended after {len(body)} of the {size} bytes of its Content-Length")
                inputs = parse_request(body, max_inputs, cost)
                with decoding:
                    predictions = pipeline(inputs)
            except BadRequest as e:
                self.answer(e.status, {"error": str(e)})
                return
            except DataError as e:
                self.answer(400, {"error": str(e)})
                return
            except Exception as e:  # the server stays up; the traceback goes to the log
                logger.exception("decoding a request failed")
                self.answer(500, {"error": f"{type(e).__name__}: {e}"})
                return
            self.answer(200, {"predictions": predictions})

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            logger.info("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0: any free one)")
    return int(text)


def run(argv) -> None:
    from tasks.pipeline import Pipeline
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned model folder (OUT/best) or its export")
    parser.add_argument("--config", help="the task YAML (default: the folder's task.yaml)")
    parser.add_argument("-o", "--override", action="append", default=[], help="section.key=value, e.g. "
                        "decode.num_beams=1; repeatable")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this "
                        "machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=port, default=8189, help="port to listen on (default 8189; 0: any free one)")
    parser.add_argument("--max-inputs", type=positive, default=256,
                        help="records per request (default 256; a retrieval record counts the pairs it scores)")
    parser.add_argument("--num-return-sequences", type=positive, default=1,
                        help="candidates per record (default 1; n > 1: each prediction is a list of n: the best "
                        "beams, or samples with -o decode.decode_strategy=sampling)")
    parser.add_argument("--regions", help="vision-language tasks: the region store (default: the run's data.regions)")
    parser.add_argument("--detector", help="vision-language tasks: the detector weights the store was extracted with "
                        "(its extraction.json; 'random' for a store of --random-weights), to take image files on "
                        "this machine as well")
    add_runtime_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipeline = Pipeline(args.model, args.override, args.config, args.num_return_sequences, args.regions,
                        args.detector, args.runtime)
    try:
        server = make_server(pipeline, args.model, args.host, args.port, args.max_inputs)
    except OSError as e:
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen there ({e.strerror}); PORT= picks "
                          "another port") from None
    logger.info("serving %s (%s) on http://%s:%d: POST /predict, GET /health", args.model, pipeline.task.name,
                *server.server_address[:2])

    def stop(signum, frame):  # SIGTERM (a scheduler, docker stop, systemd) stops as Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopped")
    finally:
        server.server_close()


def main(argv=None) -> int:
    return run_tool(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
