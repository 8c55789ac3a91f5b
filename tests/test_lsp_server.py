"""`predtext lsp` driven by real clients over stdio: pytest-lsp's client (on pygls) for the
editor's side of a session, and a raw JSON-RPC client for what an editor would never send
(malformed input) or must send in one write to be sure of the order the server reads it in
(a request and its cancellation; a request, an edit and a newer request).

The server runs as a subprocess with its own data directory and config (PREDTEXT_DATA_DIR,
PREDTEXT_CONFIG) over a small n-gram model built here; the expected suggestions come from an
Engine built here over the same model and config.
"""

import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types  # noqa: E402

import predtext  # noqa: E402
from predtext.engine import Engine, NGramModel  # noqa: E402

# The server runs the predtext this test imported (the installed one, or a source tree built
# in place), not whatever src/ holds.
PACKAGE_PARENT = str(Path(predtext.__file__).resolve().parent.parent)
TEXT = ("the apple and the application of the apple pie. the apple tree. an apple a day. "
        "the application form. the cat sat on the mat. the cat ran. caf\u00e9 au lait. "
        "the caf\u00e9 was open. we went to the caf\u00e9 again.\n") * 3
EMOJI = "\U0001F600"
CONFIG = """\
[engine]
time_budget_ms = 5000
[predictors.neural]
enabled = false
[predictors.dictionary]
enabled = false
[predictors.abbreviations]
enabled = false
[predictors.bigrams]
enabled = false
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """The model, config and environment of the server (and of the engine compared with)."""
    model = tmp_path / "model.ngram"
    NGramModel.from_text(TEXT).save(model)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(data))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(config))
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return {"model": str(model), "config": str(config), "data": data, "env": env,
            "tmp": tmp_path}


def expected(setup, *texts, k=6):
    """What a fresh engine over the same model and config says after each text in turn."""
    engine = Engine.load(model=setup["model"], config=setup["config"])
    engine.wait_prepared()      # as the server does before its first answer
    try:
        return [engine.suggest(text, k) for text in texts]
    finally:
        engine.close()


SERVER = [sys.executable, "-m", "predtext.cli", "lsp"]


def run(setup, scenario, encodings=None, options=None):
    """Start the server, initialize a pytest-lsp client, run ``scenario(client, result)``,
    shut down and exit."""
    async def main():
        client = pytest_lsp.make_test_lsp_client()
        await client.start_io(*SERVER, env=setup["env"])
        general = types.GeneralClientCapabilities(position_encodings=encodings) if encodings \
            else None
        init = {"model": setup["model"], **(options or {})}
        result = await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(general=general),
            initialization_options=init,
            workspace_folders=[types.WorkspaceFolder(uri=setup["tmp"].as_uri(), name="tmp")]))
        try:
            await scenario(client, result)
        finally:
            await client.shutdown_session()
        return client._server.returncode
    return asyncio.run(asyncio.wait_for(main(), 120))


def open_document(client, uri, text, language="plaintext", version=1):
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version,
                                             text=text)))


async def complete(client, uri, line, character):
    return await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character)))


def edits(result):
    return [(item.label, item.text_edit.new_text, item.text_edit.range.start.character,
             item.text_edit.range.end.character, item.text_edit.range.start.line)
            for item in result.items]


# ---------------------------------------------------------------- completing


def test_completion_of_a_partial_word_replaces_the_typed_part(setup):
    text = "we ate the apple pie. the app"
    (want,) = expected(setup, text)
    assert want, "the model must have something to say here"

    async def scenario(client, init):
        assert init.capabilities.position_encoding == "utf-16"
        assert init.capabilities.completion_provider.trigger_characters == (" ",)
        assert init.capabilities.text_document_sync.change == types.TextDocumentSyncKind.Incremental
        open_document(client, "file:///doc.txt", text)
        result = await complete(client, "file:///doc.txt", 0, len(text))
        assert result.is_incomplete
        assert [item.label for item in result.items] == [s.text for s in want]
        sort_texts = [item.sort_text for item in result.items]
        assert sort_texts == sorted(sort_texts)
        for item, suggestion in zip(result.items, want):
            assert item.text_edit.new_text == suggestion.text + " "
            assert item.text_edit.range.start == types.Position(line=0, character=len(text) - 3)
            assert item.text_edit.range.end == types.Position(line=0, character=len(text))
            assert item.detail.startswith("+".join(suggestion.sources))

    assert run(setup, scenario) == 0


def test_next_word_after_a_space_and_no_space_added_before_one(setup):
    text = "an apple a day. the cat "
    (want,) = expected(setup, text)
    assert want

    async def scenario(client, init):
        open_document(client, "file:///doc.md", text + "\n", language="markdown")
        result = await complete(client, "file:///doc.md", 0, len(text))
        assert [item.label for item in result.items] == [s.text for s in want]
        assert all(start == end == len(text) for _, _, start, end, _ in edits(result))
        # The cursor before a space: the word comes without one.
        open_document(client, "file:///two.txt", "the app mat")
        result = await complete(client, "file:///two.txt", 0, 7)
        assert result.items and all(new == label for label, new, *_ in edits(result))

    assert run(setup, scenario) == 0


@pytest.mark.parametrize("encoding", [None, "utf-8", "utf-32"])
def test_positions_after_emoji_and_crlf_in_each_encoding(setup, encoding):
    def units(s):
        if encoding == "utf-8":
            return len(s.encode("utf-8"))
        if encoding == "utf-32":
            return len(s)
        return len(s.encode("utf-16-le")) // 2

    first = "the cat sat.\r\n"
    line = EMOJI + EMOJI + " the app"
    marked = "the cat. the caf"
    (want_app, want_caf) = expected(setup, first + line, first + line + "\r\n" + marked)
    assert want_app and want_caf

    async def scenario(client, init):
        assert init.capabilities.position_encoding == (encoding or "utf-16")
        open_document(client, "file:///e.txt", first + line + "\r\n" + marked + "\r\nend")
        result = await complete(client, "file:///e.txt", 1, units(line))
        assert [item.label for item in result.items] == [s.text for s in want_app]
        for _, _, start, end, line_number in edits(result):
            assert (line_number, start, end) == (1, units(line[:-3]), units(line))
        result = await complete(client, "file:///e.txt", 2, units(marked))
        assert [item.label for item in result.items] == [s.text for s in want_caf]
        assert all(start == units(marked[:-3]) for _, _, start, _, _ in edits(result))

    assert run(setup, scenario, encodings=[encoding] if encoding else None) == 0


def test_a_word_with_a_combining_mark_is_replaced_whole(setup):
    line = "the cafe\u0301"            # e + combining acute: the mark is part of the word
    (want,) = expected(setup, line)

    async def scenario(client, init):
        open_document(client, "file:///m.txt", line)
        result = await complete(client, "file:///m.txt", 0, len(line.encode("utf-16-le")) // 2)
        assert [item.label for item in result.items] == [s.text for s in want]
        assert all(start == 4 and end == 9 for _, _, start, end, _ in edits(result))

    assert run(setup, scenario) == 0


def test_incremental_and_full_changes(setup):
    final = "the cat sat.\r\nthe app"
    (want,) = expected(setup, final)
    assert want

    async def scenario(client, init):
        uri = "file:///inc.txt"
        open_document(client, uri, "a dog " + EMOJI + " ran\nxx")

        def change(version, *changes):
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=list(changes)))

        def partial(l1, c1, l2, c2, text):
            return types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=l1, character=c1),
                                  end=types.Position(line=l2, character=c2)), text=text)

        change(2, partial(0, 0, 0, 5, "the cat"))          # "the cat " + emoji + " ran\nxx"
        change(3, partial(0, 8, 0, 10, ""))                # the emoji: two UTF-16 units
        change(4, partial(0, 8, 1, 2, "sat.\r\nthe ap"))   # across the line end
        change(5, partial(0, 7, 0, 12, " sat."), partial(1, 6, 1, 6, "p"))
        result = await complete(client, uri, 1, 7)
        assert [item.label for item in result.items] == [s.text for s in want]
        change(6, types.TextDocumentContentChangeWholeDocument(text="the cat sat.\r\nthe app"))
        again = await complete(client, uri, 1, 7)
        assert [item.label for item in again.items] == [s.text for s in want]

    assert run(setup, scenario) == 0


def test_each_document_has_its_own_context_and_code_is_left_alone(setup):
    one, two = "the cat sat on the ", "an apple a day. the app"
    want_one, want_two = expected(setup, one), expected(setup, two)[0]

    async def scenario(client, init):
        open_document(client, "file:///1.txt", one)
        open_document(client, "file:///2.txt", two)
        open_document(client, "file:///3.py", "the app", language="python")
        for _ in range(2):          # alternating between them changes nothing
            first = await complete(client, "file:///1.txt", 0, len(one))
            second = await complete(client, "file:///2.txt", 0, len(two))
            assert [i.label for i in first.items] == [s.text for s in want_one[0]]
            assert [i.label for i in second.items] == [s.text for s in want_two]
        code = await complete(client, "file:///3.py", 0, 7)
        assert list(code.items) == [] and not code.is_incomplete
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"predtext": {"languages": ["python"], "k": 2}}))
        code = await complete(client, "file:///3.py", 0, 7)
        assert [i.label for i in code.items] == [s.text for s in want_two[:2]]

    assert run(setup, scenario) == 0


# ---------------------------------------------------------------- learning


def test_learning_on_save_is_a_setting_and_never_learns_secrets(setup):
    tmp = setup["tmp"]
    history = setup["data"] / "history.txt"
    notes, secret, excluded = tmp / "notes.txt", tmp / ".env", tmp / "private" / "diary.txt"

    async def save(client, path, text, version=2):
        uri = path.as_uri()
        open_document(client, uri, "old line\n")
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        # The save is learned on the worker, before any later completion there.
        await complete(client, uri, 0, 0)

    async def off(client, init):
        await save(client, notes, "old line\nzebras quietly graze\n")

    run(setup, off)
    assert not history.exists() or "zebras" not in history.read_text()

    async def on(client, init):
        await save(client, notes, "old line\nzebras quietly graze\n")
        await save(client, secret, "API_KEY=hunter2 zebras\n")
        await save(client, excluded, "my private zebras\n")
        client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=notes.as_uri())))  # nothing new
        await complete(client, notes.as_uri(), 0, 0)
        # What was learned is suggested: "zeb" completes to "zebras".
        open_document(client, "file:///new.txt", "the zeb")
        result = await complete(client, "file:///new.txt", 0, 7)
        assert "zebras" in [item.label for item in result.items]
        learned = history.read_text()
        assert learned.count("zebras quietly graze") == 1
        assert "old line" not in learned and "hunter2" not in learned and "private" not in learned
        # The command a running server takes for `predtext forget`.
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="predtext.forget"))
        assert not history.exists() or "zebras" not in history.read_text()
        result = await complete(client, "file:///new.txt", 0, 7)
        assert "zebras" not in [item.label for item in result.items]

    run(setup, on, options={"learning": True, "excludeFolders": ["private"]})


# ---------------------------------------------------------------- the protocol


class RawClient:
    """A JSON-RPC client on the server's standard input and output, byte for byte."""

    def __init__(self, setup, *args):
        self.process = subprocess.Popen(SERVER + list(args), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=setup["env"])
        self.messages = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self.messages.put(None)
                    return
                if line == b"\r\n":
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(stream.read(length)))

    @staticmethod
    def frame(message):
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def send(self, *messages):
        """All of ``messages`` in one write (the server reads them as one chunk)."""
        self.process.stdin.write(b"".join(map(self.frame, messages)))
        self.process.stdin.flush()

    def request(self, msg_id, method, params=None):
        return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}

    def notification(self, method, params=None):
        return {"jsonrpc": "2.0", "method": method, "params": params}

    def response(self, msg_id):
        """The response to ``msg_id`` (notifications from the server are skipped)."""
        while True:
            message = self.messages.get(timeout=60)
            assert message is not None, "the server closed its output"
            if message.get("id") == msg_id and "method" not in message:
                return message

    def initialize(self, setup, **options):
        self.send(self.request(0, "initialize", {
            "processId": None, "capabilities": {},
            "initializationOptions": {"model": setup["model"], **options}}))
        assert "capabilities" in self.response(0)["result"]
        self.send(self.notification("initialized", {}))

    def open(self, uri, text, version=1):
        self.send(self.notification("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "plaintext", "version": version, "text": text}}))

    def completion(self, msg_id, uri, line, character):
        return self.request(msg_id, "textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character}})

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def raw(setup):
    clients = []

    def start(*args):
        clients.append(RawClient(setup, *args))
        return clients[-1]
    yield start
    for client in clients:
        client.close()


def test_malformed_input_is_answered_with_json_rpc_errors(setup, raw):
    client = raw()
    client.send(client.completion(1, "file:///x.txt", 0, 0))
    assert client.response(1)["error"]["code"] == -32002          # not initialized yet
    client.initialize(setup)
    client.send(b'{"jsonrpc": "2.0", "id": 2, "method": ')          # not JSON
    error = client.response(None)["error"]
    assert error["code"] == -32700 and "Parse error" in error["message"]
    client.send(b"\xff\xfe not utf-8")
    assert client.response(None)["error"]["code"] == -32700
    client.send(b"[1, 2]")
    assert client.response(None)["error"]["code"] == -32600       # not a request object
    client.send({"id": 3, "method": "initialize"})                  # no "jsonrpc": "2.0"
    assert client.response(3)["error"]["code"] == -32600
    client.send(client.request(4, "textDocument/unknownThing", {}))
    assert client.response(4)["error"]["code"] == -32601
    client.send(client.request(5, "textDocument/completion", {"textDocument": {"uri": 7}}))
    error = client.response(5)["error"]
    assert error["code"] == -32602 and "position" in error["message"]
    client.send(client.completion(6, "file:///never-opened.txt", 0, 0))
    assert client.response(6)["error"]["code"] == -32602
    client.send(client.notification("textDocument/didChange", {"nonsense": True}),
                client.notification("unknown/notification", {}))
    # ... and after all that, the server still completes.
    client.open("file:///x.txt", "the app")
    client.send(client.completion(7, "file:///x.txt", 0, 7))
    result = client.response(7)["result"]
    want = [s.text for s in expected(setup, "the app")[0]]
    assert [item["label"] for item in result["items"]] == want
    client.send(client.request(8, "shutdown"))
    assert client.response(8)["result"] is None
    client.send(client.completion(9, "file:///x.txt", 0, 7))
    assert client.response(9)["error"]["code"] == -32600          # shut down
    client.send(client.notification("exit"))
    assert client.process.wait(timeout=30) == 0


def test_exit_without_shutdown_is_status_1(setup, raw):
    client = raw()
    client.initialize(setup)
    client.send(client.notification("exit"))
    assert client.process.wait(timeout=30) == 1


def test_a_cancelled_request_is_answered_cancelled(setup, raw):
    client = raw()
    client.initialize(setup)
    client.open("file:///c.txt", "the app")
    client.send(client.completion(1, "file:///c.txt", 0, 7))
    assert client.response(1)["result"]["items"]        # the engine is loaded and answers
    client.send(client.completion(2, "file:///c.txt", 0, 7),
                client.notification("$/cancelRequest", {"id": 2}))
    assert client.response(2)["error"]["code"] == -32800
    client.send(client.completion(3, "file:///c.txt", 0, 7))
    assert client.response(3)["result"]["items"]


def test_a_request_overtaken_by_an_edit_or_a_newer_request_is_answered_empty(setup, raw):
    client = raw()
    client.initialize(setup)
    uri = "file:///o.txt"
    client.open(uri, "the ap")
    client.send(client.completion(1, uri, 0, 6))
    assert client.response(1)["result"]["items"]
    edit = client.notification("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": {"line": 0, "character": 4},
                                      "end": {"line": 0, "character": 6}}, "text": "cat "}]})
    client.send(client.completion(2, uri, 0, 6), edit, client.completion(3, uri, 0, 8),
                client.completion(4, uri, 0, 8))
    for overtaken in (2, 3):
        result = client.response(overtaken)["result"]
        assert result == {"isIncomplete": True, "items": []}
    newest = client.response(4)["result"]
    want = expected(setup, "the ap", "the cat ")[1]
    assert want
    assert [item["label"] for item in newest["items"]] == [s.text for s in want]


def test_a_5_mb_document_opens_and_completes(setup, raw):
    client = raw()
    client.initialize(setup)
    line = "the cat sat on the mat and the apple tree grew " + EMOJI + "\n"
    text = line * (5_000_000 // len(line)) + "the app"
    client.open("file:///big.txt", text)
    last = text.count("\n")
    client.send(client.completion(1, "file:///big.txt", last, 7))
    result = client.response(1)["result"]
    assert [item["label"] for item in result["items"]] == [s.text for s in expected(setup, text)[0]]
    assert all(item["textEdit"]["range"]["start"] == {"line": last, "character": 4}
               for item in result["items"])
    client.send(client.notification("textDocument/didChange", {
        "textDocument": {"uri": "file:///big.txt", "version": 2},
        "contentChanges": [{"range": {"start": {"line": last, "character": 7},
                                      "end": {"line": last, "character": 7}}, "text": "le "}]}),
        client.completion(2, "file:///big.txt", last, 10))
    assert client.response(2)["result"]["items"]


def test_tcp_on_loopback(setup, raw):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = raw("--tcp", str(port)).process
    for _ in range(600):
        try:
            connection = socket.create_connection(("127.0.0.1", port), timeout=60)
            break
        except OSError:
            assert process.poll() is None, "the server ended"
            threading.Event().wait(0.05)
    else:
        pytest.fail("the server did not listen")
    with connection:
        stream = connection.makefile("rwb")
        stream.write(RawClient.frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                      "params": {"processId": None, "capabilities": {}}}))
        stream.flush()
        headers = {}
        while (line := stream.readline().strip()):
            name, _, value = line.partition(b":")
            headers[name.lower()] = value
        reply = json.loads(stream.read(int(headers[b"content-length"])))
        assert reply["id"] == 1 and "capabilities" in reply["result"]
