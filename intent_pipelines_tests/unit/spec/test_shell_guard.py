"""Tests of the shell guard: a template that a shell or interpreter would parse as code is refused, and only then."""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from intent_pipelines.errors import SpecError
from intent_pipelines.plan import render_call
from intent_pipelines.rendering import render
from intent_pipelines.spec.loader import parse_intent
from intent_pipelines.spec.shell_guard import check_argv, check_shell

X = "{{ params.x }}"
SHELL = "a shell script"

# (argv, the element refused or None when allowed, what the refused element is)
ARGV_FORMS = [
    # The forms that got past the old check, each with an interpolated script.
    pytest.param(["sh", "-c", f"echo {X}"], 2, SHELL, id="sh-c"),
    pytest.param(["sh", "-ec", f"echo {X}"], 2, SHELL, id="combined-ec"),
    pytest.param(["bash", "-lc", f"echo {X}"], 2, SHELL, id="bash-lc"),
    pytest.param(["sh", "-cx", f"echo {X}"], 2, SHELL, id="combined-cx"),
    pytest.param(["env", "sh", "-c", f"echo {X}"], 3, SHELL, id="env-sh"),
    pytest.param(["/usr/bin/sh", "-c", f"echo {X}"], 2, SHELL, id="absolute-path"),
    pytest.param(["/bin/bash", "-c", f"echo {X}"], 2, SHELL, id="absolute-bash"),
    pytest.param(["sh", "-e", "-x", "-c", f"echo {X}"], 4, SHELL, id="separate-flags"),
    pytest.param(["sh", "-c", "-e", f"echo {X}"], 3, SHELL, id="flag-after-c"),
    pytest.param(["bash", "--norc", "-o", "pipefail", "-c", f"echo {X}"], 5, SHELL, id="long-and-o-options"),
    pytest.param(["sh", "-c", "--", f"echo {X}"], 3, SHELL, id="double-dash-before-script"),
    pytest.param(["sh", "-c", "{% if params.x %}rm -rf /{% endif %}"], 2, SHELL, id="block-tag-in-script"),
    *(pytest.param([name, "-c", f"echo {X}"], 2, SHELL, id=name)
      for name in ("dash", "zsh", "ksh", "mksh", "ash", "csh", "tcsh")),
    pytest.param(["fish", "-c", f"echo {X}"], 2, SHELL, id="fish"),
    pytest.param(["fish", f"--command=echo {X}"], 1, SHELL, id="fish-long-attached"),
    pytest.param(["busybox", "sh", "-c", f"echo {X}"], 3, SHELL, id="busybox-sh"),
    # Wrappers, alone and stacked.
    pytest.param(["env", "-i", "A=1", "-u", "B", "bash", "-c", X], 7, SHELL, id="env-options"),
    pytest.param(["env", "-S", f"sh -c 'echo {X}'"], 2, "an env -S string", id="env-S"),
    pytest.param(["env", "-S", "sh -c", X], 3, SHELL, id="env-S-splits-into-sh-c"),
    pytest.param(["nice", "-n", "5", "sh", "-c", X], 5, SHELL, id="nice"),
    pytest.param(["nohup", "bash", "-c", X], 3, SHELL, id="nohup"),
    pytest.param(["timeout", "30", "sh", "-c", X], 4, SHELL, id="timeout"),
    pytest.param(["timeout", "-s", "KILL", "5s", "sh", "-c", X], 6, SHELL, id="timeout-signal"),
    pytest.param(["sudo", "-iu", "deploy", "bash", "-lc", X], 5, SHELL, id="sudo-iu"),
    pytest.param(["xargs", "-0", "-I{}", "sh", "-c", X], 5, SHELL, id="xargs"),
    pytest.param(["exec", "sh", "-c", X], 3, SHELL, id="exec"),
    pytest.param(["flock", "/tmp/lock", "-c", X], 3, SHELL, id="flock-c"),
    pytest.param(["nice", "nohup", "timeout", "9", "sudo", "env", "A=1", "xargs", "sh", "-xc", X], 10, SHELL,
                 id="stacked-wrappers"),
    # Unknown wrappers: a shell or interpreter is recognised wherever it appears.
    pytest.param(["docker", "exec", "web", "sh", "-c", f"echo {X}"], 5, SHELL, id="docker-exec"),
    pytest.param(["kubectl", "exec", "pod", "--", "bash", "-c", X], 6, SHELL, id="kubectl-exec"),
    pytest.param(["find", ".", "-exec", "sh", "-c", f"echo {X}", ";"], 5, SHELL, id="find-exec-sh"),
    pytest.param(["find", ".", "-execdir", "awk", f"/{X}/", "{}", "+"], 4, "an awk program", id="find-exec-awk"),
    # Interpreters given a program.
    pytest.param(["python3", "-c", f"print({X})"], 2, "a python script", id="python3-c"),
    pytest.param(["/usr/bin/python3.11", "-Bc", f"print({X})"], 2, "a python script", id="python-versioned-Bc"),
    pytest.param(["python3", f"-cprint({X})"], 1, "a python script", id="python-attached"),
    pytest.param(["perl", "-ne", f"print if /{X}/"], 2, "a perl script", id="perl-ne"),
    pytest.param(["perl", "-MJSON", "-E", f"say {X}"], 3, "a perl script", id="perl-M-E"),
    pytest.param(["ruby", "-r", "json", "-e", f"p {X}"], 4, "a ruby script", id="ruby-r-e"),
    pytest.param(["node", "-e", X], 2, "a node script", id="node-e"),
    pytest.param(["node", f"--eval={X}"], 1, "a node script", id="node-eval-attached"),
    pytest.param(["nodejs", "-pe", X], 2, "a node script", id="node-pe"),
    pytest.param(["php", "-r", f"echo {X};"], 2, "a php script", id="php-r"),
    pytest.param(["lua5.4", "-e", X], 2, "a lua script", id="lua-e"),
    pytest.param(["awk", f"{{print \"{X}\"}}"], 1, "an awk program", id="awk-program"),
    pytest.param(["gawk", "-F:", "-v", "n=1", f"$1 == \"{X}\""], 4, "an awk program", id="gawk-after-options"),
    pytest.param(["xargs", "awk", X], 2, "an awk program", id="xargs-awk"),
    # Remote and other-user shells.
    pytest.param(["ssh", "host", f"ls {X}"], 2, "an ssh remote command", id="ssh-command"),
    pytest.param(["ssh", "-p", "22", "-i", "key", "host", "ls", X], 7, "an ssh remote command", id="ssh-words"),
    pytest.param(["ssh", "-o", f"ProxyCommand=nc {X} 22", "host"], 2, "an ssh command option", id="ssh-proxycommand"),
    pytest.param(["su", "-c", f"echo {X}", "root"], 2, "an su command", id="su-c"),
    pytest.param(["su", "-", "deploy", "-c", f"echo {X}"], 4, "an su command", id="su-user-then-c"),
    pytest.param(["runuser", "-u", "app", "--", "sh", "-c", X], 6, SHELL, id="runuser-sh"),
    # Allowed: values as arguments, never as program text.
    pytest.param(["echo", X], None, "", id="echo"),
    pytest.param(["git", "checkout", "{{ params.ref }}"], None, "", id="git"),
    pytest.param(["sh", "-c", "echo ok", "--", X], None, "", id="sh-positional-after-dashdash"),
    pytest.param(["sh", "-c", 'printf %s "$1"', "sh", X], None, "", id="sh-positional-after-name"),
    pytest.param(["bash", "-ec", 'echo "$1"', "bash", X, X], None, "", id="bash-several-positionals"),
    pytest.param(["sh", "./deploy.sh", X], None, "", id="sh-script-file"),
    pytest.param(["bash", X], None, "", id="bash-templated-script-file"),
    pytest.param(["python3", "-c", "import sys; print(sys.argv[1])", X], None, "", id="python-argv"),
    pytest.param(["python3", "{{ params.script }}", X], None, "", id="python-script-file"),
    pytest.param(["python3", "-m", "http.server", X], None, "", id="python-m"),
    pytest.param(["perl", "-e", "print $ARGV[0]", X], None, "", id="perl-argv"),
    pytest.param(["node", "-e", "console.log(process.argv[1])", X], None, "", id="node-argv"),
    pytest.param(["awk", "-v", f"v={X}", "{print v}", "file"], None, "", id="awk-v"),
    pytest.param(["gawk", "-f", "prog.awk", X], None, "", id="awk-program-file"),
    pytest.param(["apt-get", "install", "-y", "gawk", X], None, "", id="package-named-awk"),
    pytest.param(["env", f"A={X}", "sh", "-c", 'echo "$A"'], None, "", id="env-assignment"),
    pytest.param(["env", "-S", "sh -c 'echo \"$1\"' sh", X], None, "", id="env-S-positional"),
    pytest.param(["timeout", X, "sh", "-c", "echo ok"], None, "", id="timeout-templated-duration"),
    pytest.param(["ssh", X, "uptime"], None, "", id="ssh-templated-host"),
    pytest.param(["find", X, "-name", X, "-exec", "rm", "{}", "+"], None, "", id="find-exec-argv"),
    pytest.param(["sudo", "-u", X, "systemctl", "restart", X], None, "", id="sudo-argv"),
    pytest.param(["kubectl", "exec", X, "--", "cat", X], None, "", id="kubectl-exec-argv"),
    pytest.param(["runuser", "-u", "app", "--", "cat", X], None, "", id="runuser-command-argv"),
]


@pytest.mark.parametrize(("argv", "index", "label"), ARGV_FORMS)
def test_argv_forms(argv: list[str], index: int | None, label: str) -> None:
    """An argv is refused exactly when a template reaches text a shell or interpreter parses as code."""
    finding = check_argv(argv)
    if index is None:
        assert finding is None
        return
    assert finding is not None
    assert finding.index == index
    assert finding.problem == f"{label} in an argv interpolates templates unquoted"
    assert finding.hint.endswith(".") and "\n" not in finding.hint


def test_argv_table_is_large_and_has_both_outcomes() -> None:
    """The table covers at least 40 forms, refused and allowed, with distinct argvs."""
    argvs = [tuple(case.values[0]) for case in ARGV_FORMS]
    assert len(set(argvs)) == len(argvs) >= 40
    assert sum(case.values[1] is None for case in ARGV_FORMS) >= 15


# Shell strings whose templates sit where their quoting does not hold: (command, where the problem says).
REFUSED_SHELL = [
    pytest.param('echo "{{ params.msg }}"', "`{{ params.msg }}` sits inside double quotes", id="double-quotes"),
    pytest.param("echo '{{ params.msg }}'", "`{{ params.msg }}` sits inside single quotes", id="single-quotes"),
    pytest.param('echo "x{{ params.msg }}', "sits inside double quotes", id="unclosed-double-quote"),
    pytest.param('echo "a" "b {{ params.msg }} c"', "sits inside double quotes", id="second-quoted-word"),
    pytest.param('echo "$(echo "{{ params.msg }}")"', "sits inside double quotes", id="quotes-inside-substitution"),
    pytest.param("echo `echo {{ params.msg }}`", "sits inside backticks", id="backticks"),
    pytest.param('echo "`echo {{ params.msg }}`"', "sits inside backticks", id="backticks-in-quotes"),
    pytest.param("echo $'{{ params.msg }}'", "sits inside $'...' quotes", id="ansi-c-quotes"),
    pytest.param("echo ${v:-{{ params.msg }}}", "sits inside ${...}", id="parameter-expansion"),
    pytest.param("echo $(( {{ params.n }} + 1 ))", "sits inside $((...))", id="arithmetic"),
    pytest.param("echo hi  # was {{ params.msg }}", "sits inside a comment", id="comment"),
    pytest.param("cat <<EOF\nname: {{ params.msg }}\nEOF", "sits inside a here-document", id="heredoc"),
    pytest.param("cat <<-'EOF'\n\tname: {{ params.msg }}\n\tEOF", "sits inside a here-document", id="quoted-heredoc"),
    pytest.param("echo \\{{ params.msg }}", "sits right after a backslash", id="backslash"),
    pytest.param("echo ${{ params.msg }}", "sits right after $", id="dollar"),
    pytest.param('printf "%s\\n" "{{ params.a }}" {{ params.b }}', "`{{ params.a }}` sits inside double quotes",
                 id="names-the-quoted-one"),
    pytest.param("sh -c {{ params.msg }}", "a shell script in a shell string", id="sh-c-in-string"),
    pytest.param("bash -lc 'echo '{{ params.msg }}", "a shell script in a shell string", id="sh-c-concatenated"),
    pytest.param("true && eval {{ params.msg }}", "an eval or trap argument", id="eval"),
    pytest.param("trap {{ params.msg }} EXIT", "an eval or trap argument", id="trap"),
    pytest.param("if true; then ssh host ls {{ params.dir }}; fi", "an ssh remote command", id="ssh-after-keyword"),
    pytest.param("X=1 python3 -c {{ params.code }} 2>&1 | tee log", "a python script", id="python-in-pipeline"),
    pytest.param("kubectl exec pod -- sh -c {{ params.msg }}", "a shell script", id="kubectl-exec-in-string"),
]


@pytest.mark.parametrize(("command", "problem"), REFUSED_SHELL)
def test_refused_shell_strings(command: str, problem: str) -> None:
    """A shell string is refused when a template's quoted value would be read in another quoting context."""
    finding = check_shell(command)
    assert finding is not None
    assert problem in finding.problem
    assert finding.index is None
    assert "\n" not in finding.problem + finding.hint


# Allowed shell strings: every one of them is run below with hostile values.
ALLOWED_SHELL = [
    "echo {{ params.msg }}",
    'echo x{{ params.msg }}"..."',
    "echo 'a'{{ params.msg }}\"b\"",
    "echo --flag={{ params.msg }} {{ params.msg }}/{{ params.msg }}",
    'echo "$(echo {{ params.msg }})"',
    "echo $(echo {{ params.msg }}) `echo ok`",
    "echo a#{{ params.msg }} $#{{ params.msg }}",
    "echo {{ params.msg }} # a comment with \"quotes' in it",
    "cat <<< {{ params.msg }}",
    "cat <<EOF\nname: $X\nEOF\necho {{ params.msg }}",
    "sh -c 'printf %s \"$1\"' sh {{ params.msg }}",
    "X={{ params.msg }} sh -c 'echo \"$X\"'",
    "v={{ params.msg }}; echo \"${v:-none}\" $((1 + 2))",
    "echo {{ params.msg }} > /dev/null 2>&1 || echo failed",
    "( cd / && echo {{ params.msg }} )",
    "case {{ params.msg }} in a) echo a;; *) echo other;; esac",
    "echo '{% if params.msg %}yes{% endif %}' {{ params.msg | default('x') }}",
    "test {{ params.msg }} = y || printf '%s\\n' {{ params.msg }}",
]
HOSTILE = ["$(touch {m})", "`touch {m}`", "; touch {m}", "x\ntouch {m}\n", "'; touch {m}; '", "\"; touch {m}; \"",
           "\\", "}}; touch {m}; {{", ") ; touch {m} ; (", "\nEOF\ntouch {m}\n", "a\ntouch {m} #"]


@pytest.mark.parametrize("command", ALLOWED_SHELL)
def test_allowed_shell_strings_run_no_payload(command: str, tmp_path: Path) -> None:
    """An allowed shell string is let through, and rendered with hostile values it runs none of them."""
    assert check_shell(command) is None
    marker = tmp_path / "pwned"
    for value in HOSTILE:
        script = render(command, {"params": {"msg": value.format(m=marker)}}, shell=True)
        subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=10, cwd=tmp_path,
                       env={"PATH": os.environ["PATH"], "X": "1"})
        assert not marker.exists(), f"{value!r} ran"


def test_unparsable_template_is_left_to_the_template_check() -> None:
    """A shell string whose template does not parse gets no shell finding: the loader reports the syntax."""
    assert check_shell("echo {{ params.x }") is None


MARK = "# <-"


def intent(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def marked_line(text: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if MARK in line)


# Through the loader: (intent text, field the error names, its message after the field).
LOADED = [
    pytest.param("""
        name: demo
        summary: s
        params:
          x: {}
        steps:
          - id: a
            run:
              - bash
              - -lc
              - "echo {{ params.x }}"  # <-
        """, "steps[0].run[2]", "a shell script in an argv interpolates templates unquoted", id="bash-lc"),
    pytest.param("""
        name: demo
        summary: s
        params:
          x: {}
        steps:
          - id: a
            run: [echo]
            rollback:
              run: [env, sh, -ec, "undo {{ params.x }}"]  # <-
        """, "steps[0].rollback.run[3]", "a shell script in an argv interpolates templates unquoted",
        id="rollback-env-sh"),
    pytest.param("""
        name: demo
        summary: s
        params:
          x: {}
        steps:
          - id: a
            run: [echo]
        verify:
          - id: check
            run: [python3, -c, "assert '{{ params.x }}'"]  # <-
        """, "verify[0].run[2]", "a python script in an argv interpolates templates unquoted", id="verify-python"),
    pytest.param("""
        name: demo
        summary: s
        params:
          ref: {}
        context:
          sha:
            run: [sh, -c, "git rev-parse {{ params.ref }}"]  # <-
        steps:
          - id: a
            run: [echo]
        """, "context.sha.run[2]", "a shell script in an argv interpolates templates unquoted", id="context-capture"),
    pytest.param("""
        name: demo
        summary: s
        params:
          msg: {}
        steps:
          - id: a
            shell: true
            run: echo "{{ params.msg }}"  # <-
        """, "steps[0].run", "`{{ params.msg }}` sits inside double quotes in a shell string", id="shell-quoted"),
    pytest.param("""
        name: demo
        summary: s
        params:
          msg: {}
        steps:
          - id: a
            shell: true
            run: >-  # <-
              mkdir -p /tmp/x &&
              echo '{{ params.msg }}' > /tmp/x/msg
        """, "steps[0].run", "`{{ params.msg }}` sits inside single quotes in a shell string", id="shell-block"),
]


@pytest.mark.parametrize(("text", "field", "problem"), LOADED)
def test_loader_refuses_with_file_line_field_and_hint(text: str, field: str, problem: str) -> None:
    """The loader refuses each form with a one-line SpecError naming the file, line, field and what to do."""
    text = intent(text)
    with pytest.raises(SpecError) as caught:
        parse_intent(text, "bad.yaml")
    error = caught.value
    assert (error.path, error.line, error.field_path) == ("bad.yaml", marked_line(text), field)
    assert error.message == f"bad.yaml:{marked_line(text)}: {field}: {problem}"
    assert error.exit_code == 3
    assert error.hint
    assert "\n" not in error.one_line()


def test_loader_hints_say_how_to_pass_the_value() -> None:
    """The hints name the safe alternative: positional arguments for sh -c, a bare template in shell strings."""
    argv = intent("""
        name: demo
        summary: s
        params:
          x: {}
        steps:
          - id: a
            run: [sh, -c, "echo {{ params.x }}"]
        """)
    with pytest.raises(SpecError) as caught:
        parse_intent(argv)
    assert '"$1"' in caught.value.hint and "shell: true" in caught.value.hint
    with pytest.raises(SpecError) as caught:
        parse_intent(argv.replace('run: [sh, -c, "echo {{ params.x }}"]', "run: echo \"{{ params.x }}\"\n    shell: true"))
    assert caught.value.hint == "Write the template bare; every value is shell-quoted for you."


def test_positional_argument_reaches_the_script_as_literal_text(tmp_path: Path) -> None:
    """`[sh, -c, 'printf %s "$1"', --, "{{ params.msg }}"]` loads, and a hostile value is printed, never run."""
    spec = parse_intent(intent("""
        name: demo
        summary: s
        params:
          msg: {}
        steps:
          - id: say
            run: [sh, -c, 'printf %s "$1"', --, "{{ params.msg }}"]
        """))
    marker = tmp_path / "pwned"
    for value in [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", f"x\ntouch {marker}"]:
        call = render_call(spec.steps[0], {"params": {"msg": value}}, where="steps.say")
        result = subprocess.run(call.argv, capture_output=True, text=True, timeout=10, check=True, cwd=tmp_path)
        assert result.stdout == value
    assert not marker.exists()
