"""Every command and config example in README.md and docs/*.md runs, so the manual cannot drift.

Each document runs top to bottom in its own folder holding copies of configs/ and data/ (so
one example can use what an earlier one made): shell blocks (```bash lines, and `$ ` lines of
any block, whose following lines are the output shown), YAML blocks that are whole configs or
layer lists, and Python blocks. Paths under /tmp/ are moved into that folder. HTML comments
right above a block steer it:

- ``<!-- not run: reason -->``: skipped (network downloads, torch, Ctrl-C);
- ``<!-- needs: MODULE -->``: skipped where that optional module is not installed (``two-cores``:
  where fewer than two cores are usable);
- ``<!-- file: NAME -->``: the block is written to NAME for the commands after it;
- ``<!-- setup: COMMAND -->``: a shell command run first (files a reader would have).

A command must exit 0, or 2 where it shows ``cnncli: error:``. Each shown output line must
appear in the real output: as it is for commands whose output is fixed (summary, config, layers,
show of a config), with numbers, ``*`` marks and spacing ignored where it comes from training or
timing. Braille pictures and ``...`` lines are not compared.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.config import check_text

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "shell", "console")
#: Commands a document shows that the suite must not run itself.
NEVER = {"pip": "installs packages", "pytest": "runs the test suite from inside it"}
#: Output of these is the same on every machine: compared line for line.
FIXED = ("summary", "config", "layers")
#: Documents that show no commands (only YAML, Python or prose).
NO_COMMANDS = ("docs/layers-conv.md", "docs/layers-other.md", "docs/layers-pool.md",
               "docs/torch-reference.md")
NOTE = re.compile(r"^<!--\s*(not run|needs|file|setup):\s*(.*?)\s*-->$")
BOX = re.compile("[\u2500-\u257f]")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


@dataclass
class Block:
    line: int
    lang: str
    lines: list[str]
    notes: dict[str, list[str]] = field(default_factory=dict)


def read_blocks(path: Path) -> list[Block]:
    """Fenced blocks, with the HTML-comment notes on the lines right above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        notes: dict[str, list[str]] = {}
        k = i - 1
        while k >= 0 and NOTE.match(lines[k].strip()):
            kind, text = NOTE.match(lines[k].strip()).groups()
            notes.setdefault(kind, []).insert(0, text)
            k -= 1
        blocks.append(Block(i + 1, fence.group(1), lines[i + 1:end], notes))
        i = end + 1
    return blocks


class Session:
    """A folder that one document's examples run in, in order."""

    def __init__(self, folder: Path, doc: str):
        self.folder, self.doc, self.last_code = folder, doc, 0
        for name in ("configs", "data"):
            shutil.copytree(ROOT / name, folder / name)
        (folder / "docs" / "images").mkdir(parents=True)
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                    f"{os.environ.get('PATH', '')}", "COLUMNS": "100"}

    def local(self, text: str) -> str:
        return text.replace("/tmp/", f"{self.folder}/")

    def run_line(self, line: str) -> tuple[int, str, bool]:
        """Run one command line; (exit code, stdout + stderr, whether the output is fixed)."""
        lexer = shlex.shlex(self.local(line), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        output, fixed = [], True
        piece: list[str] = []
        for token in [*lexer, ";"]:
            if token not in (";", "&&"):
                piece.append(token)
                continue
            if piece:
                code, text, piece_fixed = self.run_piece(piece)
                output.append(text)
                fixed = fixed and piece_fixed
                self.last_code, piece = code, []
            if token == "&&" and self.last_code != 0:
                break
        return self.last_code, "".join(output), fixed

    def run_piece(self, words: list[str]) -> tuple[int, str, bool]:
        env = dict(self.env)
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words == ["echo", "$?"]:
            return self.last_code, f"{self.last_code}\n", True
        if words[0] in NEVER:
            return 0, "", False
        if words[0] != "cnncli":
            command = " ".join(w if w in (">", ">>", "<", "|") else shlex.quote(w)
                               for w in words)
            done = subprocess.run(["bash", "-c", command], cwd=self.folder, env=env,
                                  capture_output=True, text=True, timeout=300)
            return done.returncode, done.stdout + done.stderr, False
        target = None
        if ">" in words:
            target, words = words[words.index(">") + 1], words[:words.index(">")]
        if words[1:2] == ["bench"]:  # threads and BLAS as a fresh process sets them up
            done = subprocess.run([sys.executable, "-m", "cnncli", *words[1:]], cwd=self.folder,
                                  env=env, capture_output=True, text=True, timeout=300)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            result = CliRunner(env=env).invoke(main, words[1:])
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise AssertionError(f"{' '.join(words)} raised") from result.exception
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        if target is not None:
            if target != "/dev/null":
                (self.folder / target).write_text(stdout)
            stdout = ""
        fixed = len(words) > 1 and (words[1] in FIXED or (
            words[1] == "show" and len(words) > 2 and words[2].endswith(".yaml")))
        return code, stdout + stderr, fixed


def _shape(line: str, fixed: bool) -> str:
    """A line as compared: box drawing and spacing dropped; numbers and * marks too unless the
    output is fixed."""
    line = BOX.sub(" ", line)
    if not fixed:
        line = NUMBER.sub("#", line).replace("*", " ")
    return " ".join(line.split())


def _compared(line: str) -> bool:
    text = BOX.sub("", line).strip()
    return bool(text) and text not in ("...", "⋮", "…") and not re.search("[\u2800-\u28ff]",
                                                                        line)


def _available(need: str) -> bool:
    """A ``needs:`` note: a module name, or ``two-cores`` (output that only a machine with two
    usable cores prints, such as training on two processes)."""
    if need == "two-cores":
        return len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else False
    return importlib.util.find_spec(need) is not None


def _check_shown(where: str, command: str, shown: list[str], code: int, output: str,
                 fixed: bool, expected: int | None = None) -> None:
    """``expected``: the exit code a following ``$ echo $?`` shows; else 2 after an error line
    (bad input), else 0."""
    if expected is None:
        expected = 2 if any(s.startswith("cnncli: error:") for s in shown) else 0
    assert code == expected, f"{where}: `{command}` exited {code}, not {expected}:\n{output}"
    got = {_shape(line, fixed) for line in output.splitlines()}
    for line in shown:
        if _compared(line):
            assert _shape(line, fixed) in got, \
                f"{where}: `{command}` did not print\n  {line}\nbut:\n{output}"


def _check_yaml(where: str, text: str) -> None:
    """A whole config must check; a layer list is checked on a 3x32x32 input."""
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "model" in data and "input_shape" in (data["model"] or {}):
        check_text(text, where)
        return
    layers = data.get("layers") if isinstance(data, dict) else None
    if isinstance(data, dict) and "model" in data:
        layers = data["model"].get("layers")
    if layers is None:
        return  # a section shown on its own (data:, train:): its keys are in the tables
    check_text(yaml.safe_dump({"model": {"input_shape": [3, 32, 32], "layers": layers}}),
               where)


def run_document(doc: str, folder: Path, monkeypatch) -> int:
    """Run every example of ``doc``; returns how many commands ran."""
    monkeypatch.chdir(folder)
    session, ran = Session(folder, doc), 0
    for block in read_blocks(ROOT / doc):
        where = f"{doc}:{block.line}"
        if "not run" in block.notes:
            continue
        if not all(_available(need) for need in block.notes.get("needs", [])):
            continue  # an example for another machine; check_document skips a doc of only these
        for command in block.notes.get("setup", []):
            code, output, _ = session.run_line(command)
            assert code == 0, f"{where}: setup `{command}` failed:\n{output}"
        if "file" in block.notes:
            (folder / block.notes["file"][0]).write_text(
                session.local("\n".join(block.lines)) + "\n")
            continue
        if block.lang in ("yaml", "yml"):
            _check_yaml(where, "\n".join(block.lines))
        elif block.lang in ("python", "py"):
            script = folder / "doc_example.py"
            script.write_text(session.local("\n".join(block.lines)) + "\n")
            done = subprocess.run([sys.executable, str(script)], cwd=folder, env=session.env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{where}: the Python example failed:\n{done.stderr}"
        elif any(line.startswith("$ ") for line in block.lines):
            starts = [i for i, line in enumerate(block.lines) if line.startswith("$ ")]
            for n, i in enumerate(starts):
                end = starts[n + 1] if n + 1 < len(starts) else len(block.lines)
                command = block.lines[i][2:]
                code, output, fixed = session.run_line(command)
                shown = [session.local(line) for line in block.lines[i + 1:end]]
                after = block.lines[end:end + 2]
                expected = (int(after[1]) if len(after) == 2 and after[0] == "$ echo $?"
                            and after[1].strip().isdigit() else None)
                if command.strip() == "echo $?":  # shows the previous command's code
                    expected = code
                _check_shown(where, command, shown, code, output, fixed, expected)
                ran += 1
        elif block.lang in SHELLS:
            for line in block.lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    code, output, _ = session.run_line(line)
                    assert code == 0, f"{where}: `{line}` exited {code}:\n{output}"
                    ran += 1
    return ran


def check_document(doc: str, folder: Path, monkeypatch) -> None:
    """Run ``doc``'s examples; a document whose every command needs something this machine
    lacks (e.g. docs/bench.md on one core) is skipped, not failed for running none."""
    if run_document(doc, folder, monkeypatch) or doc in NO_COMMANDS:
        return
    missing = sorted({need for block in read_blocks(ROOT / doc)
                      for need in block.notes.get("needs", []) if not _available(need)})
    if missing:
        pytest.skip(f"{doc}: every command needs {', '.join(missing)}")
    pytest.fail(f"{doc} has no command to run")


@pytest.mark.parametrize("doc", DOCS[1:])
def test_documented_examples_run(doc, tmp_path, monkeypatch):
    check_document(doc, tmp_path, monkeypatch)


def test_a_doc_whose_commands_all_need_two_cores_is_skipped_on_one_core(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs two-cores"):
        check_document("docs/bench.md", tmp_path, monkeypatch)


def test_readme_runs_top_to_bottom_as_one_sequence(tmp_path, monkeypatch):
    """Including the quick start's training and then the first session's, which must not
    trip over the run the quick start left in runs/digits."""
    assert DOCS[0] == "README.md"
    assert run_document("README.md", tmp_path, monkeypatch) > 30
    assert (tmp_path / "runs" / "digits" / "best.npz").is_file()
