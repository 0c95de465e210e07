"""Shell-injection corpus: what a command-running tool may and may not be handed."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane._endpoint._paths import PathPolicy
from fiveplane._endpoint._shell import ExecutableRule, ShellError, ShellPolicy, check_argv, check_command, parse_command
from fiveplane._planes._endpoint import ShellRuleConfig

PATHS = PathPolicy.create(read=["/srv/ops/workspace", "/var/log/ops"], write=["/srv/ops/workspace/out"])
POLICY = ShellPolicy(
    executables={
        "ls": ExecutableRule(),
        "cat": ExecutableRule(),
        "grep": ExecutableRule(deny_args=("-r", "-R", "--recursive")),
        "tail": ExecutableRule(),
        "wc": ExecutableRule(),
        "git": ExecutableRule(subcommands=("status", "log", "diff"), deny_args=("-c", "--exec-path*", "--output*")),
        "find": ExecutableRule(deny_args=("-exec", "-execdir", "-delete", "-ok", "-fprint*")),
        "/usr/bin/uptime": ExecutableRule(),
    },
    operators=frozenset({"|"}),
    env=frozenset({"LANG", "TZ"}),
)

ALLOWED = [
    "ls",
    "ls -la /srv/ops/workspace",
    "cat /var/log/ops/app.log",
    "tail -n 100 /var/log/ops/app.log",
    "grep -i error /var/log/ops/app.log | wc -l",
    "cat /var/log/ops/app.log | grep timeout | tail -n 5",
    "git status",
    "git log --oneline -n 5",
    "git diff HEAD~1",
    "grep 'a;b' /var/log/ops/app.log",  # quoted metacharacters are data
    'grep "x && y" /var/log/ops/app.log',
    "grep 'a|b' /var/log/ops/x.log",
    "grep '$(id)' /var/log/ops/x.log",  # single quotes: no substitution
    "LANG=C ls /srv/ops/workspace",
    "TZ=UTC LANG=C tail /var/log/ops/a.log",
    "/usr/bin/uptime",
    "find /srv/ops/workspace -name report.txt",
    "cat ./notes.txt",  # relative to the base
    "ls    -l\t/var/log/ops",
    "grep -e foo -e bar /var/log/ops/app.log",
    "wc -c /srv/ops/workspace/out/r.txt",
]

BLOCKED = [
    # command chaining and operators
    "ls; rm -rf /",
    "ls && rm -rf /",
    "ls || rm -rf /",
    "ls & rm -rf /",
    "ls\nrm -rf /",
    "ls\r\nid",
    "ls |& cat",
    "ls ;; id",
    # command / process substitution and expansions
    "cat $(echo /etc/passwd)",
    "cat `echo /etc/passwd`",
    'cat "$(id)"',
    'cat "`id`"',
    "cat <(id)",
    "ls >(id)",
    "cat $HOME/.ssh/id_rsa",
    'cat "$HOME/.ssh/id_rsa"',
    "cat ${HOME}/x",
    "echo $((1+2))",
    "cat /srv/ops/workspace/$1",
    "ls $IFS/etc",
    "cat $'\\x2fetc\\x2fpasswd'",
    'cat $"x"',
    # redirections and here-docs
    "cat /var/log/ops/a.log > /srv/ops/workspace/out/x",
    "cat /var/log/ops/a.log >> /etc/crontab",
    "cat < /etc/shadow",
    "ls 2> /tmp/x",
    "ls 2>&1",
    "ls &> /tmp/x",
    "cat <<EOF",
    "cat <<< hi",
    # sub-shells, groups, braces, history, comments, tilde
    "(ls)",
    "{ ls; }",
    "ls {a,b}",
    "!ls",
    "ls # hidden",
    "cat ~/.ssh/id_rsa",
    "cat ~root/.ssh/id_rsa",
    "ls --dir=~/x",
    # not allow-listed executables, path and quoting tricks
    "rm -rf /",
    "curl http://169.254.169.254/",
    "bash -c ls",
    "sh -c 'ls'",
    "env ls",
    "sudo ls",
    "xargs ls",
    "python3 -c 'import os'",
    "./ls",
    "/bin/ls",
    "../../bin/ls",
    "/usr/bin/../bin/uptime",
    "//usr/bin/uptime",
    "'ls'",
    '"ls"',
    "l\\s",
    "l''s",
    "l*",
    "LS",
    # sub-commands and denied arguments
    "git push",
    "git -c core.pager=id log",
    "git --exec-path=/tmp log",
    "git log --output=/srv/ops/workspace/out/x",
    "git",
    "grep -r secret /srv/ops/workspace",
    "find /srv/ops/workspace -exec rm {} ;",
    "find /srv/ops/workspace -delete",
    # environment
    "LD_PRELOAD=/tmp/x.so ls",
    "PATH=/tmp ls",
    "IFS=/ ls",
    "BASH_ENV=/tmp/x ls",
    "FOO=bar ls",
    "LANG=$(id) ls",
    # paths outside the roots
    "cat /etc/passwd",
    "cat /srv/ops/workspace/../../etc/passwd",
    "tail /var/log/ops/../../../etc/shadow",
    "ls /",
    "grep x /srv/ops/workspace2/a",
    "cat /srv/ops/workspace/%2e%2e/x",
    "cat /srv/ops/workspace/\uff0e\uff0e/x",
    "grep --file=/etc/shadow x /var/log/ops/a",
    # globs
    "cat /var/log/ops/*",
    "ls /var/log/ops/app.lo?",
    "cat /var/log/ops/[a]pp.log",
    # syntax errors and odd characters
    "cat 'unterminated",
    'cat "unterminated',
    "cat \\",
    "ls \\\nrm",
    "",
    "   ",
    "| ls",
    "ls |",
    "ls | | wc",
    "ls\x00",
    "ls\u00a0-la",  # no-break space
    "ls\u200b",  # zero-width space
    "ls\u202e",  # right-to-left override
    "cat /var/log/ops/a.log > ",
]


def check(command: str) -> None:
    check_command(command, POLICY, PATHS.check)


def test_corpus_size() -> None:
    assert len(ALLOWED) + len(BLOCKED) >= 100


@pytest.mark.parametrize("command", ALLOWED)
def test_allowed(command: str) -> None:
    base = PathPolicy.create(
        read=["/srv/ops/workspace", "/var/log/ops"], write=["/srv/ops/workspace/out"], base="/srv/ops/workspace"
    )
    check_command(command, POLICY, base.check)


@pytest.mark.parametrize("command", BLOCKED, ids=[repr(c)[:50] for c in BLOCKED])
def test_blocked(command: str) -> None:
    with pytest.raises(ShellError) as info:
        check(command)
    assert str(info.value)


def test_allowed_redirections_are_path_checked() -> None:
    policy = ShellPolicy(executables={"cat": ExecutableRule()}, operators=frozenset({">", "<"}))
    check_command("cat /var/log/ops/a.log > /srv/ops/workspace/out/a.txt", policy, PATHS.check)
    check_command("cat < /var/log/ops/a.log", policy, PATHS.check)
    with pytest.raises(ShellError, match="write roots"):
        check_command("cat /var/log/ops/a.log > /var/log/ops/b.log", policy, PATHS.check)
    with pytest.raises(ShellError, match="no file-path policy"):
        check_command("cat /var/log/ops/a.log > /srv/ops/workspace/out/a.txt", policy, None)


def test_globs_when_allowed() -> None:
    policy = ShellPolicy(executables={"ls": ExecutableRule()}, globs=True)
    check_command("ls /var/log/ops/*.log", policy, PATHS.check)


def test_argv_form() -> None:
    check_argv(["git", "log", "-n", "5"], POLICY, PATHS.check)
    check_argv(["grep", "a;b|c$(x)", "/var/log/ops/a"], POLICY, PATHS.check)  # no shell: metacharacters are data
    for argv in (["rm", "-rf", "/"], ["git", "push"], ["cat", "/etc/passwd"], [], ["ls", 3], ["./ls"], ["cat", "a\x00b"]):
        with pytest.raises(ShellError):
            check_argv(argv, POLICY, PATHS.check)


def test_env_mapping_argument() -> None:
    check_command("ls", POLICY, PATHS.check, {"LANG": "C"})
    for env in ({"LD_PRELOAD": "/x"}, {"FOO": "1"}, {"bad name": "1"}):
        with pytest.raises(ShellError):
            check_command("ls", POLICY, PATHS.check, env)


def test_parse_structure() -> None:
    cmds = parse_command("LANG=C grep -i 'a b' /x | wc -l")
    assert [c.argv for c in cmds] == [["grep", "-i", "a b", "/x"], ["wc", "-l"]]
    assert cmds[0].assignments == [("LANG", "C")] and cmds[0].operator == "|"


def test_command_runners_need_unsafe() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        ShellRuleConfig.model_validate({"id": "s", "tools": ["shell.run"], "executables": {"bash": {}}})
    with pytest.raises(ValueError, match="unsafe"):
        ShellRuleConfig.model_validate({"id": "s", "tools": ["shell.run"], "executables": {"python3.12": {}}})
    with pytest.raises(ValueError):
        ShellRuleConfig.model_validate({"id": "s", "tools": ["shell.run"], "executables": {"bin/ls": {}}})
    ShellRuleConfig.model_validate({"id": "s", "tools": ["shell.run"], "executables": {"bash": {"unsafe": True}}})


_word = st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(_word, min_size=1, max_size=5))
def test_accepted_commands_split_like_shlex(words: list[str]) -> None:
    """Whatever we accept as one simple command splits into exactly shlex's words."""
    text = " ".join(words)
    try:
        cmds = parse_command(text)
    except ShellError:
        return
    if len(cmds) == 1 and not cmds[0].assignments and not cmds[0].redirections and not cmds[0].operator:
        assert cmds[0].argv == shlex.split(text)
