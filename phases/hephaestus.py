"""Reading a Hephaestus workflow folder as an Omoi workflow definition.

Hephaestus keeps a workflow as a folder: one YAML file per phase, named
`NN_name.yaml` (the number gives the order, the name the phase), and an
optional `phases_config.yaml` with the workflow's settings.
`read_hephaestus_folder` turns such a folder into the WorkflowDefinition an
Omoi workflow file would make, then reads that back as a file, so a folder
loads through workflow_load under the very rules of Omoi's own files. Every
problem of every file is reported at once, located by file, key and line, and
a folder with any problem is refused whole. Nothing here touches the database.

What becomes what:

- the file name: `03_api_design.yaml` is phase PHASE_API_DESIGN, named
  "Api Design", third in order;
- description → description; additional_notes → the phase prompt;
  done_definitions → done definitions; next_steps → the next-steps guide;
- outputs → expected outputs, optional (the gate cannot match free text),
  each with its text as the rule a person checks;
- validation.criteria → validation criteria, shown to agents; a
  `file_exists` check also becomes a required expected output of type
  `file` with its target (or pattern) as the pattern, which the gate checks;
  with `enabled: false` no criterion is loaded and a note says so;
- working_directory, cli_tool, cli_model → the phase's configuration, under
  the same names (served to agents with the phase);
- phases_config.yaml: has_result, result_criteria, on_result_found → the
  workflow's result settings; enable_tickets and board_config are checked but
  have no counterpart (every Omoi ticket is on a board whose columns are the
  phases), so a note names them;
- transitions are free-form, as in Hephaestus: each phase may move to every
  other, to Done and to Blocked, which are added (Done terminal, Blocked a
  holding phase that leads back to any phase) unless the folder has phases
  of those names; each phase gets a board column of its own.

Keys may be written in snake_case or Title_Case (`Done_Definitions`); any
letter case is read alike, and a key given twice in two spellings is an
error. Other keys are refused, so that a misspelt key is not lost silently;
a validation criterion alone may carry keys of its own, kept as written.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from pydantic import ValidationError

from .schema import MAX_KEY, MAX_NAME, MAX_PHASES, SLUG_PATTERN, PhaseDefinition, WorkflowDefinition
from .workflow_files import (
    Problem,
    WorkflowFileError,
    describe_pydantic_error,
    dump_workflow,
    format_path,
    parse_workflow,
    read_yaml,
)

PHASE_FILE = re.compile(r"(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.(?i:ya?ml)")
CONFIG_FILES = ("phases_config.yaml", "phases_config.yml")
YAML_SUFFIXES = (".yaml", ".yml")
PHASE_KEYS = (
    "description",
    "done_definitions",
    "additional_notes",
    "outputs",
    "next_steps",
    "working_directory",
    "validation",
    "cli_tool",
    "cli_model",
)
CONFIG_KEYS = ("has_result", "result_criteria", "on_result_found", "enable_tickets", "board_config")
VALIDATION_KEYS = ("enabled", "criteria")
CRITERION_KEYS = ("description", "check_type", "target", "pattern", "command")
# Phase settings Hephaestus gives to the agent it starts; Omoi keeps them in the phase's configuration.
CONFIGURATION_KEYS = ("working_directory", "cli_tool", "cli_model")
DONE, BLOCKED = "PHASE_DONE", "PHASE_BLOCKED"
# The expected-output types the folder's outputs and file checks become.
OUTPUT_TYPE, FILE_TYPE = "output", "file"
_BULLET = re.compile(r"^(?:[-*•]|\d+[.)])\s+")


@dataclass
class HephaestusWorkflow:
    """A folder read as a workflow definition, and what it holds that Omoi does not load (for the person loading it)."""

    definition: WorkflowDefinition
    notes: list = field(default_factory=list)


@dataclass
class _PhaseFile:
    name: str
    number: int
    key: str
    title: str


def phase_key(word):
    """The key of the phase a file name gives: `api_design` (from `03_api_design.yaml`) is PHASE_API_DESIGN."""
    return "PHASE_" + word.upper().replace("-", "_")


def phase_title(word):
    """The name of the phase a file name gives: `api_design` is "Api Design"."""
    return " ".join(part[:1].upper() + part[1:] for part in re.split(r"[\s_-]+", word) if part)


def _column_key(key):
    return key.lower().removeprefix("phase_").replace("_", "-")


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _items(text):
    """A text's items, one per non-blank line, without list bullets (`- `, `* `, `1. `)."""
    return [_BULLET.sub("", line.strip()) for line in text.splitlines() if line.strip()]


class _Reader:
    """Reads the folder's files one by one, collecting every problem and note."""

    def __init__(self, folder):
        self.folder = folder
        self.problems = []
        self.notes = []

    def add(self, file, parts, message, index=None):
        line = index.line_for(parts) if index is not None else None
        self.problems.append(Problem(format_path(parts), message, line, file=file))

    def read(self, name):
        """(values, line index) of a file, or None when it cannot be read as YAML (its problems recorded)."""
        try:
            with open(self.folder / name, "rb") as handle:
                text = handle.read(settings.OMOI_MAX_WORKFLOW_BYTES + 1)
        except OSError as exc:
            self.add(name, (), f"cannot read the file: {exc.strerror}")
            return None
        try:
            return read_yaml(text, name)
        except WorkflowFileError as exc:
            self.problems += [dataclasses.replace(problem, file=name) for problem in exc.problems]
            return None

    def keys(self, name, index, mapping, known, prefix=(), *, what, keep_unknown=False):
        """The mapping's known keys, by their snake_case name: {name: (key as written, value)}.

        Unknown keys are refused, or returned apart as {key: value} with `keep_unknown`.
        """
        found, unknown = {}, {}
        for key, value in mapping.items():
            # read_yaml refuses keys that are not text.
            canonical = key.lower()
            if canonical not in known:
                if keep_unknown:
                    unknown[key] = value
                else:
                    self.add(name, (*prefix, key), f"unknown key {key!r}; {what} may have: {', '.join(known)}", index)
                continue
            if canonical in found:
                first = found[canonical][0]
                self.add(
                    name,
                    (*prefix, key),
                    f"{canonical} is given twice, as {first!r} and as {key!r}; keep one",
                    index,
                )
                continue
            found[canonical] = (key, value)
        return (found, unknown) if keep_unknown else found

    def text(self, name, index, parts, value):
        if isinstance(value, str):
            return value
        self.add(name, parts, f"expected text, not {_kind(value)}", index)
        return None

    def strings(self, name, index, parts, value):
        """A list of strings, or None (reported)."""
        if not isinstance(value, list):
            self.add(name, parts, f"expected a list of strings, not {_kind(value)}", index)
            return None
        ok = True
        for position, item in enumerate(value):
            if not isinstance(item, str):
                self.add(name, (*parts, position), f"expected text, not {_kind(item)}", index)
                ok = False
        return value if ok else None

    def items(self, name, index, parts, value):
        """A list of strings, or a text with one item per line: (items, whether they came as a list) or None."""
        if isinstance(value, str):
            return _items(value), False
        if isinstance(value, list):
            found = self.strings(name, index, parts, value)
            return None if found is None else (found, True)
        self.add(
            name,
            parts,
            f"expected a list of strings or a text with one item per line, not {_kind(value)}",
            index,
        )
        return None

    def boolean(self, name, index, parts, value):
        if isinstance(value, bool):
            return value
        self.add(name, parts, f"expected true or false, not {_kind(value)}", index)
        return None

    def validate(self, name, index, model, data, locate):
        """Hold `data` to an Omoi model, reporting each problem where `locate` says the file wrote it."""
        try:
            model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc, message = describe_pydantic_error(error)
                self.add(name, locate(loc), message, index)
            return False
        return True

    # The folder's files

    def phase(self, spec, data, index):
        """The phase file's Omoi phase (a dict of PhaseDefinition's fields), or None when it has problems."""
        name = spec.name
        if not isinstance(data, dict):
            self.add(name, (), f"the top level must be a mapping of the phase's keys, not {_kind(data)}", index)
            return None
        before = len(self.problems)
        keys = self.keys(name, index, data, PHASE_KEYS, what="a phase file")
        given = {canonical: value for canonical, (_, value) in keys.items() if value is not None}
        written = {canonical: (key,) for canonical, (key, _) in keys.items()}
        item = {"id": spec.key, "name": spec.title}
        # Where each part of the Omoi phase comes from, for problems found by its schema.
        origins = {
            "description": written.get("description"),
            "phase_prompt": written.get("additional_notes"),
            "done_definitions": written.get("done_definitions"),
        }
        outputs, output_origins, criteria, criterion_origins = [], [], [], []

        if "description" not in keys:
            self.add(name, (), "missing required key 'description'", index)
        else:
            item["description"] = self.text(name, index, written["description"], keys["description"][1])
        if "additional_notes" in given:
            item["phase_prompt"] = self.text(name, index, written["additional_notes"], given["additional_notes"])
        if "done_definitions" in given:
            item["done_definitions"] = self.strings(name, index, written["done_definitions"], given["done_definitions"])
        next_steps_listed = False
        if "next_steps" in given:
            found = self.items(name, index, written["next_steps"], given["next_steps"])
            if found:
                item["next_steps_guide"], next_steps_listed = found
        if "outputs" in given:
            found = self.items(name, index, written["outputs"], given["outputs"])
            if found:
                texts, listed = found
                for position, text in enumerate(texts):
                    outputs.append({"type": OUTPUT_TYPE, "required": False, "validation_rule": text})
                    base = (*written["outputs"], position) if listed else written["outputs"]
                    output_origins.append((base, {}))
        configuration = {}
        for setting in CONFIGURATION_KEYS:
            if setting in given:
                configuration[setting] = self.text(name, index, written[setting], given[setting])
        if "validation" in given:
            self.validation(
                name, index, written["validation"], given["validation"], criteria, criterion_origins, outputs
            )
            output_origins += [
                (base, {"pattern": keymap[source], "validation_rule": keymap.get("description", ())})
                for base, keymap, source in criterion_origins
                if source
            ]
        item.update(expected_outputs=outputs, validation_criteria=criteria, configuration=configuration)
        # What could not be read is left out (its problem is recorded), so that the rest is still checked.
        item = {key: value for key, value in item.items() if value is not None}
        item["configuration"] = {key: value for key, value in configuration.items() if value is not None}

        def locate(loc):
            part, rest = loc[0] if loc else None, loc[1:]
            if part in origins and origins[part]:
                return (*origins[part], *rest)
            if part == "next_steps_guide":
                return (*written["next_steps"], *rest) if next_steps_listed else written["next_steps"]
            if part == "expected_outputs" and not rest:  # too many of them: they come from these keys
                return written.get("outputs") or written.get("validation") or ()
            if part == "validation_criteria" and not rest:
                return written.get("validation", ())
            if part == "expected_outputs":
                base, keymap = output_origins[rest[0]]
                return (*base, *keymap.get(rest[1], ())) if len(rest) > 1 else base
            if part == "validation_criteria":
                base, keymap, _ = criterion_origins[rest[0]]
                return (*base, *keymap.get(rest[1], rest[1:2]), *rest[2:]) if len(rest) > 1 else base
            if part == "configuration" and rest:
                return (*written.get(rest[0], rest[:1]), *rest[1:])
            return ()

        valid = self.validate(name, index, PhaseDefinition, item, locate)
        return item if valid and len(self.problems) == before else None

    def validation(self, name, index, parts, value, criteria, origins, outputs):
        """Read a phase's validation: its criteria go to `criteria`, their file checks to `outputs` too."""
        if not isinstance(value, dict):
            self.add(name, parts, f"expected a mapping with enabled and criteria, not {_kind(value)}", index)
            return
        keys = self.keys(name, index, value, VALIDATION_KEYS, parts, what="validation")
        enabled = True
        if "enabled" in keys:
            key, given = keys["enabled"]
            enabled = self.boolean(name, index, (*parts, key), given)
        listed = []
        if "criteria" in keys and keys["criteria"][1] is not None:
            key, given = keys["criteria"]
            if not isinstance(given, list):
                self.add(name, (*parts, key), f"expected a list of criteria, not {_kind(given)}", index)
            else:
                listed = [((*parts, key, position), item) for position, item in enumerate(given)]
        found = []
        for base, item in listed:
            criterion = self.criterion(name, index, base, item)
            if criterion is not None:
                found.append(criterion)
        if enabled is False:
            if listed:
                count = len(listed)
                self.notes.append(
                    f"{name}: validation is disabled (enabled: false), so its {count} "
                    f"criteri{'a are' if count != 1 else 'on is'} not loaded"
                )
            return
        for base, criterion, keymap in found:
            source = None
            if criterion.get("check_type") == "file_exists":
                source = "target" if criterion.get("target") else "pattern" if criterion.get("pattern") else None
                if source is None:
                    self.add(
                        name,
                        base,
                        "a file_exists check needs a target (or a pattern): the file that must exist",
                        index,
                    )
                    continue
                outputs.append(
                    {
                        "type": FILE_TYPE,
                        "pattern": criterion[source],
                        "required": True,
                        "validation_rule": criterion.get("description"),
                    }
                )
            criteria.append(criterion)
            origins.append((base, keymap, source))

    def criterion(self, name, index, base, item):
        """(where, the criterion with snake_case keys, {key: its path as written}), or None (reported)."""
        if not isinstance(item, dict):
            self.add(
                name,
                base,
                f"expected a mapping with description, check_type and target, pattern or command, not {_kind(item)}",
                index,
            )
            return None
        keys, extra = self.keys(name, index, item, CRITERION_KEYS, base, what="a criterion", keep_unknown=True)
        criterion = {canonical: value for canonical, (_, value) in keys.items() if value is not None}
        # Other keys (what a check compares against, its timeout) are kept as the file writes them.
        criterion.update(extra)
        return base, criterion, {canonical: (key,) for canonical, (key, _) in keys.items()}

    def config(self, name, data, index):
        """The workflow's settings from phases_config.yaml: the WorkflowDefinition keys they fill."""
        if not isinstance(data, dict):
            self.add(name, (), f"the top level must be a mapping of the workflow's settings, not {_kind(data)}", index)
            return {}
        keys = self.keys(name, index, data, CONFIG_KEYS, what="phases_config.yaml")
        result_settings = {
            canonical: value
            for canonical, (_, value) in keys.items()
            if canonical in ("has_result", "result_criteria", "on_result_found") and value is not None
        }
        if "enable_tickets" in keys and keys["enable_tickets"][1] is not None:
            key, value = keys["enable_tickets"]
            if self.boolean(name, index, (key,), value) is False:
                self.notes.append(
                    f"{name}: enable_tickets: false has no counterpart; every Omoi workflow moves tickets on a board"
                )
        if "board_config" in keys and keys["board_config"][1] is not None:
            key, value = keys["board_config"]
            if not isinstance(value, dict):
                self.add(name, (key,), f"expected a mapping, not {_kind(value)}", index)
            else:
                self.notes.append(
                    f"{name}: board_config is not loaded; the board has one column per phase, "
                    "and tickets move through the phases"
                )

        def locate(loc):
            if loc and loc[0] in keys:
                return (keys[loc[0]][0], *loc[1:])
            return loc

        stand_in = {"name": "workflow", "phases": [{"id": "P", "name": "P"}]}
        self.validate(name, index, WorkflowDefinition, {**stand_in, **result_settings}, locate)
        return result_settings


def _phase_files(reader, folder):
    """The folder's phase files in order, and the name of its settings file (or None)."""
    try:
        paths = sorted(folder.iterdir(), key=lambda path: path.name)
    except OSError as exc:
        raise WorkflowFileError([Problem("", f"cannot read the folder: {exc.strerror}")], str(folder)) from None
    specs, config, numbers, keys = [], None, {}, {}
    for path in paths:
        name = path.name
        # Notes, READMEs and hidden files may sit beside the phases.
        if name.startswith(".") or path.suffix.lower() not in YAML_SUFFIXES:
            continue
        if not path.is_file():
            reader.add(name, (), "a phase must be a file, not a folder")
            continue
        if name.lower() in CONFIG_FILES:
            if config:
                reader.add(name, (), f"a second settings file beside {config}; keep one")
            else:
                config = name
            continue
        match = PHASE_FILE.fullmatch(name)
        if not match:
            reader.add(
                name,
                (),
                "not a phase file: name a phase NN_name.yaml (a number, '_', then letters, digits, '_' or '-'), "
                "and the workflow's settings phases_config.yaml",
            )
            continue
        number, word = int(match[1]), match[2]
        spec = _PhaseFile(name=name, number=number, key=phase_key(word), title=phase_title(word))
        if len(spec.key) > MAX_KEY:
            reader.add(
                name,
                (),
                f"the name {word!r} makes the phase key {spec.key[:MAX_KEY]}..., longer than {MAX_KEY} characters",
            )
            continue
        if number in numbers:
            reader.add(name, (), f"its number is also that of {numbers[number]}; each phase needs its own number")
            continue
        if spec.key in keys:
            reader.add(
                name,
                (),
                f"its name makes the phase {spec.key}, as {keys[spec.key]} does; each phase needs its own name",
            )
            continue
        numbers[number], keys[spec.key] = name, name
        specs.append(spec)
    return sorted(specs, key=lambda spec: spec.number), config


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it reports why


def read_hephaestus_folder(folder):
    """Read a Hephaestus workflow folder; return a HephaestusWorkflow or raise WorkflowFileError (every problem)."""
    folder = Path(folder)
    source = str(folder)
    if not folder.is_dir():
        raise WorkflowFileError([Problem("", "not a folder")], source)
    reader = _Reader(folder)
    specs, config = _phase_files(reader, folder)
    added = [key for key in (DONE, BLOCKED) if key not in {spec.key for spec in specs}]
    limit = settings.OMOI_MAX_WORKFLOW_BYTES
    if not specs and not reader.problems:
        reader.add("", (), "the folder has no phase files (NN_name.yaml, e.g. 01_planning.yaml)")
    elif len(specs) + len(added) > MAX_PHASES:
        reader.add(
            "", (), f"{len(specs)} phase files; a workflow has at most {MAX_PHASES} phases, Done and Blocked counted"
        )
    else:
        size = sum(_size(folder / name) for name in [spec.name for spec in specs] + [config] if name)
        if size > limit:
            reader.add("", (), f"the phase files hold {size} bytes together; a workflow may have at most {limit}")
    if reader.problems:
        raise WorkflowFileError(reader.problems, source)

    phases = []
    for spec in specs:
        read = reader.read(spec.name)
        if read is not None:
            phases.append(reader.phase(spec, *read))
    top = {}
    if config:
        read = reader.read(config)
        if read is not None:
            top = reader.config(config, *read)
    if reader.problems:
        # One slip may break two rules at one place (a file check's target is also an expected output's pattern).
        problems = sorted(dict.fromkeys(reader.problems), key=lambda problem: (problem.file, problem.line or 0))
        raise WorkflowFileError(problems, source)

    keys = [spec.key for spec in specs]
    for phase in phases:
        phase["allowed_transitions"] = [key for key in [*keys, *added] if key != phase["id"]]
    if DONE in added:
        phases.append(
            {
                "id": DONE,
                "name": "Done",
                "description": "The work is finished; nothing follows.",
                "is_terminal": True,
            }
        )
    if BLOCKED in added:
        phases.append(
            {
                "id": BLOCKED,
                "name": "Blocked",
                "description": (
                    "Work that cannot go on waits here, its blocker recorded, and goes back to a phase once the "
                    "blocker is resolved."
                ),
                "is_terminal": True,
                "allowed_transitions": keys,
                "configuration": {"holding": True},
            }
        )
    columns = []
    for phase in phases:
        column = {"id": _column_key(phase["id"]), "name": phase["name"], "phase_mapping": [phase["id"]]}
        if phase["id"] == DONE and DONE in added:
            column.update(is_terminal=True, category="done", color_theme="green")
        elif phase["id"] == BLOCKED and BLOCKED in added:
            # Parked work waits; lead and cycle time go on.
            column.update(category="waiting", color_theme="red")
        else:
            # Agents work in every phase of a Hephaestus workflow: cycle time starts at the first.
            column.update(category="working")
        columns.append(column)

    name = phase_title(folder.resolve().name)[:MAX_NAME].strip() or "Hephaestus workflow"
    slug = folder.resolve().name
    definition = WorkflowDefinition.model_validate(
        {
            "slug": slug if re.fullmatch(SLUG_PATTERN, slug) and len(slug) <= 100 else None,
            "name": name,
            "description": f"Loaded from the Hephaestus workflow folder {folder.resolve().name!r}.",
            **top,
            "phases": phases,
            "board_columns": columns,
        }
    )
    # Read back as an Omoi file would be: the rules that span phases and columns are checked by the one loader.
    definition = parse_workflow(dump_workflow(definition), source=f"{source} (as a workflow file)")
    return HephaestusWorkflow(definition=definition, notes=reader.notes)
