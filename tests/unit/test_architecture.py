"""The layering DESIGN.md asks for, read from the source with `ast` (nothing is imported or run).

1. One composition root: only `bot/bootstrap.py` builds the engine, the queue, the memory and the chat
   surfaces, each through the one factory it calls (listed in CONSTRUCTION below).
2. The web routes (`bot/web/`) only translate too: a request becomes a signal through `bot.inbound`; they
   write no event themselves and import none of the store's write modules.
3. Chat surfaces only translate (invariant 8): modules under `bot/slack/`, `bot/telegram/` and
   `bot/terminal/` reach the store only through the command layer. They import none of its write or
   read modules, no SQL, write no event, read no OPERATORS, and parse no dates; what a surface must
   remember of its own (deliveries already handled, edit prompts) is kept by the few `bot/inbound/`
   functions in SURFACE_PERSISTENCE, and nothing else there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "jobs", "agents", "store")
SURFACES = ("bot/slack", "bot/telegram", "bot/terminal")
COMPOSITION_ROOT = "bot/bootstrap.py"

# What only the composition root builds: the name called -> the modules allowed to call it besides the
# root (the factory the App calls for that part, which builds it from settings).
CONSTRUCTION: dict[str, frozenset[str]] = {
    "make_engine": frozenset(),
    "make_queue": frozenset(),
    "InProcessJobQueue": frozenset({"jobs/queue.py"}),
    "RedisJobQueue": frozenset({"jobs/queue.py"}),
    "RedisJobQueue.from_url": frozenset({"jobs/queue.py"}),
    "Memory": frozenset(),
    "Memory.from_settings": frozenset(),
    "SlackSurface": frozenset(),
    "TelegramSurface": frozenset(),
    "TerminalSurface": frozenset(),
    "WebClient": frozenset({"bot/slack/surface.py"}),  # make_web_client, the App's `slack_client`
}

# The modules of ours a surface may import from outside its own package (and `bot.commands`, the
# command layer, which every surface calls).
SURFACE_IMPORTS = frozenset(
    {
        "bot.bootstrap",  # the App type a surface is handed (imported for type checking)
        "bot.commands",
        "bot.inbound.chat",
        "bot.inbound.intake",
        "bot.inbound.slack_state",
        "bot.inbound.telegram_state",
        "bot.inbound.errors",
        "bot.inbound.signals",
        "bot.inbound.verify",
        "bot.web.body",
        "jobs.notify",  # the Surface protocol's types (MessageRef, SurfaceError)
        "jobs.views",  # ProposalView, Button: what a surface renders
        "store.events",  # the signal payload types a message is translated into
        "store.settings",  # the Settings type a surface is built from
    }
)
# What a surface may use of bot.inbound, by module, and nothing else there: how a customer's message
# becomes a signal, and the surface's own persistence.
SURFACE_PERSISTENCE: dict[str, frozenset[str]] = {
    # The plain data a surface translates a customer's message into.
    "bot.inbound.intake": frozenset({"InboundSignal"}),
    # Records it, unless an operator wrote it or the Slack channel is linked to nobody.
    "bot.inbound.chat": frozenset({"record_chat_message"}),
    # The checks every request passes before anything is parsed (invariant 5): the refusals, the
    # signature over the raw bytes, a bounded body and bounded JSON.
    # SurfaceFailed: a refused token ends a surface with one line naming the setting to fix.
    "bot.inbound.errors": frozenset(
        {"BadSignature", "BodyTooLarge", "InboundRefused", "MalformedBody", "SurfaceFailed"}
    ),
    "bot.inbound.verify": frozenset({"verify_slack_request"}),
    "bot.inbound.signals": frozenset({"deeper_than", "load_json"}),
    "bot.web.body": frozenset({"read_body"}),
    # Slack redelivers an event (same event_id) when 3 s pass without a 200; invariant 2.
    "bot.inbound.slack_state": frozenset({"already_seen", "mark_seen"}),
    # Telegram redelivers an update (same update_id); an edit prompt waits for the operator's reply.
    "bot.inbound.telegram_state": frozenset(
        {
            "claim_update",
            "forget_old_updates",
            "PendingEdit",
            "open_edit",
            "edit_for_prompt",
            "get_edit",
            "set_edit",
        }
    ),
}
# The store's modules that write (events, proposals, projections): a route or surface never imports them.
STORE_WRITE_MODULES = frozenset({"store.lifecycle", "store.tables", "store.proposals", "store.uow"})
# Calls that write to the log or move a proposal, whatever they are called on.
WRITE_CALLS = frozenset({"record_signal", "transition", "append_many"})
# Database access a surface never has: it hands `app.engine` to a SURFACE_PERSISTENCE function at most.
DATABASE_CALLS = frozenset({"connect", "begin", "execute"})


def modules(*folders: str) -> Iterator[tuple[str, ast.Module]]:
    """(path relative to the root, parsed module) for every Python file under the folders."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name or an Attribute chain; "" for anything else (a call, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def calls(tree: ast.Module) -> Iterator[tuple[ast.Call, str]]:
    """Every call with the dotted name of what is called."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, dotted(node.func)


def imported(tree: ast.Module) -> Iterator[tuple[str, str | None, str]]:
    """(module, imported name or None, local alias) for every import, relative ones made absolute."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name, alias.asname or alias.name


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring constants (prose may mention a grammar; code may not read one)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def surface_package(path: str) -> str:
    return next(folder for folder in SURFACES if path.startswith(folder + "/")).replace("/", ".")


def test_only_the_composition_root_builds_the_engine_queue_memory_and_surfaces() -> None:
    found = []
    for path, tree in modules(*PACKAGES):
        if path == COMPOSITION_ROOT:
            continue
        for call, name in calls(tree):
            allowed = CONSTRUCTION.get(name)
            if allowed is not None and path not in allowed:
                found.append(f"{path}:{call.lineno} calls {name}")
    assert found == [], "build these in bot/bootstrap.py (the App) and take them from the App"


def test_the_composition_root_does_build_each_part() -> None:
    """Guards the test above against passing because a name changed."""
    root = dict(modules("bot")).get(COMPOSITION_ROOT)
    assert root is not None
    called = {name for _, name in calls(root)}
    assert {"make_engine", "make_queue", "Memory.from_settings", "SlackSurface", "TelegramSurface"} <= called


@pytest.mark.parametrize("folder", SURFACES)
def test_a_surface_imports_only_the_command_layer_and_its_own_package(folder: str) -> None:
    found = []
    for path, tree in modules(folder):
        own = surface_package(path)
        for module, name, _ in imported(tree):
            full = f"{module}.{name}" if name else module
            if not ours(module) or module == own or module.startswith(own + "."):
                continue
            if module == "bot" and name is not None and f"bot.{name}" in SURFACE_IMPORTS:
                continue
            if module in SURFACE_IMPORTS or full in SURFACE_IMPORTS:
                continue
            found.append(f"{path} imports {full}")
    assert found == [], "a surface reaches the store through bot.commands (store.lifecycle, tables, slice…)"


@pytest.mark.parametrize("folder", SURFACES)
def test_a_surface_uses_only_the_allowed_persistence_functions(folder: str) -> None:
    found = []
    for path, tree in modules(folder):
        aliases = {}
        for module, name, alias in imported(tree):
            full = f"{module}.{name}" if name else module
            if full in SURFACE_PERSISTENCE:  # the module itself: check what is used through it
                aliases[alias] = full
            elif module in SURFACE_PERSISTENCE and name not in SURFACE_PERSISTENCE[module]:
                found.append(f"{path} imports {full}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = aliases.get(node.value.id)
                if module is not None and node.attr not in SURFACE_PERSISTENCE[module]:
                    found.append(f"{path}:{node.lineno} uses {module}.{node.attr}")
    assert found == []


def writes(path: str, tree: ast.Module) -> Iterator[str]:
    """Where a module writes to the log itself, or builds an event to write."""
    for call, name in calls(tree):
        parts = name.split(".")
        if parts[-1] in WRITE_CALLS:
            yield f"{path}:{call.lineno} calls {name}"
        # `.append(` on the store (app.store.append, self.store.append), not on a list of blocks.
        if parts[-1] == "append" and "store" in parts[:-1]:
            yield f"{path}:{call.lineno} calls {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute) and dotted(node).split(".")[-1] == "NewEvent":
            yield f"{path}:{node.lineno} builds an event"


def test_the_web_routes_write_only_through_the_inbound_layer() -> None:
    found = []
    for path, tree in modules("bot/web"):
        found += list(writes(path, tree))
        for module, name, _ in imported(tree):
            full = f"{module}.{name}" if name else module
            if module in STORE_WRITE_MODULES or full in STORE_WRITE_MODULES:
                found.append(f"{path} imports {full}")
    assert found == [], "a route hands its signal to bot.inbound (accept, record)"


@pytest.mark.parametrize("folder", SURFACES)
def test_a_surface_writes_no_event_and_opens_no_connection(folder: str) -> None:
    found = []
    for path, tree in modules(folder):
        found += list(writes(path, tree))
        for call, name in calls(tree):
            parts = name.split(".")
            if parts[-1] in DATABASE_CALLS and any("engine" in part for part in parts[:-1]):
                found.append(f"{path}:{call.lineno} calls {name}")
    assert found == [], "writes go through the command layer (bot.commands) or bot.inbound"


@pytest.mark.parametrize("folder", SURFACES)
def test_a_surface_leaves_authorisation_and_the_as_of_grammar_to_the_command_layer(folder: str) -> None:
    found = []
    for path, tree in modules(folder):
        prose = docstrings(tree)
        for node in ast.walk(tree):
            name = dotted(node) if isinstance(node, ast.Attribute) else ""
            if name.endswith(".operator_ids"):
                found.append(f"{path}:{node.lineno} reads OPERATORS ({name}); ask Commands.is_operator")
            if name.endswith("fromisoformat"):
                found.append(f"{path}:{node.lineno} parses a date ({name}); Commands.run reads dates")
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            text = node.value.lower() if is_text else ""
            # A usage line may show the syntax ("[as of YYYY-MM-DD]"); nothing else mentions it.
            if "as of" in text and "[as of" not in text and id(node) not in prose:
                found.append(f"{path}:{node.lineno} reads “as of” itself")
    assert found == []


def test_every_surface_package_has_the_same_shape() -> None:
    for folder in SURFACES:
        names = {path.name for path in (ROOT / folder).glob("*.py")}
        assert {"__init__.py", "render.py", "surface.py"} <= names, folder
