"""The language server: pygls handles the protocol, an Engine per open document the words.

Threads. The message loop (asyncio) reads messages, keeps the documents in step and answers
at once whatever needs no engine. Everything the engine does -- suggesting, learning, building
a document's engine -- runs in order on one worker thread, so the predictors (which need not be
thread-safe) see one call at a time, and a slow model delays only the completion waiting for it;
the worker writes each completion's answer itself. Loading a model runs on a thread of its own,
and a completion asked for meanwhile waits for it.

Overtaken requests. Each completion request is stamped when it is read with the document's
version and its place among that document's requests. When its turn comes, a request that a
newer edit or a newer completion request for the same document has overtaken is answered with
an empty, incomplete list, without asking the engine; ``$/cancelRequest`` answers it with the
RequestCancelled error (at once when it has not started, else when it ends).

Input. The loop reads messages itself (not pygls's reader), so that a body that is not JSON,
a message that is not JSON-RPC, bad parameters, and requests before ``initialize`` or after
``shutdown`` are answered with JSON-RPC errors instead of being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cattrs import transform_error
from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.uris import to_fs_path

from predtext.lsp.documents import Document
from predtext.lsp.positions import ENCODINGS, UTF16, to_units
from predtext.lsp.settings import Settings, may_learn, updated
from predtext.text import CLOSING_MARKS

log = logging.getLogger("predtext.lsp")

#: Longest text learned from one save (the lines new since the last save or the opening).
MAX_LEARN_CHARS = 200_000
#: Largest message body read (a 5 MB document, escaped, is well under it).
MAX_BODY_BYTES = 256 << 20

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32602, -32603
SERVER_NOT_INITIALIZED, REQUEST_CANCELLED = -32002, -32800

EngineLoader = Callable[[Settings], Any]


def _version() -> str:
    """The installed package's version, told to the client in the initialize answer."""
    try:
        return importlib.metadata.version("predtext")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path
        return "unknown"


def load_engine(settings: Settings):
    """The engine the settings name: their model and config, else the user's (or the defaults)."""
    from predtext.engine import Engine, parse_context
    from predtext.engine.config import load_config

    engine = Engine.load(model=settings.model, config=load_config(settings.config))
    parse_context("warm up")      # builds the word patterns now, not on the first keystroke
    # Off the message loop (this runs on the load thread), and requests wait for it: the
    # first completion has the user's history, as every later one does.
    engine.wait_prepared()
    return engine


class _Worker:
    """One daemon thread running calls in order (daemon: a hung model cannot keep the
    process from exiting after ``exit``)."""

    def __init__(self):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="predtext-lsp-worker", daemon=True).start()

    def submit(self, function: Callable, *args, future: Future | None = None) -> Future:
        """Run ``function(*args)`` in turn; its result or error goes to ``future`` (a new one
        unless given; one cancelled before its turn is skipped)."""
        future = Future() if future is None else future
        self._calls.put((future, function, args))
        return future

    def submit_to(self, future: Future, function: Callable, *args) -> None:
        self.submit(function, *args, future=future)

    def _serve(self) -> None:
        while True:
            future, function, args = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as error:      # handed to the request waiting for it
                future.set_exception(error)


class _OpenDocument:
    """A document, its engine (made on the worker on first use) and what it held when opened
    or last learned from (so a save teaches only what is new)."""

    def __init__(self, document: Document):
        self.document = document
        self.engine = None
        self.engine_generation = -1
        self.seen_lines: list | None = list(document.lines)
        self.known: set | None = None


class PredtextProtocol(LanguageServerProtocol):
    """pygls's protocol, less its own copy of each document: the server keeps them (pygls's
    workspace re-splits the whole text on every incremental edit, which a 5 MB document
    cannot afford, and counts some columns differently)."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


class PredtextServer(LanguageServer):
    """The predtext language server. ``engine_loader(settings)`` builds the base engine (by
    default :func:`load_engine`); each document gets an Engine over its predictors."""

    def __init__(self, engine_loader: EngineLoader = load_engine):
        super().__init__("predtext", _version(), protocol_cls=PredtextProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.engine_loader = engine_loader
        self.settings = Settings()
        self.encoding = UTF16
        self.roots: list[Path] = []
        self.documents: dict[str, _OpenDocument] = {}
        self.worker = _Worker()
        self._engine = None                 # the base engine, once loaded
        self._generation = 0                # bumped by each load, so documents rebuild theirs
        self._ready: Future = Future()      # done when the first load ends (either way)
        self._jobs: dict[Any, Future] = {}         # completion requests not yet answered
        self._cancelled: set = set()                # ... cancelled while running
        self._latest: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = None
        self._initialized = self._shut_down = False
        self.exit_code: int | None = None

    # ------------------------------------------------------------------ the engine

    def load(self, settings: Settings) -> None:
        """Load the engine for ``settings`` in the background; it replaces the current one."""
        threading.Thread(target=self._load, args=(settings,), name="predtext-lsp-load",
                         daemon=True).start()

    def _load(self, settings: Settings) -> None:
        try:
            engine = self.engine_loader(settings)
        except Exception as error:      # reported; the engine in use (if any) stays
            log.warning("the model could not be loaded: %s", error)
            self.notify_user(f"predtext: the model could not be loaded: {error}",
                             types.MessageType.Error)
        else:
            self.worker.submit(self._install, engine).result()
            names = ", ".join(p.name for p in engine.predictors) or "none"
            self.notify_user(f"predtext: engine ready (predictors: {names})",
                             types.MessageType.Info, log_only=True)
        finally:
            if not self._ready.done():
                self._ready.set_result(None)

    def _install(self, engine) -> None:          # on the worker
        old, self._engine = self._engine, engine
        self._generation += 1
        for state in self.documents.values():
            _close(state.engine)
            state.engine = None
        _close(old)

    def _document_engine(self, state: _OpenDocument):     # on the worker
        """The document's own Engine: the base engine's predictors and weights, with its own
        record of what was offered for the word being typed."""
        if state.engine is None or state.engine_generation != self._generation:
            from predtext.engine import Engine

            _close(state.engine)
            base = self._engine
            state.engine = Engine([(p, base.weight(p)) for p in base.predictors], base.config)
            state.engine_generation = self._generation
        return state.engine

    # ------------------------------------------------------------------ completion

    def request_completion(self, msg_id, uri: str, position: types.Position) -> None:
        """Take a completion request as it is read (on the loop): answer it at once when no
        engine is needed, else stamp it (see the module doc) and queue it for the worker,
        which writes the answer itself -- one thread hop fewer per keystroke than handing the
        answer back to the loop."""
        state = self.documents.get(uri)
        if state is None:
            self._error(msg_id, INVALID_PARAMS, f"Invalid params: document not open: {uri}")
            return
        if not self.settings.completes(state.document.language_id):
            self._result(msg_id, {"isIncomplete": False, "items": []})
            return
        sequence = self._latest.get(uri, 0) + 1
        self._latest[uri] = sequence
        job: Future = Future()
        self._jobs[msg_id] = job
        args = (msg_id, uri, sequence, state.document.version, position)
        if self._ready.done():
            # Once the loop has handled what it has already read (an edit, a newer request,
            # a cancellation that came with this one), so that the worker finds it handled.
            self._loop.call_soon(self.worker.submit_to, job, self._complete, *args)
        else:       # the model is loading: the request waits for it (newer ones overtake it)
            self._ready.add_done_callback(
                lambda _: self.worker.submit(self._complete, *args, future=job))

    def cancel(self, msg_id) -> bool:
        """``$/cancelRequest`` for a completion: answered cancelled now if it has not started,
        else when it ends. False when ``msg_id`` is no completion of ours."""
        job = self._jobs.pop(msg_id, None)
        if job is None:
            return False
        if job.cancel():
            self._error(msg_id, REQUEST_CANCELLED, f"Request {msg_id!r} was cancelled")
        else:
            self._cancelled.add(msg_id)
        return True

    def overtaken(self, uri: str, sequence: int, version) -> bool:
        state = self.documents.get(uri)
        return (state is None or state.document.version != version
                or self._latest.get(uri) != sequence)

    def _complete(self, msg_id, uri: str, sequence: int, version, position) -> None:  # worker
        try:
            result = self._completion_list(uri, sequence, version, position)
        except Exception as error:
            log.exception("completion failed")
            self._jobs.pop(msg_id, None)
            self._error(msg_id, INTERNAL_ERROR, f"Internal error: {error}", from_worker=True)
            return
        self._jobs.pop(msg_id, None)
        if msg_id in self._cancelled:
            self._cancelled.discard(msg_id)
            self._error(msg_id, REQUEST_CANCELLED, f"Request {msg_id!r} was cancelled",
                        from_worker=True)
        else:
            self._result(msg_id, result, from_worker=True)

    def _completion_list(self, uri: str, sequence: int, version,
                         position) -> dict:        # on the worker
        state = self.documents.get(uri)
        if state is None or self._engine is None or self.overtaken(uri, sequence, version):
            return _EMPTY()
        document = state.document
        with document.lock:
            if document.version != version:
                return _EMPTY()
            line, index = document.index(position.line, position.character)
            before = document.text_before(line, index)
            content = document.content(line)
            encoding = document.encoding
        suggestions = self._document_engine(state).suggest(before, self.settings.k)
        if self.overtaken(uri, sequence, version):
            return _EMPTY()       # the ranges would be for a text the editor no longer has
        return {"isIncomplete": True,
                "items": completion_items(suggestions, content, line, index, encoding)}

    # ------------------------------------------------------------------ learning

    def learn_saved(self, uri: str) -> None:
        state = self.documents.get(uri)
        if state is None or not uri.startswith("file:"):
            return
        path = to_fs_path(uri)
        if path is None or not may_learn(Path(path), self.settings, self.roots):
            return
        if self._ready.done():
            self.worker.submit(self._learn, state)
        else:       # saved while the model loads: learned once it is in
            self._ready.add_done_callback(lambda _: self.worker.submit(self._learn, state))

    def _learn(self, state: _OpenDocument) -> None:            # on the worker
        if self._engine is None:
            return
        document = state.document
        with document.lock:
            lines = [document.content(i) for i in range(len(document.lines))]
        if state.known is None:
            state.known = {line.strip() for line in map(_content, state.seen_lines)}
            state.seen_lines = None
        new = [line for line in lines if line.strip() and line.strip() not in state.known]
        state.known.update(line.strip() for line in new)
        text = "\n".join(new)[:MAX_LEARN_CHARS]
        if text:
            self._document_engine(state).learn(text)
            log.info("learned %d new line(s) from %s", len(new), document.uri)

    def forget(self) -> None:                                   # on the worker
        if self._engine is not None:
            self._engine.forget()
            self._generation += 1      # each document's engine remembers its last answer

    # ------------------------------------------------------------------ talking to the user

    def notify_user(self, message: str, kind=types.MessageType.Info, log_only=False) -> None:
        """``window/showMessage`` (or only ``window/logMessage``), from any thread."""
        def send():
            if log_only:
                self.window_log_message(types.LogMessageParams(type=kind, message=message))
            else:
                self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        if self._loop is not None and self._writer is not None:
            with contextlib.suppress(RuntimeError):     # the loop has ended
                self._loop.call_soon_threadsafe(send)

    def apply_settings(self, options, reload: bool = True) -> None:
        """Take the settings ``options`` changes; a new model or config is loaded (unless
        ``reload`` is false); a bad setting is shown to the user and keeps its value."""
        settings, problems = updated(self.settings, options)
        for problem in problems:
            self.notify_user(f"predtext: {problem}", types.MessageType.Warning)
        changed = (settings.model, settings.config) != (self.settings.model, self.settings.config)
        self.settings = settings
        if reload and changed:
            self.load(settings)

    # ------------------------------------------------------------------ the message loop

    def _send(self, payload: dict, from_worker: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        data = b"Content-Length: %d\r\n\r\n" % len(body) + body
        if from_worker and not getattr(self._writer, "thread_safe", False):
            self._loop.call_soon_threadsafe(self._writer.write, data)    # (a TCP stream)
        else:
            self._writer.write(data)

    def _error(self, msg_id, code: int, message: str, from_worker: bool = False) -> None:
        self._send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}},
                   from_worker)

    def _result(self, msg_id, result: dict, from_worker: bool = False) -> None:
        self._send({"jsonrpc": "2.0", "id": msg_id, "result": result}, from_worker)

    async def serve(self, reader: asyncio.StreamReader, writer) -> int:
        """Read and handle messages until ``exit`` or the end of input; the exit status."""
        self._loop = asyncio.get_running_loop()
        self._writer = writer
        self.protocol.set_writer(writer)
        while self.exit_code is None:
            length = None
            while True:               # the header: lines up to an empty one
                try:
                    line = await reader.readline()
                except ValueError:    # a line longer than the reader's limit: not a header
                    self._error(None, PARSE_ERROR, "Parse error: header line too long")
                    continue
                if not line:
                    if self.exit_code is not None:
                        return self.exit_code
                    return int(not self._shut_down)
                if not line.strip():
                    if length is not None:
                        break
                    continue          # blank lines before a header: skipped
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.strip().lower() == "content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self._error(None, PARSE_ERROR, f"Parse error: bad Content-Length {length}")
                continue
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return self.exit_code if self.exit_code is not None else 1
            try:
                self._dispatch(body)
            except SystemExit as stop:      # pygls's `exit` handler ends the process this way
                self.exit_code = stop.code if isinstance(stop.code, int) else 0
        return self.exit_code

    def _dispatch(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            self._error(None, PARSE_ERROR, f"Parse error: {error}")
            return
        msg_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool):
            msg_id = None
        if (not isinstance(data, dict) or data.get("jsonrpc") != "2.0"
                or not isinstance(data.get("method", ""), str)
                or ("method" not in data and "result" not in data and "error" not in data)):
            self._error(msg_id, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
            return
        method = data.get("method")
        is_request = method is not None and "id" in data
        if method is not None and not self._initialized and method not in (
                types.INITIALIZE, types.EXIT):
            if is_request:
                self._error(msg_id, SERVER_NOT_INITIALIZED, "the server is not initialized")
            return
        if is_request and self._shut_down:
            self._error(msg_id, INVALID_REQUEST, "Invalid Request: the server is shut down")
            return
        if method == types.TEXT_DOCUMENT_DID_CHANGE and (
                plain := _plain_changes(data.get("params"))) is not None:
            try:
                self.apply_changes(*plain)
            except Exception:
                log.exception("handling %s failed", method)
            return
        if method == types.TEXT_DOCUMENT_COMPLETION and is_request and msg_id is not None and (
                plain := _plain_position(data.get("params"))) is not None:
            self.request_completion(msg_id, *plain)
            return
        try:
            message = self.protocol.structure_message(data)
        except Exception as error:
            if is_request:
                self._error(msg_id, getattr(error, "code", INTERNAL_ERROR),
                            f"Invalid params for {method}: {_cause(error)}")
            else:
                log.warning("ignored %s with bad parameters: %s", method, _cause(error))
            return
        if method == types.INITIALIZE:
            self._initialized = True
        elif method == types.SHUTDOWN:
            self._shut_down = True
        elif method == types.TEXT_DOCUMENT_COMPLETION and is_request:
            params = message.params
            self.request_completion(message.id, params.text_document.uri, params.position)
            return
        elif method == types.CANCEL_REQUEST and self.cancel(getattr(message.params, "id", None)):
            return
        try:
            self.protocol.handle_message(message)
        except SystemExit:
            raise
        except Exception as error:
            log.exception("handling %s failed", method)
            if is_request:
                self._error(msg_id, INTERNAL_ERROR, f"Internal error: {error}")

    def apply_changes(self, uri: str, version: int, changes) -> None:
        """Edit the document: ``changes`` are ``(start, end, text)``, LSP positions as
        ``(line, character)``, or ``(None, None, text)`` for the whole text."""
        state = self.documents.get(uri)
        if state is None:
            log.warning("change to a document not open: %s", uri)
            return
        document = state.document
        with document.lock:
            for start, end, text in changes:
                if start is None:
                    document.replace_all(text, version)
                else:
                    document.edit(start, end, text, version)
            document.version = version

    # ------------------------------------------------------------------ transports

    def run_stdio(self) -> int:
        """Serve on standard input and output; the exit status."""
        stdout = sys.stdout.buffer
        sys.stdout = sys.stderr        # a stray print() must not corrupt the protocol
        return asyncio.run(self._stdio(stdout))

    async def _stdio(self, stdout) -> int:
        reader = asyncio.StreamReader(limit=1 << 20)
        loop = asyncio.get_running_loop()
        try:       # a pipe or a socket: read by the loop itself (no thread hop per message)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         sys.stdin.buffer)
        except (OSError, ValueError):      # a file, which the loop cannot wait on
            threading.Thread(target=_read_into, args=(loop, reader, sys.stdin.fileno()),
                             name="predtext-lsp-stdin", daemon=True).start()
        return await self.serve(reader, _StdoutWriter(stdout))

    def run_tcp(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve one client on ``host:port`` (loopback by default); the exit status."""
        return asyncio.run(self._tcp(host, port))

    async def _tcp(self, host: str, port: int) -> int:
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        async def connected(reader, writer):
            if done.done() or self._writer is not None:
                writer.close()             # one editor per server
                return
            try:
                code = await self.serve(reader, writer)
            finally:
                writer.close()
            if not done.done():
                done.set_result(code)

        server = await asyncio.start_server(connected, host, port, limit=1 << 20)
        log.info("predtext lsp listening on %s:%d", host, port)
        async with server:
            return await done


def _read_into(loop, reader: asyncio.StreamReader, fd: int) -> None:
    """Feed what ``fd`` holds to ``reader``, from a thread of its own."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            chunk = b""
        try:
            if not chunk:
                loop.call_soon_threadsafe(reader.feed_eof)
                return
            loop.call_soon_threadsafe(reader.feed_data, chunk)
        except RuntimeError:       # the loop has ended
            return


class _StdoutWriter:
    """Writes whole messages to standard output (pygls's writer interface), from any thread."""

    thread_safe = True

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError):    # the editor went away, or we closed
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()


def _plain_changes(params):
    """``(uri, version, changes)`` of a ``didChange`` of the usual shape, read straight from
    the JSON (see :meth:`PredtextServer.apply_changes`); None for any other, which pygls then
    checks and hands to ``did_change``. (Building lsprotocol objects for it cost more than
    half a millisecond of the message loop on every keystroke.)"""
    try:
        uri, version = params["textDocument"]["uri"], params["textDocument"]["version"]
        changes = []
        for change in params["contentChanges"]:
            if "range" not in change:
                changes.append((None, None, change["text"]))
                continue
            start, end = change["range"]["start"], change["range"]["end"]
            changes.append(((start["line"], start["character"]),
                            (end["line"], end["character"]), change["text"]))
    except (KeyError, TypeError):
        return None
    numbers = [version] + [n for start, end, _ in changes if start is not None
                           for n in start + end]
    if (not isinstance(uri, str) or not all(type(n) is int and n >= 0 for n in numbers)
            or not all(isinstance(text, str) for _, _, text in changes)):
        return None
    return uri, version, changes


def _plain_position(params):
    """``(uri, position)`` of a completion request of the usual shape, read straight from the
    JSON; None for any other, which lsprotocol then checks (its objects cost some 30-80 us of
    the message loop a keystroke)."""
    try:
        document, position = params["textDocument"], params["position"]
        uri, line, character = document["uri"], position["line"], position["character"]
        context = params.get("context")
    except (KeyError, TypeError, AttributeError):
        return None
    if (not isinstance(uri, str) or len(document) != 1 or len(position) != 2
            or not all(type(n) is int and 0 <= n < 2**31 for n in (line, character))
            or not set(params) <= {"textDocument", "position", "context"}
            or (context is not None and not _plain_context(context))):
        return None
    return uri, types.Position(line=line, character=character)


def _plain_context(context) -> bool:
    """Whether a completion ``context`` is one lsprotocol would take (the server reads none
    of it)."""
    return (isinstance(context, dict) and set(context) <= {"triggerKind", "triggerCharacter"}
            and context.get("triggerKind") in (1, 2, 3) and type(context["triggerKind"]) is int
            and isinstance(context.get("triggerCharacter", ""), str))


def _EMPTY() -> dict:
    return {"isIncomplete": True, "items": []}


def _content(line: str) -> str:
    return line.rstrip("\r\n")


def _cause(error: BaseException) -> str:
    """What was wrong with the parameters, from the error cattrs raised under pygls's
    ("required field missing @ $.params.position.character")."""
    cause = error.__cause__ or error
    if isinstance(cause, ClassValidationError):
        return "; ".join(transform_error(cause, path="$")) or str(cause)
    return str(cause) or type(cause).__name__


def _close(engine) -> None:
    if engine is not None:
        try:
            engine.close()
        except Exception:           # best effort: never take the server down
            log.debug("closing an engine failed", exc_info=True)


def describe(suggestion) -> str:
    """The item's detail: the predictors that proposed it and its score (``ngram+history 0.41``)."""
    return f"{'+'.join(suggestion.sources) or '?'} {suggestion.score:.2f}"


def completion_items(suggestions, content: str, line: int, index: int,
                     encoding: str = UTF16) -> list[dict]:
    """Completion items for the engine's ``suggestions`` at ``(line, index)``, best first, as
    the JSON the protocol sends (built directly: converting lsprotocol objects costs more than
    the engine's answer on every keystroke).

    Each replaces the typed part of the word (``replace`` characters before the cursor) and
    brings the space after it, unless a space or a closing mark already follows, as the
    terminal does. ``filterText`` is the word itself when it continues what was typed, so the
    editor may filter while the next answer comes; else (an abbreviation's expansion, another
    case) the typed part, so the editor does not hide it.
    """
    following = content[index:index + 1]
    space = "" if following and (following.isspace() or following in CLOSING_MARKS) else " "
    end = {"line": line, "character": to_units(content, index, encoding)}
    items = []
    for rank, suggestion in enumerate(suggestions):
        if suggestion.replace > index:
            continue                 # a word does not run across lines
        start = index - suggestion.replace
        typed = content[start:index]
        continues = suggestion.text.casefold().startswith(typed.casefold())
        items.append({
            "label": suggestion.text, "kind": types.CompletionItemKind.Text.value,
            "detail": describe(suggestion), "sortText": f"{rank:03d}",
            "filterText": suggestion.text if continues else typed,
            "insertTextFormat": types.InsertTextFormat.PlainText.value,
            "textEdit": {"range": {"start": {"line": line,
                                             "character": to_units(content, start, encoding)},
                                   "end": end},
                         "newText": suggestion.text + space}})
    return items


# ---------------------------------------------------------------------- the handlers


def build_server(engine_loader: EngineLoader = load_engine) -> PredtextServer:
    """A :class:`PredtextServer` with its handlers; call ``run_stdio()`` or ``run_tcp(port)``."""
    server = PredtextServer(engine_loader)

    @server.feature(types.INITIALIZE)
    def initialize(ls: PredtextServer, params: types.InitializeParams):
        encoding = ls.workspace.position_encoding
        ls.encoding = encoding if encoding in ENCODINGS else UTF16
        folders = [f.uri for f in params.workspace_folders or ()] or [params.root_uri or ""]
        ls.roots = [Path(p) for p in (to_fs_path(u) for u in folders if u and u.startswith("file:"))
                    if p]
        ls.apply_settings(params.initialization_options, reload=False)
        ls.load(ls.settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: PredtextServer, params: types.DidChangeConfigurationParams):
        ls.apply_settings(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PredtextServer, params: types.DidOpenTextDocumentParams):
        item = params.text_document
        document = Document(item.uri, item.text, item.version, item.language_id, ls.encoding)
        old = ls.documents.get(item.uri)
        ls.documents[item.uri] = _OpenDocument(document)
        if old is not None:
            ls.worker.submit(_close, old.engine)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PredtextServer, params: types.DidChangeTextDocumentParams):
        # (The loop applies the usual shape itself: PredtextServer._changed.)
        changes = []
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                changes.append(((r.start.line, r.start.character),
                                (r.end.line, r.end.character), change.text))
            else:
                changes.append((None, None, change.text))
        ls.apply_changes(params.text_document.uri, params.text_document.version, changes)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PredtextServer, params: types.DidCloseTextDocumentParams):
        state = ls.documents.pop(params.text_document.uri, None)
        ls._latest.pop(params.text_document.uri, None)
        if state is not None:
            ls.worker.submit(_close, state.engine)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    def did_save(ls: PredtextServer, params: types.DidSaveTextDocumentParams):
        ls.learn_saved(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[" "]))
    def completion(ls: PredtextServer, params: types.CompletionParams):
        # Registered for the capability; the loop hands completion requests to
        # request_completion, which answers them from the worker.
        raise JsonRpcInvalidParams("completion requests are answered by the server's loop")

    @server.command("predtext.forget")
    async def forget(ls: PredtextServer, *args):
        """Erase what was learned (the stored history too), as ``predtext forget`` does."""
        await asyncio.wrap_future(ls.worker.submit(ls.forget))

    return server
