"""The DVC graph is checked against the code, never trusted: code deps and params keys of every stage.

* Code: each stage's script and every project module it imports, transitively (by AST, imports
  inside functions included), must be covered by its `deps`; a declared code dep must be run
  by the stage (a folder only when the stage runs every module in it, its __init__.py included).
* Params: each stage's `config(params)` is the only place it reads params.yaml; it is called on a
  mapping that records every key read. Read keys must be declared (except
  `lib.core.config.NOT_DEPENDENCIES`), declared keys must be read whole, and a path-valued key
  (the clinical table, the TTM weights) must also be a dep.

`python tests/test_dvc_graph.py` prints each stage's derived deps and params, to paste into dvc.yaml;
a failing check prints its stage's.
"""
import ast
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("lib", "stages")
# params whose value is an input file/folder
PATH_KEYS = ("data.clinical_csv", "external.clinical_csv", "model.weights_dir")


def stages() -> dict:
    """{stage name: spec} from dvc.yaml, foreach stages expanded to their first item."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, st in spec["stages"].items():
        if "foreach" in st:
            st = yaml.safe_load(yaml.safe_dump(st["do"]).replace("${item}", "0"))
        out[name] = st
    return out


def entry_script(cmd: str) -> Path:
    match = re.search(r"python[0-9.]*\s+(stages/\S+\.py)", cmd)
    assert match, f"stage command does not run a stages/ script: {cmd}"
    return ROOT / match.group(1)


def module_file(name: str):
    for candidate in (ROOT / Path(*name.split(".")).with_suffix(".py"), ROOT / Path(*name.split(".")) / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path):
    """Every module name an `import` or `from ... import` in the file can refer to (relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def code_closure(script: Path) -> set:
    """The script and every project file it runs: imported modules and their packages' __init__.py."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found and found not in seen:
                    todo.append(found)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def dep_paths(st) -> list:
    return [str(d if not isinstance(d, dict) else next(iter(d))).rstrip("/") for d in st.get("deps", [])]


def param_keys(st) -> list:
    keys = []
    for p in st.get("params", []):
        keys += [p] if isinstance(p, str) else [k for d in p.values() for k in d]
    return keys


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep + "/")


def code_problems(name, st) -> list:
    runs = code_closure(entry_script(st["cmd"]))
    deps = dep_paths(st)
    code_deps = [d for d in deps if d.split("/")[0] in CODE_DIRS]
    problems = [f"{name}: runs {f} but does not depend on it" for f in sorted(runs)
                if not any(covers(d, f) for d in deps)]
    for dep in code_deps:
        inside = {p.relative_to(ROOT).as_posix() for p in (ROOT / dep).rglob("*.py")} if (ROOT / dep).is_dir() \
            else {dep}
        unused = sorted(inside - runs)
        if unused:
            problems.append(f"{name}: depends on {dep} but does not run {', '.join(unused)}")
    return problems


class Recorder(Mapping):
    """A read-only view of params that records the dotted path of every value read.

    Key names (`in`, iteration, `keys()`) are not reads; `items()`/`values()` read the whole mapping."""

    def __init__(self, data, reads: set, path: str = ""):
        self._data, self._reads, self._path = data, reads, path

    def _at(self, key):
        return f"{self._path}.{key}" if self._path else str(key)

    def __getitem__(self, key):
        value = self._data[key]
        if isinstance(value, dict):
            return Recorder(value, self._reads, self._at(key))
        self._reads.add(self._at(key))
        return value

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data

    def keys(self):
        return self._data.keys()

    def items(self):
        self._reads.add(self._path)
        return self._data.items()

    def values(self):
        self._reads.add(self._path)
        return self._data.values()


def load_stage(script: Path):
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keys_read(script: Path, params: dict) -> set:
    reads = set()
    load_stage(script).config(Recorder(params, reads))
    return reads


def leaves(params: dict, key: str) -> list:
    value = params
    for part in key.split("."):
        value = value[part]
    if not isinstance(value, dict):
        return [key]
    return [leaf for k in value for leaf in leaves(params, f"{key}.{k}")]


def within(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def params_problems(name, st, params) -> list:
    from lib.core.params import NOT_DEPENDENCIES

    reads = keys_read(entry_script(st["cmd"]), params)
    declared = param_keys(st)
    problems = [f"{name}: reads {r} but does not declare it" for r in sorted(reads)
                if not within(r, declared) and not within(r, NOT_DEPENDENCIES)]
    for key in declared:
        if any(within(leaf, NOT_DEPENDENCIES) for leaf in leaves(params, key)):
            problems.append(f"{name}: declares {key}, which holds a key no output depends on (NOT_DEPENDENCIES)")
        unread = [leaf for leaf in leaves(params, key) if not within(leaf, reads)]
        if unread:
            problems.append(f"{name}: declares {key} but never reads {', '.join(unread)}")
    deps = dep_paths(st)
    for key in PATH_KEYS:
        if within(key, reads):
            value = str(leaves_value(params, key)).rstrip("/")
            if value not in deps:
                problems.append(f"{name}: reads the path {key}={value} but does not depend on it")
    return problems


def leaves_value(params, key):
    for part in key.split("."):
        params = params[part]
    return params


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("name", list(stages()))
def test_stage_depends_on_exactly_the_code_it_runs(name):
    problems = code_problems(name, stages()[name])
    assert problems == [], "\n".join([*problems, f"paste into dvc.yaml, stage {name}:", stage_yaml(name)])


@pytest.mark.parametrize("name", list(stages()))
def test_stage_declares_exactly_the_params_it_reads(name, params):
    problems = params_problems(name, stages()[name], params)
    assert problems == [], "\n".join([*problems, f"paste into dvc.yaml, stage {name}:", stage_yaml(name)])


def test_params_are_read_only_through_a_stage_config():
    """`read_params` is called once per stage, in main, and nowhere in lib; no file opens params.yaml."""
    for script in sorted((ROOT / "stages").glob("*.py")):
        source = script.read_text()
        assert source.count("read_params()") == 1 and "config(read_params())" in source.replace(
            "params = read_params()", "config(read_params())"), script.name
    for module in (ROOT / "lib").rglob("*.py"):
        if module.relative_to(ROOT).as_posix() != "lib/core/params.py":
            assert "read_params" not in module.read_text() and "params.yaml\")" not in module.read_text(), module


def test_a_missing_import_or_params_read_is_caught(params):
    """The checks above fail on an undeclared module and an undeclared key (the bugs they exist for)."""
    st = dict(stages()["splits"])
    st["deps"] = [d for d in dep_paths(st) if d != "lib/data/splits.py"]
    assert "splits: runs lib/data/splits.py but does not depend on it" in code_problems("splits", st)
    st = dict(stages()["splits"])
    st["params"] = [k for k in leaves(params, "splits") if k != "splits.seed"]
    assert "splits: reads splits.seed but does not declare it" in params_problems("splits", st, params)
    st["params"] = [*param_keys(stages()["splits"]), "demo.seed"]
    assert "splits: declares demo.seed but never reads demo.seed" in params_problems("splits", st, params)


def compress(files: set) -> list:
    """Files as deps: a folder replaces its files when the stage runs every module in it."""
    files, out = set(files), []
    folders = sorted({str(Path(f).parent) for f in files if "/" in f}, key=lambda d: -d.count("/"))
    for folder in folders:
        inside = {q.relative_to(ROOT).as_posix() for q in (ROOT / folder).rglob("*.py")}
        if folder.count("/") and inside <= files:
            files -= inside
            out.append(folder)
    return sorted(out + sorted(files))


def declared_params(reads: set, params: dict, prefix: str = "") -> list:
    """The read keys as dvc.yaml names them: a section or sub-mapping whole when every key in it is read."""
    from lib.core.params import NOT_DEPENDENCIES

    out = []
    for key in (params if not prefix else leaves_value(params, prefix)):
        path = f"{prefix}.{key}" if prefix else key
        if not any(within(r, [path]) for r in reads) or within(path, NOT_DEPENDENCIES):
            continue
        inside = leaves(params, path)
        if all(within(leaf, reads) for leaf in inside) and not any(within(leaf, NOT_DEPENDENCIES) for leaf in inside):
            out.append(path)
        else:
            out += declared_params(reads, params, path)
    return out


def stage_yaml(name: str) -> str:
    """The stage's `deps:` and `params:` as they belong in dvc.yaml, derived from the code: its code
    deps, then the data deps it declares today, and every params key its `config` reads."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    st = stages()[name]
    script = entry_script(st["cmd"])
    code = compress(code_closure(script))
    data = [d for d in dep_paths(st) if d.split("/")[0] not in CODE_DIRS]
    order = sorted(code, key=lambda d: (not d.startswith("stages/"), d.count("/") == 1 and not d.endswith(".py"), d))
    lines = ["    deps:", *(f"      - {d}" for d in [*order, *data])]
    keys = declared_params(keys_read(script, params), params)
    lines.append("    params: [")
    for key in keys:   # wrapped as dvc.yaml keeps them
        if len(lines[-1]) + len(key) + 2 > 118:
            lines.append("             ")
        lines[-1] += key + ", "
    lines[-1] = lines[-1].rstrip(", ") + "]"
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    for stage in stages():
        print(f"  {stage}:\n{stage_yaml(stage)}")


FLOORS = ("core", "signal", "data", "model", "eval")


def test_packages_import_downward_only():
    """core < signal < data < model < eval: a module never imports from a package above its own."""
    wrong = []
    for path in sorted((ROOT / "lib").rglob("*.py")):
        own = path.relative_to(ROOT / "lib").parts[0]
        if own not in FLOORS:
            continue
        for name in imported_names(path):
            parts = name.split(".")
            if parts[0] == "lib" and len(parts) > 1 and parts[1] in FLOORS \
                    and FLOORS.index(parts[1]) > FLOORS.index(own):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


EXTERNAL_STAGES = ("external_cohort", "external_windows", "external_evaluate")


def test_external_params_rerun_only_the_external_stages(params):
    """Changing external.* (another cohort, its source, its recalibration) can rerun only the external stages:
    no other stage reads an external key or depends on what an external stage writes. So external validation
    never retrains, recalibrates or refits a baseline."""
    specs = stages()
    outputs = {name: [str(next(iter(o)) if isinstance(o, dict) else o) for o in
                      [*specs[name].get("outs", []), *specs[name].get("metrics", []), *specs[name].get("plots", [])]]
               for name in EXTERNAL_STAGES}
    for name, st in specs.items():
        if name in EXTERNAL_STAGES:
            continue
        assert not [k for k in keys_read(entry_script(st["cmd"]), params) if within(k, ["external"])], name
        assert not [k for k in param_keys(st) if within(k, ["external"])], name
        for dep in dep_paths(st):
            assert not any(covers(out, dep) or covers(dep, out) for outs in outputs.values() for out in outs), \
                f"{name} depends on {dep}, an external stage's output"
    reads = {name: keys_read(entry_script(specs[name]["cmd"]), params) for name in EXTERNAL_STAGES}
    assert all(any(within(k, ["external"]) for k in keys) for keys in reads.values())
