"""The terminal driven through prompt_toolkit's pipe input: menu, accepting, commands, learning;
the reusable Completer/AutoSuggest on their own; and line mode through a real process."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest
from prompt_toolkit.completion import CompleteEvent, Completer
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from predtext.engine import Engine, NGramModel
from predtext.repl import EngineHandle, PredtextAutoSuggest, PredtextCompleter, Repl, Suggester
from predtext.repl.history import PrivateFileHistory

TEXT = ("the apple and the application of the apple pie. the apple tree. an apple a day. "
        "the application form. the cat sat on the mat. the cat ran.")
# Only the n-gram: nothing read from the machine (no word list, no stored history). A config
# changes the defaults, so the other predictors are switched off by name.
_OFF = {name: {"enabled": False}
        for name in ("neural", "history", "dictionary", "abbreviations", "bigrams")}
CONFIG = {"engine": {"time_budget_ms": 2000}, "predictors": {**_OFF, "ngram": {"weight": 1.0}}}
TWO_PREDICTORS = {"engine": {"time_budget_ms": 2000},
                  "predictors": {**_OFF, "ngram": {"weight": 1.0}, "dictionary": {"weight": 0.5}}}

RIGHT, TAB, ENTER, CTRL_C, CTRL_D, BACKSPACE = "\x1b[C", "\t", "\r", "\x03", "\x04", "\x7f"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PREDTEXT_CONFIG", raising=False)
    monkeypatch.delenv("PREDTEXT_REPL_TRACE", raising=False)


class LearningSpy:
    """An engine that records what it was taught, around a real one."""

    def __init__(self, engine):
        self.engine, self.learned = engine, []
        self.config, self.predictors = engine.config, engine.predictors

    def suggest(self, text, k=6):
        return self.engine.suggest(text, k)

    def learn(self, text):
        self.learned.append(text)
        self.engine.learn(text)

    def accept(self, suggestion, text_before_cursor=""):
        self.engine.accept(suggestion, text_before_cursor)

    def weight(self, predictor):
        return self.engine.weight(predictor)

    def close(self):
        self.engine.close()


def make_engine(config=CONFIG):
    return Engine.load(model=NGramModel.from_text(TEXT), config=config)


def ready_handle(engine):
    handle = EngineHandle()
    handle.start(lambda: engine, "test-model")
    assert handle.wait(10)
    return handle


async def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the terminal")
        await asyncio.sleep(0.01)


class CompletionsInFlight(Completer):
    """The prompt's completer, counting the requests it is answering.

    prompt_toolkit runs one completion request at a time and drops those made meanwhile (the
    terminal asks again for a dropped one: see test_the_menu_follows_edits_made_while_an_answer_
    was_on_its_way). A test that reads the menu for each thing it types waits for :attr:`busy`
    to clear before the next keys, as a person who reads it does.
    """

    def __init__(self, completer):
        self.completer, self.requests = completer, 0

    @property
    def busy(self):
        return self.requests > 0

    def get_completions(self, document, complete_event):
        return self.completer.get_completions(document, complete_event)

    async def get_completions_async(self, document, complete_event):
        self.requests += 1
        try:
            async for completion in self.completer.get_completions_async(document, complete_event):
                yield completion
        finally:
            self.requests -= 1


class Driver:
    """Runs a Repl on a pipe input; type into it and look at its buffer."""

    def __init__(self, repl, pipe):
        self.repl, self.pipe = repl, pipe
        self.buffer = repl.session.default_buffer
        self.completer = repl.session.completer = CompletionsInFlight(repl.session.completer)

    async def type(self, keys):
        """Send ``keys`` once the suggestions for what was typed before have been answered, as
        a person who reads them does (and as prompt_toolkit needs: see CompletionsInFlight)."""
        await asyncio.sleep(0)          # a request the last key made starts first
        await wait_until(lambda: not self.completer.busy)
        self.pipe.send_text(keys)

    def completions(self):
        state = self.buffer.complete_state
        return [] if state is None else [c.text for c in state.completions]

    def menu_for(self, text):
        """The completions once the menu shows them for ``text`` typed before the cursor."""
        state = self.buffer.complete_state
        if state is None or state.original_document.text_before_cursor != text:
            return None
        return state.completions

    async def menu(self, text):
        await wait_until(lambda: self.buffer.text == text and self.menu_for(text))
        return self.menu_for(text)

    async def grey_for(self, text):
        """Type ``text`` and wait for its grey suggestion to show."""
        await self.type(text)
        await wait_until(lambda: self.buffer.suggestion is not None and self.buffer.text == text)


def drive(engine, scenario, k=6):
    """Run ``await scenario(driver)`` against a terminal over ``engine``; returns the Repl."""
    async def main():
        with create_pipe_input() as pipe:
            repl = Repl(ready_handle(engine), k=k, input=pipe, output=DummyOutput())
            running = asyncio.ensure_future(repl.run_async())
            try:
                await scenario(Driver(repl, pipe))
                pipe.send_text(CTRL_C + CTRL_D)       # Ctrl-D exits on an empty line
                assert await asyncio.wait_for(running, 10) == 0
            finally:
                running.cancel()
            return repl
    return asyncio.run(main())


def test_menu_offers_the_engine_suggestions_with_source_and_score():
    engine = make_engine()
    expected = [(s.text, s.replace) for s in make_engine().suggest("the app", 6)]

    async def scenario(term):
        await term.type("the app")
        completions = await term.menu("the app")
        assert [(c.display_text, -c.start_position) for c in completions] == expected
        assert all(c.text == c.display_text + " " for c in completions)   # the space comes too
        assert {"application", "apple"} <= {c.display_text for c in completions}
        for completion in completions:
            assert completion.display_meta_text.startswith("ngram 0.")
    drive(engine, scenario)


def test_tab_moves_through_the_menu_and_enter_takes_the_selected_word():
    async def scenario(term):
        await term.type("the app")
        completions = await term.menu("the app")
        first, second = completions[0].text, completions[1].text
        await term.type(TAB)
        await wait_until(lambda: term.buffer.text == "the " + first)
        await term.type(TAB)
        await wait_until(lambda: term.buffer.text == "the " + second)
        await term.type(ENTER)          # takes the selected word; does not commit the line
        following = await term.menu("the " + second)   # ... and the next words come at once
        assert all(c.start_position == 0 for c in following)
        assert term.repl.transcript == []
    drive(make_engine(), scenario)


def test_right_arrow_accepts_the_grey_suggestion():
    engine = make_engine()
    best = make_engine().suggest("the app", 6)[0].text

    async def scenario(term):
        await term.grey_for("the app")
        assert "app" + term.buffer.suggestion.text == best + " "
        await term.type(RIGHT)
        await wait_until(lambda: term.buffer.text == "the " + best + " ")   # with its space
        await term.type(ENTER)
        await wait_until(lambda: term.repl.transcript == ["the " + best])  # not kept at the end
        # 8 keys (7 letters and →) made 15 characters.
        assert (term.repl.savings.keys, term.repl.savings.characters) == (8, len("the " + best))
    drive(engine, scenario)


def test_the_space_after_a_word_taken_is_free_and_gives_way_to_a_closing_mark():
    best = make_engine().suggest("the app", 6)[0].text

    async def scenario(term):
        await term.grey_for("the app")
        await term.type(RIGHT + "pie" + ENTER)
        await wait_until(lambda: term.repl.transcript == [f"the {best} pie"])
        # 11 keys (7 letters, →, 3 letters): the space after the word cost none.
        savings = term.repl.savings
        assert (savings.keys, savings.characters) == (11, len(f"the {best} pie"))
        await term.grey_for("the app")
        await term.type(RIGHT + ",")
        await wait_until(lambda: term.buffer.text == f"the {best},")
        await term.type(" the ")
        first = (await term.menu(f"the {best}, the "))[0].display_text
        await term.type(TAB)                           # from the menu too
        await wait_until(lambda: term.buffer.text == f"the {best}, the {first} ")
        await term.type(".")
        await wait_until(lambda: term.buffer.text == f"the {best}, the {first}.")
        await term.type(" ,")                          # a space typed by hand stays
        await wait_until(lambda: term.buffer.text == f"the {best}, the {first}. ,")
    drive(make_engine(), scenario)


def test_next_word_after_a_space_and_refresh_after_backspace():
    async def scenario(term):
        await term.type("the ")
        next_words = await term.menu("the ")
        assert all(c.start_position == 0 for c in next_words)
        await term.type("appl" + BACKSPACE)
        await term.menu("the app")
    drive(make_engine(), scenario)


def test_k_command_changes_how_many_are_offered():
    async def scenario(term):
        await term.type(":k 2" + ENTER)
        await wait_until(lambda: term.repl.suggester.k == 2)
        await term.type("the ")
        assert len(await term.menu("the ")) == 2
        await term.type(CTRL_C + ":k 0" + ENTER)
        await wait_until(lambda: any("between 1 and 50" in s for s in term.repl.shown))
        assert term.repl.suggester.k == 2
    drive(make_engine(), scenario)


def test_enter_commits_the_line_and_learns_it_unless_learning_is_off():
    spy = LearningSpy(make_engine())

    async def scenario(term):
        await term.type("zebras graze" + ENTER)
        await wait_until(lambda: spy.learned == ["zebras graze"])
        assert term.repl.transcript == ["zebras graze"]
        await term.type("the zeb")
        assert "zebras" in [c.display_text for c in await term.menu("the zeb")]
        await term.type(CTRL_C + ":learn off" + ENTER + "quiet words" + ENTER)
        await wait_until(lambda: term.repl.transcript == ["zebras graze", "quiet words"])
        assert spy.learned == ["zebras graze"]
        assert not any("learn" in line for line in term.repl.transcript)
    drive(spy, scenario)


def test_ctrl_c_clears_the_line_and_ctrl_d_exits():
    async def scenario(term):
        await term.type("the app")
        await wait_until(lambda: term.buffer.text == "the app")
        await term.type(CTRL_C)
        await wait_until(lambda: term.buffer.text == "")
        assert term.repl.transcript == []
    drive(make_engine(), scenario)      # drive() ends with Ctrl-D and checks the exit status


def test_predictors_can_be_listed_disabled_and_enabled():
    async def scenario(term):
        await term.type(":predictors" + ENTER)
        await wait_until(lambda: any("dictionary" in s for s in term.repl.shown))
        await term.type(":predictors disable ngram" + ENTER)
        await wait_until(lambda: [n for n, _, on in term.repl.handle.predictor_table()
                                  if not on] == ["ngram"])
        await term.type("the app")
        sources = {tuple(c.suggestion.sources) for c in await term.menu("the app")}
        assert sources == {("dictionary",)}
        await term.type(CTRL_C + ":predictors enable ngram" + ENTER + "the ap")
        sources = {s for c in await term.menu("the ap") for s in c.suggestion.sources}
        assert "ngram" in sources
        await term.type(CTRL_C + ":predictors disable nosuch" + ENTER)
        await wait_until(lambda: any("no predictor 'nosuch'" in s for s in term.repl.shown))
    drive(make_engine(TWO_PREDICTORS), scenario)


def test_generate_says_when_the_model_cannot_generate_and_help_lists_commands():
    async def scenario(term):
        await term.type(":generate 20" + ENTER + ":help" + ENTER + ":bogus" + ENTER)
        await wait_until(lambda: any("unknown command" in s for s in term.repl.shown))
        shown = "\n".join(term.repl.shown)
        assert "cannot generate" in shown
        for name in (":k", ":learn", ":predictors", ":model", ":generate", ":quit"):
            assert name in shown
    drive(make_engine(), scenario)


def test_generate_continues_the_transcript_when_the_model_can():
    class Generating(LearningSpy):
        class language_model:
            @staticmethod
            def generate(prompt, n):
                return prompt + "x" * n

    async def scenario(term):
        await term.type("hello" + ENTER + ":generate 3" + ENTER)
        await wait_until(lambda: "xxx" in term.repl.shown)
    drive(Generating(make_engine()), scenario)


def test_model_command_loads_another_model_in_the_background(tmp_path):
    other = tmp_path / "zoo.safetensors"
    NGramModel.from_text("the zebra and the zebu. the zebra ran. the zebu sat.").save(other)

    async def scenario(term):
        await term.type(f":model {tmp_path / 'missing.bin'}" + ENTER)
        await wait_until(lambda: any("no such file" in s for s in term.repl.shown))
        await term.type(f":model {other}" + ENTER)
        await wait_until(lambda: term.repl.handle.name == "zoo.safetensors")
        await term.type("the ze")
        assert {c.display_text for c in await term.menu("the ze")} == {"zebra", "zebu"}
    drive(make_engine(), scenario)


class HeldAnswers:
    """An engine that, while ``hold`` is set, answers only once ``release`` is set."""

    def __init__(self, engine):
        self.engine, self.hold, self.release = engine, threading.Event(), threading.Event()
        self.config, self.predictors = engine.config, engine.predictors
        self.asked = threading.Event()

    def suggest(self, text, k=6):
        if self.hold.is_set():
            self.asked.set()
            if not self.release.wait(10):
                raise TimeoutError("the test never released the held answer")
        return self.engine.suggest(text, k)

    def close(self):
        self.engine.close()


def test_a_new_engine_replaces_the_menu_an_old_answer_was_still_filling():
    # prompt_toolkit drops a completion request made while one is running: the refresh on
    # an engine change must not be lost when the old engine was still answering.
    old = HeldAnswers(make_engine())
    new = Engine.load(model=NGramModel.from_text("the apricot and the apron. the apricot tree."),
                      config=CONFIG)

    async def scenario(term):
        old.hold.set()
        await term.type("the ap")
        await wait_until(old.asked.is_set)            # the old engine is answering "the ap"
        term.repl.handle.start(lambda: new, "new")    # ... when the new one arrives
        await wait_until(lambda: term.repl.handle.name == "new")
        old.release.set()                             # the old answer ends after the change
        await wait_until(lambda: {c.display_text for c in term.menu_for("the ap") or []}
                         == {"apricot", "apron"})
    drive(old, scenario)


@pytest.mark.parametrize("edits", [
    [(BACKSPACE, "the a")],                       # a deletion: not an extension of "the ap"
    [(CTRL_C, ""), ("the c", "the c")],           # the line cleared and typed anew
    [("p", "the app"), (BACKSPACE, "the ap")],    # back to the text asked about
], ids=["backspace", "ctrl-c", "same-text"])
def test_the_menu_follows_edits_made_while_an_answer_was_on_its_way(edits):
    # prompt_toolkit drops a completion request made while one is running, and asks again
    # by itself only when the text has grown from what it asked about. After any other edit
    # the menu for the text now typed must still come, without another key.
    held = HeldAnswers(make_engine())
    text = edits[-1][1]
    expected = [s.text for s in make_engine().suggest(text, 6)]
    assert expected

    async def scenario(term):
        held.hold.set()
        await term.type("the ap")
        await wait_until(lambda: held.asked.is_set() and term.completer.busy)
        for keys, after in edits:                     # typed while "the ap" is being answered
            term.pipe.send_text(keys)
            await wait_until(lambda after=after: term.buffer.text == after)
        assert term.completer.busy
        held.release.set()
        await wait_until(lambda: [c.display_text for c in term.menu_for(text) or []] == expected)
    drive(held, scenario)


def test_quit_command_ends_the_session():
    async def main():
        with create_pipe_input() as pipe:
            repl = Repl(ready_handle(make_engine()), input=pipe, output=DummyOutput())
            pipe.send_text(":quit" + ENTER)
            assert await asyncio.wait_for(repl.run_async(), 10) == 0
    asyncio.run(main())


def test_a_model_that_fails_to_load_is_reported_and_the_prompt_still_works():
    def broken():
        raise OSError("model.bin: not a model file")

    async def main():
        with create_pipe_input() as pipe:
            handle = EngineHandle()
            repl = Repl(handle, input=pipe, output=DummyOutput())
            running = asyncio.ensure_future(repl.run_async())
            await wait_until(lambda: repl.session.app.is_running)   # the prompt is up
            handle.start(broken, "model.bin")
            await wait_until(lambda: any("not a model file" in s for s in repl.shown))
            assert "failed" in str(repl._toolbar())
            pipe.send_text("some text" + ENTER + CTRL_D)
            assert await asyncio.wait_for(running, 10) == 0
            assert repl.transcript == ["some text"]
    asyncio.run(main())


def test_completer_and_auto_suggest_work_in_any_prompt_toolkit_app():
    suggester = Suggester(make_engine(), k=3)
    completer, auto = PredtextCompleter(suggester), PredtextAutoSuggest(suggester)
    document = Document("the app")
    completions = list(completer.get_completions(document, CompleteEvent(text_inserted=True)))
    assert len(completions) <= 3 and completions[0].start_position == -3
    assert completions[0].text.startswith("app")
    grey = auto.get_suggestion(None, document)
    assert "app" + grey.text == completions[0].text
    # Given an Engine directly, each makes its own Suggester.
    assert list(PredtextCompleter(make_engine()).get_completions(document, CompleteEvent()))


def test_history_file_is_private(tmp_path):
    path = tmp_path / "data" / "repl_history"
    history = PrivateFileHistory(path)
    history.store_string("a line")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(PrivateFileHistory(path).load_history_strings()) == ["a line"]


def _line_mode(tmp_path, stdin, *extra):
    model = tmp_path / "model.safetensors"
    NGramModel.from_text(TEXT).save(model)
    config = tmp_path / "config.toml"
    config.write_text('[engine]\ntime_budget_ms = 2000\n[predictors.ngram]\nweight = 1.0\n'
                      + "".join(f"[predictors.{name}]\nenabled = false\n" for name in _OFF))
    return subprocess.run([sys.executable, "-m", "predtext.cli", "repl", "--model", str(model),
                           "--config", str(config), *extra],
                          input=stdin, capture_output=True, text=True, timeout=60, env=os.environ)


def test_line_mode_prints_one_line_of_suggestions_per_input_line(tmp_path):
    result = _line_mode(tmp_path, "the app\nthe app\n\nthe cat \n", "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 5
    first = lines[0].split("\t")
    assert {"application", "apple"} <= set(first) and len(first) <= 3
    assert lines[1] == lines[0]           # each line is answered on its own
    assert "sat" in lines[3].split("\t") or "ran" in lines[3].split("\t")


def test_line_mode_json(tmp_path):
    result = _line_mode(tmp_path, "the app\n", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["input"] == "the app"
    first = record["suggestions"][0]
    assert first["replace"] == 3 and first["source"] == ["ngram"] and 0 < first["score"] <= 1


def test_a_bad_config_stops_with_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "predtext.cli", "repl", "--config",
                             str(tmp_path / "missing.toml")], input="", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "missing.toml" in result.stderr


def test_learning_follows_the_engine_config_unless_the_user_chose():
    quiet = {"engine": {"learn": False}, "predictors": {**_OFF, "ngram": {"weight": 1.0}}}
    assert ready_handle(make_engine(quiet)).learning is False
    assert ready_handle(make_engine()).learning is True
    chosen = EngineHandle()
    chosen.set_learning(False)
    chosen.start(make_engine, "test-model")
    assert chosen.wait(10) and chosen.learning is False and chosen.engine.config.learn is False


def test_the_space_that_came_with_a_word_gives_way_only_to_the_next_key():
    best = make_engine().suggest("the app", 6)[0].text

    async def grey(term):
        await term.grey_for("the app")
        await term.type(RIGHT)
        await wait_until(lambda: term.buffer.text == f"the {best} ")

    async def scenario(term):
        await grey(term)
        await term.type(" x")                          # no double space
        await wait_until(lambda: term.buffer.text == f"the {best} x")
        await term.type(CTRL_C)
        await grey(term)
        await term.type(CTRL_C + f"the {best} ,")      # typed by hand: its space stays
        await wait_until(lambda: term.buffer.text == f"the {best} ,")
        await term.type(CTRL_C + "the app")
        first = (await term.menu("the app"))[0].display_text
        await term.type(TAB + "s")                     # a letter goes on with the selected word
        await wait_until(lambda: term.buffer.text == f"the {first}s")
        await term.type(CTRL_C)
        await grey(term)
        await term.type(ENTER)
        await wait_until(lambda: term.repl.transcript == [f"the {best}"])
        assert term.repl.session.history.get_strings()[-1] == f"the {best}"   # recalled as is
    drive(make_engine(), scenario)


def test_no_space_comes_between_a_word_and_a_mark_already_after_the_cursor():
    completer = PredtextCompleter(Suggester(make_engine(), k=3))
    before_mark = Document("the app. and more", cursor_position=len("the app"))
    offered = completer.get_completions(before_mark, CompleteEvent())
    assert not any(c.text.endswith(" ") for c in offered)
    before_space = Document("the app and", cursor_position=len("the app"))
    offered = completer.get_completions(before_space, CompleteEvent())
    assert not any(c.text.endswith(" ") for c in offered)


def test_the_refresh_knows_a_menu_that_shows_the_answer():
    from prompt_toolkit.buffer import CompletionState

    from predtext.repl.app import _menu_shows
    from predtext.repl.completer import SuggestionCompletion

    answer = make_engine().suggest("the app", 6)
    menu = CompletionState(Document("the app"), [SuggestionCompletion(s) for s in answer])
    assert _menu_shows(menu, "the app", answer)             # its entries carry their space
    assert not _menu_shows(menu, "the ap", answer)
    assert not _menu_shows(menu, "the app", answer[1:])


LEFT, SHIFT_TAB, CTRL_R = "\x1b[D", "\x1b[Z", "\x12"


def test_the_owed_space_survives_a_look_through_the_menu_and_keeps_to_its_line():
    best = make_engine().suggest("the app", 6)[0].text

    async def scenario(term):
        await term.grey_for("the app")
        await term.type(RIGHT)
        await term.menu(f"the {best} ")
        await term.type(TAB)                           # a look at the next words ...
        await wait_until(lambda: term.buffer.text != f"the {best} ")
        await term.type(SHIFT_TAB)                     # ... and back
        await wait_until(lambda: term.buffer.text == f"the {best} ")
        await term.type(",")
        await wait_until(lambda: term.buffer.text == f"the {best},")
        await term.type(CTRL_C + "the world" + LEFT * 5 + "app")
        await wait_until(lambda: term.menu_for("the app"))      # the line goes on after it
        first = term.menu_for("the app")[0].display_text
        await term.type(TAB + ENTER + ENTER)           # taken mid-line, then the line committed
        await wait_until(lambda: term.repl.transcript == [f"the {first} world"])
        await term.type("the app")
        await term.menu("the app")
        await term.type(TAB + "(")                     # not a letter: the word stays as taken
        await wait_until(lambda: term.buffer.text == f"the {first} (")
        await term.type(CTRL_C + "zz app")
        await term.menu("zz app")
        await term.type(TAB + CTRL_R + "qwe ,")        # a search while an entry is selected
        await wait_until(lambda: term.repl.session.search_buffer.text == "qwe ,")
        await term.type(ENTER)                         # back to the line
        await wait_until(lambda: term.repl.session.search_buffer.text == "")
    drive(make_engine(), scenario)
