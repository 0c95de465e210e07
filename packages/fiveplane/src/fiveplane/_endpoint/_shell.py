"""Shell-command policy: a conservative POSIX-shell lexer and the checks on what it finds.

The lexer understands exactly what it needs to split a command line the way ``sh -c`` would:
single and double quotes, backslash escapes, the control operators (``;`` ``&&`` ``||`` ``|``
``&`` newline) and redirections (``<`` ``>`` ``>>``, with an optional fd number). Everything else
that makes the shell *compute* the command instead of just running it is refused outright, with
a message naming it: command and process substitution (``$(...)``, backticks, ``<(...)``),
parameter and arithmetic expansion (``$VAR``, ``${...}``, ``$((...))``), ANSI-C quoting
(``$'\\x2f'``), here-documents, sub-shells and groups, brace expansion, history expansion,
comments, ``~`` expansion, line continuations, fd duplication (``>&``), control and invisible
characters. Globs (``*`` ``?`` ``[``) are refused unless a rule allows them. As a cross-check, a
simple command's words must equal ``shlex.split``'s; any disagreement fails closed.

A command line then passes only if every simple command in it runs an allow-listed executable
(by bare name, or by exact absolute path when the rule lists one; no ``./x``, no quoting tricks
in the name), with an allowed sub-command, no denied argument, only allowed ``VAR=value``
prefixes, only allowed operators, and path arguments inside the file-path policy.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

__all__ = [
    "COMMAND_RUNNERS",
    "HARD_DENIED_ENV",
    "ExecutableRule",
    "ShellError",
    "ShellPolicy",
    "SimpleCommand",
    "Word",
    "check_argv",
    "check_command",
    "parse_command",
]

COMMAND_RUNNERS = frozenset(
    {
        "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "env", "sudo", "su", "doas",
        "xargs", "eval", "exec", "nohup", "timeout", "nice", "ionice", "time", "command", "builtin", "source",
        ".", "python", "python3", "perl", "ruby", "node", "php", "lua", "awk", "gawk", "osascript", "powershell",
        "pwsh", "ssh", "strace", "chroot", "setsid", "stdbuf", "watch", "script", "expect", "flock", "parallel",
    }
)  # fmt: skip
"""Executables that run other commands: allow-listing one needs ``unsafe: true`` on its rule."""

HARD_DENIED_ENV = frozenset(
    {
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "DYLD_LIBRARY_PATH", "BASH_ENV", "ENV",
        "IFS", "PS4", "PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT",
        "PERL5LIB", "RUBYOPT", "NODE_OPTIONS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_CONFIG_PARAMETERS",
        "GIT_PAGER", "PAGER", "EDITOR", "VISUAL", "LESSOPEN", "HOME",
    }
)  # fmt: skip
"""Variables that change what runs: never allowed as ``VAR=value`` prefixes or in an env argument."""

CONTROL_OPERATORS = frozenset({";", "&&", "||", "|", "&"})
REDIRECTIONS = frozenset({"<", ">", ">>"})
_OPERATORS = ("&&", "||", ";;", "|&", ">>", "<<", "<>", ">|", "&>", ">&", "<&", "<(", ">(", ";", "|", "&", "<", ">", "(", ")")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+?=")


class ShellError(ValueError):
    """The command line cannot be judged safely (or breaks the policy); the message says why."""


@dataclass(frozen=True, slots=True)
class Word:
    value: str
    raw: str
    quoted: bool = False
    """Quotes or escapes were used inside the word."""
    glob: bool = False
    """Unquoted ``*``, ``?`` or ``[``."""


@dataclass(frozen=True, slots=True)
class _Op:
    op: str
    fd: str = ""


@dataclass
class SimpleCommand:
    """One command of a command line: assignments, the executable, arguments, redirections."""

    words: list[Word] = field(default_factory=list)
    assignments: list[tuple[str, str]] = field(default_factory=list)
    redirections: list[tuple[str, Word]] = field(default_factory=list)
    operator: str = ""
    """The control operator that ended it (``;``, ``&&``, ``|``, ...; empty for the last)."""

    @property
    def argv(self) -> list[str]:
        return [w.value for w in self.words]


def _unusual(ch: str) -> bool:
    if ch in " \t\n":
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp") or (cat == "Zs")


def _lex(text: str) -> list[Word | _Op]:
    tokens: list[Word | _Op] = []
    n = len(text)
    i = 0
    cur: list[str] = []
    raw_start = -1
    quoted = glob = False

    def end_word(at: int) -> None:
        nonlocal cur, raw_start, quoted, glob
        if raw_start >= 0:
            tokens.append(Word("".join(cur), text[raw_start:at], quoted, glob))
        cur, raw_start, quoted, glob = [], -1, False, False

    def start(at: int) -> None:
        nonlocal raw_start
        if raw_start < 0:
            raw_start = at

    for ch in text:
        if ch == "\x00":
            raise ShellError("the command contains a NUL character")
        if ch == "\r":
            raise ShellError("the command contains a carriage return")
        if _unusual(ch):
            raise ShellError(f"the command contains the unusual character U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})")
    while i < n:
        c = text[i]
        if c in " \t":
            end_word(i)
            i += 1
            continue
        if c == "\n":
            end_word(i)
            tokens.append(_Op(";"))
            i += 1
            continue
        if c == "\\":
            start(i)
            if i + 1 >= n:
                raise ShellError("the command ends with a lone backslash")
            if text[i + 1] == "\n":
                raise ShellError("line continuations (backslash-newline) are not allowed")
            cur.append(text[i + 1])
            quoted = True
            i += 2
            continue
        if c == "'":
            start(i)
            j = text.find("'", i + 1)
            if j < 0:
                raise ShellError("unterminated single quote")
            cur.append(text[i + 1 : j])
            quoted = True
            i = j + 1
            continue
        if c == '"':
            start(i)
            j = i + 1
            while True:
                if j >= n:
                    raise ShellError("unterminated double quote")
                d = text[j]
                if d == '"':
                    break
                if d == "`":
                    raise ShellError("command substitution (backticks) is not allowed")
                if d == "$":
                    _dollar(text, j, in_quotes=True)
                if d == "\\" and j + 1 < n and text[j + 1] in '$`"\\\n':
                    if text[j + 1] == "\n":
                        raise ShellError("line continuations (backslash-newline) are not allowed")
                    cur.append(text[j + 1])
                    j += 2
                    continue
                cur.append(d)
                j += 1
            quoted = True
            i = j + 1
            continue
        if c == "`":
            raise ShellError("command substitution (backticks) is not allowed")
        if c == "$":
            _dollar(text, i, in_quotes=False)
            start(i)
            cur.append(c)
            i += 1
            continue
        if c in "|&;<>()":
            word_so_far = "".join(cur)
            fd = ""
            if c in "<>" and raw_start >= 0 and not quoted and word_so_far.isdigit():
                fd, cur, raw_start = word_so_far, [], -1
            else:
                end_word(i)
            op = next(o for o in _OPERATORS if text.startswith(o, i))
            if op in ("<(", ">("):
                raise ShellError("process substitution (<(...) / >(...)) is not allowed")
            if op in ("(", ")"):
                raise ShellError("sub-shells and parentheses are not allowed")
            if op in ("<<", "<<<"):
                raise ShellError("here-documents are not allowed")
            if op in ("&>", ">&", "<&", "<>", ">|", "|&", ";;"):
                raise ShellError(f"the operator {op!r} is not allowed")
            tokens.append(_Op(op, fd))
            i += len(op)
            continue
        if c in "{}":
            raise ShellError("braces ({...}: groups and brace expansion) are not allowed")
        if c == "!":
            raise ShellError("'!' (history expansion / negation) is not allowed")
        if c == "#" and raw_start < 0:
            raise ShellError("comments ('#') are not allowed")
        if c == "~" and (raw_start < 0 or (cur and cur[-1] in "=:")):
            raise ShellError("'~' (home-directory expansion) is not allowed; write the full path")
        start(i)
        if c in "*?[":
            glob = True
        cur.append(c)
        i += 1
    end_word(n)
    return tokens


def _dollar(text: str, i: int, *, in_quotes: bool) -> None:
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt == "(":
        raise ShellError(
            "arithmetic expansion $((...)) is not allowed"
            if text.startswith("$((", i)
            else "command substitution $(...) is not allowed"
        )
    if nxt == "{":
        raise ShellError("parameter expansion ${...} is not allowed")
    if nxt == "'" and not in_quotes:
        raise ShellError("ANSI-C quoting $'...' is not allowed")
    if nxt == '"' and not in_quotes:
        raise ShellError('locale quoting $"..." is not allowed')
    if nxt and (nxt.isalnum() or nxt in "_@*#?-$!"):
        raise ShellError(f"variable expansion (${nxt}...) is not allowed; values must be written out")


def parse_command(text: str) -> list[SimpleCommand]:
    """Split a command line into simple commands. Raises :class:`ShellError` for what it refuses."""
    if not isinstance(text, str):
        raise ShellError(f"a command must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ShellError("the command is empty")
    tokens = _lex(text)
    commands: list[SimpleCommand] = []
    cur = SimpleCommand()
    pending: _Op | None = None
    for tok in tokens:
        if isinstance(tok, _Op):
            if pending is not None:
                raise ShellError(f"the redirection {pending.op!r} has no target")
            if tok.op in REDIRECTIONS:
                pending = tok
                continue
            if not cur.words:
                raise ShellError(f"empty command before {tok.op!r}")
            cur.operator = tok.op
            commands.append(cur)
            cur = SimpleCommand()
            continue
        if pending is not None:
            cur.redirections.append(((pending.fd + pending.op), tok))
            pending = None
            continue
        if not cur.words:
            m = _ASSIGN.match(tok.value)
            if m is not None and tok.raw.startswith(m.group(0)):
                cur.assignments.append((m.group(1), tok.value[m.end() :]))
                continue
        cur.words.append(tok)
    if pending is not None:
        raise ShellError(f"the redirection {pending.op!r} has no target")
    if cur.words:
        commands.append(cur)
    elif cur.assignments or cur.redirections:
        raise ShellError("a command with assignments or redirections but no executable")
    if commands and commands[-1].operator not in ("", ";", "&"):
        raise ShellError(f"the command ends with {commands[-1].operator!r}")
    if len(commands) == 1 and not commands[0].assignments and not commands[0].redirections and commands[0].operator == "":
        try:
            reference = shlex.split(text, comments=False, posix=True)
        except ValueError as exc:
            raise ShellError(f"the command does not parse as shell words ({exc})") from None
        if reference != commands[0].argv:
            raise ShellError("the command splits into words ambiguously; quote it plainly")
    return commands


@dataclass(frozen=True)
class ExecutableRule:
    """What one allow-listed executable may be run with."""

    subcommands: tuple[str, ...] = ()
    """If given, the first argument must be one of these (no options before it)."""
    deny_args: tuple[str, ...] = ()
    """Globs; an argument matching one is refused (``-exec``, ``--upload-pack*``, ...)."""
    max_args: int | None = None
    path_args: bool = True
    """Check path-like arguments against the file-path policy."""


@dataclass(frozen=True)
class ShellPolicy:
    executables: dict[str, ExecutableRule]
    operators: frozenset[str] = frozenset()
    """Operators allowed between / in commands: ``;`` ``&&`` ``||`` ``|`` ``&`` ``<`` ``>`` ``>>``."""
    env: frozenset[str] = frozenset()
    globs: bool = False
    max_commands: int = 8


PathCheck = Callable[[str, Literal["read", "write"]], str | None]
"""``(path, "read" | "write") -> problem or None``."""


def _looks_like_path(arg: str) -> bool:
    return arg.startswith(("/", "./", "../")) or "/" in arg or arg in (".", "..")


def _check_executable(name: Word | str, policy: ShellPolicy) -> tuple[str, ExecutableRule]:
    value = name.value if isinstance(name, Word) else name
    if isinstance(name, Word) and (name.quoted or name.glob):
        raise ShellError(f"the command name {name.raw!r} is quoted, escaped or a glob; write it plainly")
    if "/" in value:
        rule = policy.executables.get(value)
        if rule is None or not value.startswith("/") or "/./" in value or "/../" in value or "//" in value:
            raise ShellError(
                f"{value!r}: running programs by path is not allowed (allowed: {', '.join(sorted(policy.executables))})"
            )
        return value, rule
    rule = policy.executables.get(value)
    if rule is None:
        raise ShellError(f"{value!r} is not an allowed executable (allowed: {', '.join(sorted(policy.executables)) or 'none'})")
    return value, rule


def _check_args(exe: str, rule: ExecutableRule, args: Sequence[Word | str], policy: ShellPolicy, paths: PathCheck | None) -> None:
    values = [a.value if isinstance(a, Word) else a for a in args]
    if rule.max_args is not None and len(values) > rule.max_args:
        raise ShellError(f"{exe}: more than {rule.max_args} arguments")
    if rule.subcommands and (not values or values[0] not in rule.subcommands):
        got = repr(values[0]) if values else "none"
        raise ShellError(f"{exe}: sub-command {got} is not allowed (allowed: {', '.join(rule.subcommands)})")
    for arg, value in zip(args, values, strict=True):
        if isinstance(arg, Word) and arg.glob and not policy.globs:
            raise ShellError(f"{exe}: the argument {arg.raw!r} is a glob, and globs are not allowed")
        if "\x00" in value:
            raise ShellError(f"{exe}: an argument contains NUL")
        for pattern in rule.deny_args:
            if fnmatchcase(value, pattern):
                raise ShellError(f"{exe}: the argument {value!r} is not allowed (matches {pattern!r})")
        if paths is not None and rule.path_args:
            candidate = value
            if value.startswith("-") and "=" in value:
                candidate = value.split("=", 1)[1]
            if _looks_like_path(candidate):
                problem = paths(candidate, "read")
                if problem:
                    raise ShellError(f"{exe}: {problem}")


def check_command(
    text: str, policy: ShellPolicy, paths: PathCheck | None = None, env: dict[str, object] | None = None
) -> list[SimpleCommand]:
    """Parse and check a shell command line; returns the commands or raises :class:`ShellError`."""
    commands = parse_command(text)
    if len(commands) > policy.max_commands:
        raise ShellError(f"more than {policy.max_commands} commands in one line")
    for cmd in commands:
        if cmd.operator and cmd.operator not in policy.operators:
            raise ShellError(
                f"the operator {cmd.operator!r} is not allowed (allowed: {', '.join(sorted(policy.operators)) or 'none'})"
            )
        for name, _value in cmd.assignments:
            _check_env(name, policy)
        exe, rule = _check_executable(cmd.words[0], policy)
        _check_args(exe, rule, cmd.words[1:], policy, paths)
        for op, target in cmd.redirections:
            bare = op.lstrip("0123456789")
            if bare not in policy.operators:
                raise ShellError(f"the redirection {op!r} is not allowed")
            if target.glob:
                raise ShellError(f"the redirection target {target.raw!r} is a glob")
            if paths is None:
                raise ShellError(f"the redirection {op!r} {target.value!r} cannot be checked: no file-path policy")
            problem = paths(target.value, "read" if bare == "<" else "write")
            if problem:
                raise ShellError(f"redirection {op!r}: {problem}")
    for name in env or {}:
        _check_env(str(name), policy)
    return commands


def check_argv(
    argv: Sequence[object], policy: ShellPolicy, paths: PathCheck | None = None, env: dict[str, object] | None = None
) -> None:
    """Check an argument vector run without a shell (no operators, no expansion)."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ShellError("the argument vector must be a non-empty list of strings")
    args = [str(a) for a in argv]
    if any("\x00" in a for a in args):
        raise ShellError("an argument contains NUL")
    exe, rule = _check_executable(args[0], policy)
    _check_args(exe, rule, args[1:], policy, paths)
    for name in env or {}:
        _check_env(str(name), policy)


def _check_env(name: str, policy: ShellPolicy) -> None:
    if not _NAME.fullmatch(name):
        raise ShellError(f"invalid environment variable name {name!r}")
    if name.upper() in HARD_DENIED_ENV or name.startswith(("LD_", "DYLD_", "BASH_FUNC_")):
        raise ShellError(f"setting {name} is never allowed (it changes what runs)")
    if name not in policy.env:
        raise ShellError(
            f"setting the environment variable {name} is not allowed (allowed: {', '.join(sorted(policy.env)) or 'none'})"
        )
