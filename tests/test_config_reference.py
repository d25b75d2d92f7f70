"""docs/configuration.md against the checker in firmware/alerts/config.py.

The accepted keys come from the checker itself: every call of its unknown-key check
(``_check_keys``) is recorded while the doc's examples are validated, with the section
it checked and the allowed keys it passed. The doc must name each of those keys in a
table of that section, and every example in a ```json block must pass the checker.

These tests rely on the doc's layout. A section starts at a heading whose code spans
name it, such as ``## `wifi` `` or ``### `dht11` and `dht22` ``, and the top-level keys
are under ``## Top level``. A key is named when a table row's first cell is that key in
backticks. The first ```json block is a complete config.json, and the top-level keys of
each later block replace those of the first.
"""

import ast
import copy
import json
import re
import sys
from pathlib import Path

import pytest
from alerts import config as checker

REPO_DIR = Path(__file__).resolve().parent.parent
DOC_PATH = REPO_DIR / "docs" / "configuration.md"
CHECKER_PATH = REPO_DIR / "firmware" / "alerts" / "config.py"
TOP_LEVEL_HEADING = "Top level"

DOC_TEXT = DOC_PATH.read_text(encoding="utf-8")
JSON_BLOCKS = re.findall(r"^```json\n(.*?)^```", DOC_TEXT, re.MULTILINE | re.DOTALL)


def doc_sections(text):
    """Return (section names, keys named in the first column of its table rows) per heading."""
    sections = []
    for part in re.split(r"^(?=#{1,6} )", text, flags=re.MULTILINE):
        heading, _, body = part.partition("\n")
        if not heading.startswith("#"):
            continue
        title = heading.lstrip("#").strip()
        names = set(re.findall(r"`([^`]+)`", title))
        if title == TOP_LEVEL_HEADING:
            names.add("")
        keys = set()
        for line in body.splitlines():
            if line.startswith("|"):
                first_cell = line.split("|")[1]
                keys.update(re.findall(r"`([^`]+)`", first_cell))
        sections.append((names, keys))
    return sections


def documented_keys(section):
    """Return the keys named in the tables of every doc section called section."""
    keys = set()
    for names, section_keys in doc_sections(DOC_TEXT):
        if section in names:
            keys |= section_keys
    return keys


def example_configs():
    """Return the doc's examples as complete configs: the first, then each later one merged into it."""
    base = json.loads(JSON_BLOCKS[0])
    configs = [base]
    for block in JSON_BLOCKS[1:]:
        config = copy.deepcopy(base)
        config.update(json.loads(block))
        configs.append(config)
    return configs


def load_example(config, directory):
    """Run the checker's load() on config written as config.json in directory, without a board.json."""
    path = directory / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return checker.load(str(path), board_path=str(directory / "board-absent.json"))


def record_key_checks(directory):
    """Validate every example and return each unknown-key check made: (section, sensor type, allowed, line)."""
    calls = []
    original = checker._check_keys

    def recording(section, allowed, prefix):
        # "sensors[2]." -> "sensors", "smtp.oauth2." -> "smtp.oauth2", "" -> "" (top level).
        name = re.sub(r"\[\d+\]", "", prefix).rstrip(".")
        kind = section.get("type") if name == "sensors" else None
        calls.append((name, kind, tuple(allowed), sys._getframe(1).f_lineno))
        return original(section, allowed, prefix)

    checker._check_keys = recording
    try:
        for config in example_configs():
            load_example(config, directory)
    finally:
        checker._check_keys = original
    return calls


def check_keys_call_lines():
    """Return the (first, last) line of each call of _check_keys in the checker's source."""
    tree = ast.parse(CHECKER_PATH.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.end_lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_check_keys"
    ]


@pytest.fixture
def key_checks(tmp_path):
    return record_key_checks(tmp_path)


def test_doc_has_examples():
    assert len(JSON_BLOCKS) >= 2
    assert "device" in json.loads(JSON_BLOCKS[0]), "the first json block must be a complete config.json"


@pytest.mark.parametrize("index", range(len(JSON_BLOCKS)))
def test_example_passes_checker(index, tmp_path):
    assert checker.check_json(JSON_BLOCKS[index]) is None
    config = example_configs()[index]
    load_example(config, tmp_path)


def test_examples_cover_sensor_types():
    used = {sensor["type"] for config in example_configs() for sensor in config["sensors"]}
    assert used == set(checker.SENSOR_TYPES)


def test_examples_cover_rule_keys(key_checks):
    accepted = {key for name, _, allowed, _ in key_checks if name == "rules" for key in allowed}
    used = {key for config in example_configs() for rule in config.get("rules") or () for key in rule}
    assert accepted, "no example has a rule"
    assert accepted - used == set()


def test_examples_reach_every_key_check(key_checks):
    reached = {line for _, _, _, line in key_checks}
    for first, last in check_keys_call_lines():
        assert any(first <= line <= last for line in reached), "config.py line %d: no example reaches it" % first


def test_doc_names_section_keys(key_checks):
    accepted = {}
    for name, _, allowed, _ in key_checks:
        if name != "sensors":
            accepted.setdefault(name, set()).update(allowed)
    assert "" in accepted
    for name in sorted(accepted):
        missing = accepted[name] - documented_keys(name)
        assert missing == set(), "docs/configuration.md, section %r lacks %s" % (name or TOP_LEVEL_HEADING, missing)


def test_doc_names_sensor_keys(key_checks):
    by_type = {}
    for name, kind, allowed, _ in key_checks:
        if name == "sensors":
            by_type.setdefault(kind, set()).update(allowed)
    assert set(by_type) == set(checker.SENSOR_TYPES)
    common = set.intersection(*by_type.values())
    assert common - documented_keys("sensors") == set()
    for kind in sorted(by_type):
        missing = by_type[kind] - common - documented_keys(kind)
        assert missing == set(), "docs/configuration.md, sensor type %s lacks %s" % (kind, missing)


def test_doc_names_choices():
    for value in checker.SECURITY_MODES + checker.SENSOR_TYPES:
        assert '"%s"' % value in DOC_TEXT
