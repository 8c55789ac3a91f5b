"""predtext in editors: a language server (LSP, on pygls) that completes prose as you type.

    predtext lsp              # standard input and output, as editors start it
    predtext lsp --tcp 2087   # or one editor on 127.0.0.1:2087

Completion of the word at the cursor and of the next word after a space, in plain text,
Markdown and git commit messages (and any language the settings list); each open document
has its own engine context. See the README for each editor's set-up.

The server is a front end beside the terminal (:mod:`predtext.repl`): it uses the engine and
nothing above it. pygls is an optional dependency (``pip install 'predtext[lsp]'``); the
pure parts -- :mod:`predtext.lsp.positions`, :mod:`predtext.lsp.documents`,
:mod:`predtext.lsp.settings` -- need no more than the standard library.
"""
