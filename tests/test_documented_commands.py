"""Every shell command in README.md and docs/**/*.md runs as written, up to its data.

Each fenced ``bash``/``sh``/``shell`` block is split into commands (line continuations joined,
comments dropped, ``&&`` / ``;`` / ``|`` separating commands). Checked for each, without
building any model:

- ``python tools/X.py ...``: the tool exists; its argparse parser (the tool's ``get_parser`` or
  ``parse_args``, else those of the module its ``main`` comes from) accepts every flag, with
  the required ones; each ``--config-file`` exists (Detectron2's parser, whose default is "",
  must be given one); each trailing ``KEY VALUE`` override (and ``--baseline KEY VALUE``) names a
  key of that yaml config, loaded with the project's ``load_config``; each ``a.b=c`` override
  names a key of that LazyConfig;
- ``python -m MODULE``: the module is importable; ``pip``: its requirement files exist;
- ``make TARGET VAR=...``: the target and the variable are the Makefile's; ``DEMO_ARGS`` holds
  keys of the demo's config;
- other programs: only those of ``OTHER_PROGRAMS``.

Runnable blocks hold no placeholders (``<path>``): a token with ``<...>`` fails.
"""
import contextlib
import glob
import importlib
import importlib.util
import io
import os
import re
import shlex

import pytest

from .conftest import ROOT

SHELL_BLOCK = re.compile(r"^```(bash|sh|shell)\s*$(.*?)^```\s*$", re.M | re.S)
PYTHONS = re.compile(r"^(python3?|(\S*/)?bin/python3?)$")
OTHER_PROGRAMS = {"git", "cd", "tensorboard", "source", "export", "mkdir", "ls", "unzip"}
SEPARATORS = {"&&", "||", ";", "|"}
PLACEHOLDER = re.compile(r"<[A-Za-z][^>]*>")
DEMO_CONFIG = "configs/shapes/detr_R18_shapes.yaml"


def doc_files():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def shell_commands(text):
    """[(line number, [token, ...])] of the shell commands in the fenced shell blocks of ``text``."""
    commands = []
    for block in SHELL_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(2)) + 1
        lines = block.group(2).split("\n")
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            tokens = shlex.split(line, comments=True)
            command = []
            for token in tokens + [";"]:
                if token in SEPARATORS:
                    if command:
                        commands.append((first_line + start, command))
                    command = []
                else:
                    command.append(token)
    return commands


def all_commands():
    cases = []
    for path in doc_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line, tokens in shell_commands(text):
            cases.append(pytest.param(tokens, id=f"{os.path.relpath(path, ROOT)}:{line}"))
    return cases


_TOOLS = {}


def _tool(path):
    if path not in _TOOLS:
        spec = importlib.util.spec_from_file_location("doc_tool_" + re.sub(r"\W", "_", path), os.path.join(ROOT, path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[path] = module
    return _TOOLS[path]


def _parse(module, path, argv):
    """The tool's parsed arguments for ``argv``; fails with argparse's message when refused."""
    sources = [module]
    main = getattr(module, "main", None)
    if main is not None and getattr(main, "__module__", None) not in (None, module.__name__):
        sources.append(importlib.import_module(main.__module__))
    for source in sources:
        for name in ("get_parser", "build_parser", "argument_parser", "parse_args"):
            fn = getattr(source, name, None)
            if fn is None:
                continue
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                    return fn(argv) if name == "parse_args" else fn().parse_args(argv)
            except SystemExit as e:
                if e.code == 0:  # --help
                    return None
                pytest.fail(f"{path} refuses {shlex.join(argv)}:\n{stderr.getvalue()}")
    pytest.fail(f"{path} exposes no parser (get_parser() or parse_args(argv)) to check its documented command")


def _config_files(module, path, args):
    files = getattr(args, "config_file", None)
    if files == "":
        pytest.fail(f"{path}: --config-file is missing (the tool cannot run without one)")
    if files is None:
        files = getattr(module, "DEFAULT_CONFIGS", None)
        if files is None:
            return []
    files = [files] if isinstance(files, str) else list(files)
    for f in files:
        assert os.path.isfile(os.path.join(ROOT, f)), f"{path}: --config-file {f} does not exist"
    return files


def check_yaml_keys(config_file, pairs, where):
    """Each KEY of ``pairs`` (["KEY", "VALUE", ...]) is a key of ``config_file`` (project defaults
    included) and its VALUE merges into it."""
    from detr_panoptic_d2.engine import load_config

    assert len(pairs) % 2 == 0, f"{where}: overrides must be KEY VALUE pairs, got {pairs}"
    cfg, _ = load_config(config_file)
    for key, value in zip(pairs[::2], pairs[1::2]):
        node = cfg
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{where}: {key} is not a key of {config_file}"
            node = node[part]
        try:
            cfg.merge_from_list([key, value])
        except Exception as e:  # yacs: a value of another type than the key's
            pytest.fail(f"{where}: {key} {value!r} does not merge into {config_file}: {e}")


def check_lazy_keys(config_file, overrides, where):
    """Each ``a.b=c`` of ``overrides`` names an existing key of the LazyConfig ``config_file``."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf

    cfg = LazyConfig.load(os.path.join(ROOT, config_file))
    missing = object()
    for override in overrides:
        assert "=" in override, f"{where}: LazyConfig overrides are a.b=c, got {override!r}"
        key = override.split("=", 1)[0]
        found = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
        assert found is not missing, f"{where}: {key} is not a key of {config_file}"


def check_tool(path, argv):
    assert os.path.isfile(os.path.join(ROOT, path)), f"{path} does not exist"
    module = _tool(path)
    args = _parse(module, path, argv)
    if args is None:
        return
    opts = list(getattr(args, "opts", None) or [])
    baseline = [x for pair in getattr(args, "baseline", None) or [] for x in pair]
    for config_file in _config_files(module, path, args):
        where = f"{path} --config-file {config_file}"
        if config_file.endswith(".py"):
            check_lazy_keys(config_file, opts, where)
        else:
            check_yaml_keys(config_file, opts + baseline, where)


def makefile():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        text = f.read()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\??:?=", text, re.M))
    return targets, variables


def check_make(tokens):
    targets, variables = makefile()
    for token in tokens:
        if "=" in token:
            name, value = token.split("=", 1)
            assert name in variables, f"make: {name} is not a variable of the Makefile ({sorted(variables)})"
            if name == "DEMO_ARGS":
                check_yaml_keys(DEMO_CONFIG, shlex.split(value), "make demo DEMO_ARGS")
        elif not token.startswith("-"):
            assert token in targets, f"make: no target {token!r} in the Makefile ({sorted(targets)})"


def check_pip(tokens):
    for flag, value in zip(tokens, tokens[1:]):
        if flag in ("-r", "-c", "--requirement", "--constraint", "-e", "--editable"):
            path = re.sub(r"\[[\w,]+\]$", "", value)  # .[export]: the folder with extras
            assert os.path.exists(os.path.join(ROOT, path)), f"pip: {value} does not exist"


def check_command(tokens):
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value before a command
        tokens = tokens[1:]
    bad = [t for t in tokens if PLACEHOLDER.search(t)]
    assert not bad, f"placeholders in a runnable block: {bad}"
    program, rest = tokens[0], tokens[1:]
    if PYTHONS.match(program):
        if rest[:1] == ["-m"]:
            module, rest = rest[1], rest[2:]
            if module == "pip":
                return check_pip(rest)
            assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
            return None
        return check_tool(rest[0], rest[1:])
    if program == "make":
        return check_make(rest)
    if program in ("pip", "pip3"):
        return check_pip(rest)
    assert program in OTHER_PROGRAMS, f"{program!r}: not a project tool, make or one of {sorted(OTHER_PROGRAMS)}"
    return None


COMMANDS = all_commands()


def test_the_docs_hold_commands():
    """The blocks are found at all (README's set-up and demo commands among them)."""
    flat = [" ".join(c.values[0]) for c in COMMANDS]
    assert "make setup" in flat and "make demo" in flat
    assert any(c.startswith("python tools/train_net.py") for c in flat)


@pytest.mark.parametrize("tokens", COMMANDS)
def test_documented_command(tokens):
    check_command(tokens)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path):
    """GitHub's anchors of the headings of a markdown file."""
    with open(path, encoding="utf-8") as f:
        text = SHELL_BLOCK.sub("", f.read())
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_reach_a_file_and_heading(path):
    with open(path, encoding="utf-8") as f:
        links = LINK.findall(f.read())
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        assert os.path.exists(target), f"{link}: {target} does not exist"
        if anchor:
            assert anchor in heading_anchors(target), f"{link}: no heading #{anchor} in {os.path.relpath(target, ROOT)}"


def test_readme_is_short_and_links_every_page():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 200
    pages = {os.path.relpath(p, ROOT) for p in doc_files()[1:] if "/pending/" not in p}
    linked = {os.path.normpath(link.partition("#")[0]) for link in LINK.findall(readme)}
    assert pages <= linked, f"pages not linked from README.md: {sorted(pages - linked)}"
