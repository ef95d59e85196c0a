"""Reading and writing workflow files (YAML).

`parse_workflow` turns text into a validated `WorkflowDefinition` or raises
`WorkflowFileError` listing every problem at once, each with the path inside
the file and its line. Nothing here touches the database.
"""

from dataclasses import dataclass

import yaml
from django.conf import settings
from pydantic import ValidationError

from .schema import ColumnDefinition, PhaseDefinition, WorkflowDefinition, is_holding_phase

# Tags a plain data file may use; anything else (!!python/object, custom !tags)
# would ask a loader to build objects, which is how YAML files run code.
SAFE_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge", "binary")
}
MAX_NODES = 200_000


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def format(self, source=None):
        where = [part for part in (source, str(self.line) if self.line else None) if part]
        prefix = ":".join(where)
        location = f"{self.path}: " if self.path else ""
        return f"{prefix + ': ' if prefix else ''}{location}{self.message}"


class WorkflowFileError(Exception):
    """A workflow file that cannot be loaded, with every problem found."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.describe())

    def describe(self):
        count = len(self.problems)
        head = f"{self.source or 'workflow'}: {count} problem{'s' if count != 1 else ''} found"
        return "\n".join([head, *(f"  {problem.format(self.source)}" for problem in self.problems)])


def format_path(parts):
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class _NodeIndex:
    """Lines of every value in the YAML tree, plus the structural problems found walking it."""

    def __init__(self, root):
        self.lines = {}
        self.problems = []
        self._seen = set()
        self._count = 0
        self._walk(root, ())

    def line_for(self, parts):
        parts = tuple(parts)
        while parts not in self.lines and parts:
            parts = parts[:-1]
        return self.lines.get(parts)

    def _walk(self, node, parts):
        self._count += 1
        if self._count > MAX_NODES:
            if self._count == MAX_NODES + 1:
                self.problems.append(Problem("", f"the file has more than {MAX_NODES} values"))
            return
        self.lines.setdefault(parts, node.start_mark.line + 1)
        if node.tag not in SAFE_TAGS:
            self.problems.append(
                Problem(
                    format_path(parts),
                    f"unsafe or unknown YAML tag {node.tag!r} is not allowed",
                    node.start_mark.line + 1,
                )
            )
            return
        # Aliases share nodes; visiting each once keeps "billion laughs" files cheap.
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                self._walk(child, (*parts, index))
        elif isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, value_node in node.value:
                if key_node.tag not in SAFE_TAGS:
                    self._walk(key_node, parts)
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key == "<<":
                    self._walk(value_node, parts)
                    continue
                line = key_node.start_mark.line + 1
                if key is not None and key in first_line:
                    self.problems.append(
                        Problem(
                            format_path((*parts, key)), f"duplicate key {key!r} (first at line {first_line[key]})", line
                        )
                    )
                    continue
                if key is not None:
                    first_line[key] = line
                    self.lines.setdefault((*parts, key), line)
                self._walk(value_node, (*parts, key) if key is not None else parts)


def _compose(text, source):
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise WorkflowFileError([Problem("", f"YAML syntax error{column}: {problem}", line)], source) from None
    except yaml.YAMLError as exc:
        raise WorkflowFileError([Problem("", f"YAML syntax error: {exc}")], source) from None
    except RecursionError:
        raise WorkflowFileError([Problem("", "the file is nested too deeply")], source) from None


def _construct(text, source):
    """Build plain Python values from a file whose tags were checked."""
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise WorkflowFileError(
            [Problem("", f"invalid value: {exc.problem}", mark.line + 1 if mark else None)], source
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # e.g. 2024-13-45 looks like a date to YAML but is none.
        raise WorkflowFileError([Problem("", f"invalid value: {exc}")], source) from None
    finally:
        loader.dispose()


def _describe_pydantic_error(error):
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        return loc, f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return loc[:-1], f"missing required key {loc[-1]!r}"
    return loc, error["msg"][0].lower() + error["msg"][1:]


def _schema_problems(data, index):
    """Validate each part on its own, so one bad phase does not hide the next one's problems."""
    problems = []

    def check(model, value, prefix):
        try:
            model.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc, message = _describe_pydantic_error(error)
                parts = (*prefix, *loc)
                problems.append(Problem(format_path(parts), message, index.line_for(parts)))

    top = {key: value for key, value in data.items() if key not in ("phases", "board_columns")}
    top["phases"] = [{"id": "P", "name": "P"}]  # validated item by item below
    check(WorkflowDefinition, top, ())
    if "phases" not in data:
        problems.append(Problem("", "missing required key 'phases'", 1))
    for name, model in (("phases", PhaseDefinition), ("board_columns", ColumnDefinition)):
        items = data.get(name)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(Problem(name, "should be a list", index.line_for((name,))))
            continue
        if name == "phases" and not items:
            problems.append(Problem(name, "a workflow needs at least one phase", index.line_for((name,))))
        for position, item in enumerate(items):
            check(model, item, (name, position))
    return problems


def _ids(items):
    """(position, id) of the items whose id is a string."""
    if not isinstance(items, list):
        return []
    return [
        (pos, item["id"])
        for pos, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def _string_items(item, key):
    values = item.get(key) if isinstance(item, dict) else None
    if not isinstance(values, list):
        return []
    return [(pos, value) for pos, value in enumerate(values) if isinstance(value, str)]


def _reference_problems(data, index):
    """Rules that span several parts of the file: ids, transitions, column mappings."""
    problems = []

    def add(parts, message):
        problems.append(Problem(format_path(parts), message, index.line_for(parts)))

    phases = data.get("phases") if isinstance(data.get("phases"), list) else []
    columns = data.get("board_columns") if isinstance(data.get("board_columns"), list) else None

    for name, items in (("phases", phases), ("board_columns", columns or [])):
        first = {}
        for pos, ident in _ids(items):
            if ident in first:
                add((name, pos, "id"), f"duplicate id {ident!r} (first used by {name}[{first[ident]}])")
            else:
                first[ident] = pos

    phase_ids = {ident for _, ident in _ids(phases)}
    known = ", ".join(sorted(phase_ids)) or "none"
    transitions = {
        ident: {t for _, t in _string_items(phases[pos], "allowed_transitions")} for pos, ident in _ids(phases)
    }

    for pos, ident in _ids(phases):
        phase = phases[pos]
        for t_pos, target in _string_items(phase, "allowed_transitions"):
            parts = ("phases", pos, "allowed_transitions", t_pos)
            if target not in phase_ids:
                add(parts, f"unknown phase {target!r}; the file defines: {known}")
            elif target == ident:
                add(parts, f"phase {ident!r} cannot transition to itself")
            elif phase.get("is_terminal") is True:
                # Terminal phases end work. A holding phase such as Blocked is
                # terminal too, yet sends work back where it came from.
                if not is_holding_phase(ident, phase.get("configuration")):
                    add(
                        parts,
                        f"terminal phase {ident!r} cannot have transitions out; only a holding phase "
                        f"(like PHASE_BLOCKED, or one with configuration.holding: true) may",
                    )
                elif ident not in transitions.get(target, set()):
                    add(
                        parts,
                        f"holding phase {ident!r} may only lead back to phases that can move into it; {target!r} cannot",
                    )

    if columns is None:
        return problems
    column_ids = {ident for _, ident in _ids(columns)}
    mapped = {}
    for pos, ident in _ids(columns):
        column = columns[pos]
        for m_pos, phase_id in _string_items(column, "phase_mapping"):
            parts = ("board_columns", pos, "phase_mapping", m_pos)
            if phase_id not in phase_ids:
                add(parts, f"unknown phase {phase_id!r}; the file defines: {known}")
            elif phase_id in mapped:
                add(
                    parts,
                    f"phase {phase_id!r} is already shown in column {mapped[phase_id]!r}; a phase belongs to one column",
                )
            else:
                mapped[phase_id] = ident
        target = column.get("auto_transition_to")
        if isinstance(target, str):
            parts = ("board_columns", pos, "auto_transition_to")
            if target not in column_ids:
                add(parts, f"unknown column {target!r}; the file defines: {', '.join(sorted(column_ids))}")
            elif target == ident:
                add(parts, f"column {ident!r} cannot auto-transition to itself")
    for pos, ident in _ids(phases):
        if ident not in mapped:
            add(("phases", pos, "id"), f"phase {ident!r} is in no board column, so its tickets would not be shown")
    return problems


def parse_workflow(text, source=None):
    """Validate a workflow file's text; return a WorkflowDefinition or raise WorkflowFileError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowFileError([Problem("", f"the file is not UTF-8 text (byte {exc.start})")], source) from None
    limit = settings.OMOI_MAX_WORKFLOW_BYTES
    if len(text.encode("utf-8")) > limit:
        raise WorkflowFileError([Problem("", f"the file is larger than the {limit} bytes allowed")], source)

    root = _compose(text, source)
    if root is None:
        raise WorkflowFileError([Problem("", "the file is empty")], source)
    try:
        index = _NodeIndex(root)
    except RecursionError:
        raise WorkflowFileError([Problem("", "the file is nested too deeply")], source) from None
    if index.problems:
        raise WorkflowFileError(index.problems, source)
    data = _construct(text, source)
    if not isinstance(data, dict):
        raise WorkflowFileError(
            [Problem("", "the top level must be a mapping with name, phases and board_columns", 1)], source
        )

    problems = _schema_problems(data, index) + _reference_problems(data, index)
    if problems:
        problems.sort(key=lambda problem: (problem.line or 0, problem.path))
        raise WorkflowFileError(problems, source)
    return WorkflowDefinition.model_validate(data)


def read_workflow_file(path):
    """Read and validate a workflow file from disk."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(settings.OMOI_MAX_WORKFLOW_BYTES + 1)
    except OSError as exc:
        raise WorkflowFileError([Problem("", f"cannot read the file: {exc.strerror}")], str(path)) from None
    return parse_workflow(text, source=str(path))


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_workflow(definition, *, header=None):
    """A WorkflowDefinition as YAML text, in the field order people write it."""
    data = definition.model_dump(mode="json", exclude_none=False)
    for phase in data["phases"]:
        phase["configuration"] = {key: value for key, value in phase["configuration"].items() if value is not None}
        for output in phase["expected_outputs"]:
            if output.get("validation_rule") is None:
                output.pop("validation_rule", None)
    if data.get("slug") is None:
        data.pop("slug", None)
    if data.get("board_columns") is None:
        data.pop("board_columns", None)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text
