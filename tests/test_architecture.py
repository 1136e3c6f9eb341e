"""Data flows one way (docs/architecture.md): data_prep produces, training and evaluation consume."""

import ast
import dataclasses
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(relative: str) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse((REPO / relative).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_trainer_and_the_evaluation_protocol_build_nothing():
    trainer, evaluation = imported_modules("llscore/trainer.py"), imported_modules("llscore/evaluation.py")
    producers = ("llscore_sim.tiny", "llscore_sim.mini_bench", "llscore.data.build", "llscore.data.inputs")
    assert not {m for m in trainer | evaluation if m.startswith(producers)}
    assert "llscore.data.prepared" in evaluation  # it reads what data_prep wrote


def test_the_library_never_imports_its_simulators():
    """llscore/ is what a user of a trained evaluator or a trainer on real data needs; the simulators of the
    embedded default (llscore_sim/) import it, never the other way round."""
    library = [path.relative_to(REPO).as_posix() for path in (REPO / "llscore").rglob("*.py")]
    assert len(library) > 20
    offenders = {f: sorted(m for m in imported_modules(f) if m.startswith("llscore_sim")) for f in library}
    assert {f: m for f, m in offenders.items() if m} == {}
    simulators = [path.relative_to(REPO).as_posix() for path in (REPO / "llscore_sim").rglob("*.py")]
    assert any("llscore.prompts" in imported_modules(f) for f in simulators)


def test_code_configs_and_docs_cite_only_the_repos_own_docs():
    files = [
        *REPO.glob("*.py"),
        REPO / "README.md",
        *(
            path
            for folder in ("llscore", "llscore_sim", "data_prep", "bench", "examples", "configs", "docs")
            for path in (REPO / folder).rglob("*")
            if path.suffix in {".py", ".md", ".yaml", ".json"}
        ),
    ]
    assert not [path for path in files if "DESIGN.md" in path.read_text()]
    for path in files:
        for doc in set(re.findall(r"docs/([\w.-]+\.md)", path.read_text())):
            assert (REPO / "docs" / doc).is_file(), f"{path.name} cites docs/{doc}, which does not exist"


def test_the_simulators_own_their_recipe_keys(tmp_path):
    """The library's recipe knows where data lives, not how simulated inputs are made: llscore_sim adds those
    keys as its own section, and the shipped recipes that set them read as before through it."""
    import pytest

    from llscore.config import DataSettings, load_config
    from llscore.errors import ConfigError
    from llscore_sim.settings import SimulatorSettings
    from llscore_sim.settings import load_config as load_with_simulators

    simulated = {f.name for f in dataclasses.fields(SimulatorSettings)}
    assert simulated and not simulated & {f.name for f in dataclasses.fields(DataSettings)}
    with pytest.raises(ConfigError, match=r"llscore_tiny\.yaml: unknown config key 'generate_mini_bench'"):
        load_config(REPO / "configs/llscore_tiny.yaml")
    tiny = load_with_simulators(REPO / "configs/llscore_tiny.yaml", ["--mini_bench_seed", "3"])
    simulators = tiny.section(SimulatorSettings)
    assert (simulators.generate_mini_bench, simulators.build_tiny_base) == (True, "qwen2_5_vl")
    assert (simulators.mini_bench_sources, simulators.mini_bench_seed) == (1000, 3)
    assert (
        tiny.data.max_val_images == 1000
        and load_config(None).section(SimulatorSettings) == SimulatorSettings()
    )
    missing = str(tmp_path / "none.safetensors")
    with pytest.raises(
        ConfigError, match=r"^command line: tiny_base_weights: .*none\.safetensors is not a file"
    ):
        load_with_simulators(None, ["--tiny_base_weights", missing])
    with pytest.raises(
        ConfigError, match=r"unknown config key '--mini_bench_source'; did you mean --mini_bench_sources"
    ):
        load_with_simulators(None, ["--mini_bench_source", "3"])
