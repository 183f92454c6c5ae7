"""Docs that cannot drift: every params key the docs name exists, and generated figures are current.

A params key is named as `section.key` or `section.key.sub`, where `section` is one of params.yaml's
top-level sections: backticked (`train.epochs`), in a `-S train.epochs=...` override, or as a bare word.
Scanned: README.md, docs/*.md, bench/README.md, params.yaml's comments, and the docstrings and comments
of lib/ and stages/ (never their code, where `model.channels` is an attribute). Not keys: file names
(`model.pt`, `train.h5`, `data.md`), longer dotted names (`lib.model.ttm`), calls (`model.embed(x)`), and
names lib/ defines (`trend.classic_features`, lib/signal/trend.py's function; `model.input_mean`, a buffer).
`section.prefix_*` names every key that starts so (`baselines.cnn_*`).
"""
import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
FILE_SUFFIXES = {"csv", "h5", "hea", "html", "json", "lock", "log", "md", "parquet", "png", "pt", "py",
                 "safetensors", "sh", "toml", "txt", "vital", "whl", "yaml", "yml"}
MARKDOWN = ("README.md", "docs/*.md", "bench/README.md")
ALLOWED = {"windows.lenght"}   # docs/data.md: the error a misspelt key prints
PYTHON = ("lib/**/*.py", "stages/*.py")


def key_paths(tree: dict, prefix: str = "") -> set:
    """Every dotted path of params.yaml, sections and intermediate mappings included."""
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= key_paths(value, f"{path}.")
    return out


def code_names() -> set:
    """Functions, classes, attributes (self.X = ...) and registered buffers that lib/ defines."""
    names = set()
    for path in ROOT.glob("lib/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register_buffer"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


KEYS, CODE_NAMES = key_paths(PARAMS), code_names()
TOKEN = re.compile(r"(?<![\w.\-/$])(?:" + "|".join(map(re.escape, PARAMS)) + r")(?:\.[A-Za-z_]\w*)+\*?(?![\w(/-])")


def unknown_keys(text: str, keys: set = KEYS) -> list:
    """The `section.key` tokens of `text` that params.yaml does not have."""
    found = []
    for match in TOKEN.finditer(text):
        token = match.group(0)
        parts = token.rstrip("*").split(".")
        if token in ALLOWED or parts[-1] in FILE_SUFFIXES or (len(parts) == 2 and parts[1] in CODE_NAMES):
            continue
        if token.endswith("*") and any(k.startswith(token[:-1]) for k in keys):
            continue
        if token not in keys:
            found.append(token)
    return found


def python_prose(source: str) -> str:
    """The docstrings and comments of a Python file, one per line."""
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def yaml_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)


def documents() -> list:
    """(relative path, prose) for every scanned file."""
    out = [(p, p.read_text()) for pattern in MARKDOWN for p in sorted(ROOT.glob(pattern))]
    out.append((ROOT / "params.yaml", yaml_comments((ROOT / "params.yaml").read_text())))
    out += [(p, python_prose(p.read_text())) for pattern in PYTHON for p in sorted(ROOT.glob(pattern))]
    return [(str(p.relative_to(ROOT)), text) for p, text in out]


def test_every_params_key_the_docs_name_exists():
    missing = {path: sorted(set(bad)) for path, text in documents() if (bad := unknown_keys(text))}
    assert not missing, f"keys named in the docs but absent from params.yaml: {missing}"


def test_the_checker_reports_an_unknown_key_and_ignores_what_is_not_a_key():
    snippet = """Set `train.nonexistent` or -S evaluate.bootstrap=10 -S data.download.retries=1; see
    data.md, models/model.pt, data/windows/train.h5, stages/evaluate.py, lib.model.ttm and model.embed(x)."""
    assert unknown_keys(snippet) == ["train.nonexistent"]
    assert unknown_keys("# train.epochs and train.epochz") == ["train.epochz"]
    assert unknown_keys("`baselines.cnn_*` and `baselines.gbm_*`") == ["baselines.gbm_*"]
    prose = python_prose('"""Reads `cv.nonexistent`."""\nx = model.channels  # see splits.missing\n')
    assert sorted(unknown_keys(prose)) == ["cv.nonexistent", "splits.missing"]


def test_generated_blocks_are_current():
    """scripts/docs_blocks.py on the committed metrics leaves README and docs as they are."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs_blocks

    for pattern in docs_blocks.DOCS:
        for path in sorted(ROOT.glob(pattern)):
            text = path.read_text()
            assert docs_blocks.render(text) == text, f"{path.relative_to(ROOT)}: run python scripts/docs_blocks.py"


def test_every_generated_block_names_a_command_that_exists():
    opened = re.compile(r"<!-- generated by: (?P<cmd>[^>]*?) -->")
    for path in [p for pattern in MARKDOWN for p in ROOT.glob(pattern)]:
        text = path.read_text()
        commands = opened.findall(text)
        assert len(commands) == text.count("<!-- end generated -->"), path
        for cmd in commands:
            script = cmd.split()[1]
            assert cmd.startswith("python ") and (ROOT / script).is_file(), (path, cmd)


def test_the_docs_blocks_checker_fails_on_a_drifted_figure():
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs_blocks

    text = (ROOT / "README.md").read_text()
    block = re.search(r"\| (\d\.\d{3}) \(", text)
    assert block, "README has no generated results table"
    drifted = text.replace(block.group(0), "| 0.123 (", 1)
    assert docs_blocks.render(drifted) == text


@pytest.mark.skipif(not (ROOT / "bench/results/run_all.json").exists(), reason="no bench results")
def test_bench_results_md_is_what_report_py_writes(tmp_path):
    out = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, "bench/report.py", "--out", str(out)], cwd=ROOT, check=True)
    image = re.compile(r"!\[scale\]\([^)]*\)")
    assert image.sub("", out.read_text()) == image.sub("", (ROOT / "bench/RESULTS.md").read_text()), \
        "bench/RESULTS.md is stale: python bench/report.py"


def test_readme_stays_short():
    """The README is the front page (what it is, the two commands, how to use and review it); details live in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
