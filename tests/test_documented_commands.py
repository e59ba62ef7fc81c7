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
- a ``--config-file DIR/config.yaml`` that is not in the repository is accepted only when an
  earlier command of the same block is a training tool (``WRITES_CONFIG``) whose overrides set
  its output folder to DIR (``OUTPUT_DIR DIR``, ``train.output_dir=DIR``): that run writes the
  file. The later command's overrides are then checked against what it writes: the earlier
  command's config file with the earlier overrides merged;
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
# Training tools that save their whole config as <output folder>/config.yaml, with the override
# that names that folder: yaml (KEY VALUE) or LazyConfig (a.b=c).
WRITES_CONFIG = {"tools/train_net.py": "OUTPUT_DIR", "tools/lazyconfig_train_net.py": "train.output_dir="}


def doc_files():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def shell_commands(text):
    """[(line number, [token, ...], block number)] of the shell commands in the fenced shell
    blocks of ``text``."""
    commands = []
    for number, block in enumerate(SHELL_BLOCK.finditer(text)):
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
                        commands.append((first_line + start, command, number))
                    command = []
                else:
                    command.append(token)
    return commands


def all_commands():
    cases = []
    for path in doc_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        commands = shell_commands(text)
        for i, (line, tokens, block) in enumerate(commands):
            earlier = [c[1] for c in commands[:i] if c[2] == block]
            cases.append(pytest.param(tokens, earlier, id=f"{os.path.relpath(path, ROOT)}:{line}"))
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


def _without_env(tokens):
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value before a command
        tokens = tokens[1:]
    return tokens


def written_config(config_file, earlier):
    """(tool, config file, overrides) of the last command of ``earlier`` (the commands before
    this one in its block) that is a training tool of WRITES_CONFIG and sets its output folder
    to the folder of ``config_file`` (a ``.../config.yaml``), or None."""
    if os.path.basename(config_file) != "config.yaml":
        return None
    folder = os.path.normpath(os.path.dirname(config_file))
    for tokens in reversed(earlier):
        tokens = _without_env(tokens)
        if len(tokens) < 2 or not PYTHONS.match(tokens[0]) or tokens[1] not in WRITES_CONFIG:
            continue
        tool, key = tokens[1], WRITES_CONFIG[tokens[1]]
        args = _parse(_tool(tool), tool, tokens[2:])
        opts = list(getattr(args, "opts", None) or [])
        if key.endswith("="):
            dirs = [o[len(key):] for o in opts if o.startswith(key)]
        else:
            dirs = [v for k, v in zip(opts[::2], opts[1::2]) if k == key]
        if dirs and os.path.normpath(dirs[-1]) == folder:
            return tool, args.config_file, opts
    return None


def _config_files(module, path, args, earlier=()):
    """[(config file, what wrote it)]: ``what wrote it`` is None for a file of the repository,
    else written_config's (tool, config file, overrides) of the earlier command writing it."""
    files = getattr(args, "config_file", None)
    if files == "":
        pytest.fail(f"{path}: --config-file is missing (the tool cannot run without one)")
    if files is None:
        files = getattr(module, "DEFAULT_CONFIGS", None)
        if files is None:
            return []
    files = [files] if isinstance(files, str) else list(files)
    found = []
    for f in files:
        writer = None if os.path.isfile(os.path.join(ROOT, f)) else written_config(f, earlier)
        assert writer or os.path.isfile(os.path.join(ROOT, f)), (
            f"{path}: --config-file {f} does not exist, and no earlier command of the block is a training "
            f"tool ({sorted(WRITES_CONFIG)}) whose output folder is {os.path.dirname(f) or '.'}"
        )
        found.append((f, writer))
    return found


def check_yaml_keys(config_file, pairs, where, base_pairs=()):
    """Each KEY of ``pairs`` (["KEY", "VALUE", ...]) is a key of ``config_file`` (project defaults
    included, then ``base_pairs`` merged) and its VALUE merges into it."""
    from detr_panoptic_d2.engine import load_config

    assert len(pairs) % 2 == 0, f"{where}: overrides must be KEY VALUE pairs, got {pairs}"
    cfg, _ = load_config(config_file)
    cfg.merge_from_list(list(base_pairs))
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


def check_tool(path, argv, earlier=()):
    assert os.path.isfile(os.path.join(ROOT, path)), f"{path} does not exist"
    module = _tool(path)
    args = _parse(module, path, argv)
    if args is None:
        return
    opts = list(getattr(args, "opts", None) or [])
    baseline = [x for pair in getattr(args, "baseline", None) or [] for x in pair]
    for config_file, writer in _config_files(module, path, args, earlier):
        where = f"{path} --config-file {config_file}"
        if writer is not None:
            tool, source, source_opts = writer
            where += f" (written by {tool} --config-file {source})"
            if WRITES_CONFIG[tool].endswith("="):
                check_lazy_keys(source, opts, where)
            else:
                check_yaml_keys(source, opts + baseline, where, base_pairs=source_opts)
        elif config_file.endswith(".py"):
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


def check_command(tokens, earlier=()):
    tokens = _without_env(tokens)
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
        return check_tool(rest[0], rest[1:], earlier)
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


def test_a_written_config_counts_in_its_own_block_only():
    """A config a training command writes is accepted later in its block, against the earlier
    command's config; not in another block, and not for another output folder."""
    train = "python tools/train_net.py --config-file configs/shapes/detr_R18_shapes.yaml OUTPUT_DIR output/a\n"
    evaluate = "python tools/train_net.py --config-file output/a/config.yaml --eval-only MODEL.WEIGHTS output/a/m.pth\n"
    one_block = shell_commands(f"```bash\n{train}{evaluate}```\n")
    check_command(one_block[1][1], [one_block[0][1]])
    two_blocks = shell_commands(f"```bash\n{train}```\n\n```bash\n{evaluate}```\n")
    assert two_blocks[0][2] != two_blocks[1][2]
    with pytest.raises(AssertionError, match="does not exist, and no earlier command"):
        check_command(two_blocks[1][1], [])
    other = shell_commands(f"```bash\n{train.replace('output/a', 'output/b')}{evaluate}```\n")
    with pytest.raises(AssertionError, match="does not exist, and no earlier command"):
        check_command(other[1][1], [other[0][1]])
    with pytest.raises(AssertionError, match="MODEL.WEIGHT is not a key"):
        check_command(one_block[1][1][:-2] + ["MODEL.WEIGHT", "x.pth"], [one_block[0][1]])


@pytest.mark.parametrize("tokens, earlier", COMMANDS)
def test_documented_command(tokens, earlier):
    check_command(tokens, earlier)


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
