"""Reading and writing workflow files (YAML).

`parse_workflow` turns text into a validated `WorkflowDefinition` or raises
`WorkflowFileError` listing every problem at once, each with the path inside
the file and its line. Nothing here touches the database.
"""

from dataclasses import dataclass

import yaml
from django.conf import settings
from pydantic import ValidationError

from .schema import (
    MAX_KEY,
    ColumnDefinition,
    PhaseDefinition,
    WorkflowDefinition,
    is_holding_phase,
    order_problems,
)

_YAML = "tag:yaml.org,2002:"
STR_TAG, MERGE_TAG = _YAML + "str", _YAML + "merge"
# Tags a plain data file may use; anything else (!!python/object, custom !tags)
# would ask a loader to build objects, which is how YAML files run code.
SAFE_TAGS = {_YAML + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
# Safe to build, but not values a workflow can store as JSON or text.
QUOTE_TAGS = {_YAML + "timestamp": "a date", _YAML + "binary": "binary data"}
# The kind of node each tag may stand on; a tag on the wrong kind cannot be built.
_TAG_NODES = {
    _YAML + "seq": yaml.SequenceNode,
    _YAML + "map": yaml.MappingNode,
    **{_YAML + name: yaml.ScalarNode for name in ("str", "int", "float", "bool", "null", "merge")},
}
MAX_NODES = 200_000
# A file without aliases expands to about its own size. Aliases may share a
# setting between phases, but not multiply a small file into a huge one: every
# part is held to twice the largest file allowed, counted as values plus text.
EXPANSION_FACTOR = 2


class _Loader(yaml.SafeLoader):
    """A safe loader that reads 2024-01-01 and = as text, as a person means them.

    YAML 1.1 turns a bare date into a date object and = into a "value" tag;
    neither is anything a workflow stores, and a date would not survive JSON.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_YAML + "timestamp", _YAML + "value")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def printable(text):
    """`text` with line breaks and other unprintable characters escaped, so that a message stays one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None
    # Names the rule for callers that treat one differently (the admin lets a phase it has just added wait
    # for its column); empty for most.
    code: str = ""
    # The file the problem is in, when a workflow is read from several (a Hephaestus folder); it is named
    # in place of the error's source.
    file: str = ""

    def __post_init__(self):
        # Paths and messages quote the file's own keys and values, which may hold line breaks.
        object.__setattr__(self, "path", printable(self.path))
        object.__setattr__(self, "message", printable(self.message))

    def format(self, source=None):
        prefix = ":".join(part for part in (printable(self.file or source or ""), str(self.line or "")) if part)
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
        head = f"{printable(self.source or 'workflow')}: {count} problem{'s' if count != 1 else ''} found"
        return "\n".join([head, *(f"  {problem.format(self.source)}" for problem in self.problems)])


def format_path(parts):
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _line(node):
    return node.start_mark.line + 1


def _children(node):
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


class _NodeIndex:
    """Lines of every value in the YAML tree, the structural problems found walking it, and its expanded size.

    The size of a part is what building it would cost: one per value plus the
    length of its text, counting an aliased part again wherever it is used.
    Aliases share nodes; each is walked once and its size remembered, so even
    a "billion laughs" file is measured at once, without being expanded.
    """

    def __init__(self, root):
        self.root = root
        self.lines = {}
        self.problems = []
        self._paths = {}
        self._sizes = {}
        self._count = 0
        self._scalars = _Loader("")
        try:
            self.size = self._walk(root, ())
        finally:
            self._scalars.dispose()

    def line_for(self, parts):
        parts = tuple(parts)
        while parts not in self.lines and parts:
            parts = parts[:-1]
        return self.lines.get(parts)

    def too_large(self, limit):
        """The problem of the smallest part that expands past `limit`, or None."""
        if self.size <= limit:
            return None
        node, seen = self.root, set()
        while id(node) not in seen:
            seen.add(id(node))
            larger = next((child for child in _children(node) if self._sizes.get(id(child), 0) > limit), None)
            if larger is None:
                break
            node = larger
        return Problem(
            format_path(self._paths.get(id(node), ())),
            f"expands through its aliases to {self._sizes[id(node)]} characters, more than the {limit} allowed "
            "(twice the largest file); write shared parts out instead of repeating an alias",
            _line(node),
        )

    def _walk(self, node, parts):
        self._count += 1
        if self._count > MAX_NODES:
            if self._count == MAX_NODES + 1:
                self.problems.append(
                    Problem(format_path(parts), f"the file has more than {MAX_NODES} values", _line(node))
                )
            return 0
        self.lines.setdefault(parts, _line(node))
        if id(node) in self._sizes:
            return self._sizes[id(node)]
        if id(node) in self._paths:
            self.problems.append(
                Problem(
                    format_path(parts),
                    "an alias here refers to a value that contains it, which never ends",
                    _line(node),
                )
            )
            return 0
        self._paths[id(node)] = parts
        size = self._sizes[id(node)] = self._measure(node, parts)
        return size

    def _measure(self, node, parts):
        """Check a node seen for the first time; return its expanded size."""
        path = format_path(parts)
        if node.tag in QUOTE_TAGS:
            self.problems.append(
                Problem(
                    path,
                    f"YAML tag {_short(node.tag)!r} makes {QUOTE_TAGS[node.tag]}, which a workflow cannot store; "
                    "quote the value to keep it as text",
                    _line(node),
                )
            )
            return 1
        if node.tag not in SAFE_TAGS:
            self.problems.append(Problem(path, f"unsafe or unknown YAML tag {node.tag!r} is not allowed", _line(node)))
            return 1
        if not isinstance(node, _TAG_NODES[node.tag]):
            self.problems.append(
                Problem(path, f"YAML tag {_short(node.tag)!r} cannot stand on this value", _line(node))
            )
            return 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in (STR_TAG, MERGE_TAG):
                self._check_scalar(node, path)
            return 1 + len(node.value)
        size = 1
        if isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                size += self._walk(child, (*parts, index))
            return size
        first_line = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                size += self._walk(value_node, parts)
                continue
            if key_node.tag != STR_TAG or not isinstance(key_node, yaml.ScalarNode):
                self._check_key(key_node, parts)
                continue
            key, line = key_node.value, _line(key_node)
            if key in first_line:
                self.problems.append(
                    Problem(
                        format_path((*parts, key)), f"duplicate key {key!r} (first at line {first_line[key]})", line
                    )
                )
                continue
            first_line[key] = line
            self.lines.setdefault((*parts, key), line)
            size += 1 + len(key) + self._walk(value_node, (*parts, key))
        return size

    def _check_scalar(self, node, path):
        # Built on its own, so a value YAML cannot build (!!bool maybe, 0x_) is reported at its line.
        try:
            self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, KeyError, TypeError, OverflowError):
            self.problems.append(Problem(path, f"{node.value!r} is not a valid {_short(node.tag)} value", _line(node)))

    def _check_key(self, key_node, parts):
        if key_node.tag not in SAFE_TAGS:
            self._walk(key_node, parts)  # reports the tag
            return
        if isinstance(key_node, yaml.ScalarNode):
            message = (
                f"the key {key_node.value!r} is read as {_short(key_node.tag)}, not text; quote it to use it as a key"
            )
        else:
            message = "a key must be text, not a list or a mapping"
        self.problems.append(Problem(format_path(parts), message, _line(key_node)))


def _short(tag):
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


def _compose(text, source):
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise WorkflowFileError([Problem("", f"YAML syntax error{column}: {problem}", line)], source) from None
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line = text[: exc.position].count("\n") + 1
        message = f"the character #x{code:04x} cannot be written in YAML ({exc.reason})"
        raise WorkflowFileError([Problem("", message, line)], source) from None
    except yaml.YAMLError as exc:
        raise WorkflowFileError([Problem("", f"YAML syntax error: {exc}")], source) from None
    except RecursionError:
        raise WorkflowFileError([Problem("", "the file is nested too deeply")], source) from None


def _construct(text, source):
    """Build plain Python values from a file whose tags and scalars were checked."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise WorkflowFileError(
            [Problem("", f"invalid value: {exc.problem}", mark.line + 1 if mark else None)], source
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise WorkflowFileError([Problem("", f"invalid value: {exc}")], source) from None
    finally:
        loader.dispose()


def describe_pydantic_error(error):
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
                loc, message = describe_pydantic_error(error)
                parts = (*prefix, *loc)
                problems.append(Problem(format_path(parts), message, index.line_for(parts)))

    # Items are validated one by one below; the top level sees stand-ins, to count them.
    top = {key: value for key, value in data.items() if key not in ("phases", "board_columns")}
    phases, columns = data.get("phases"), data.get("board_columns")
    top["phases"] = [{"id": "P", "name": "P"}] * (len(phases) if isinstance(phases, list) and phases else 1)
    if isinstance(columns, list):
        top["board_columns"] = [{"id": "c", "name": "c", "phase_mapping": ["P"]}] * len(columns)
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
    """(position, id) of the items whose id is a string short enough to be one (longer ones are schema problems)."""
    if not isinstance(items, list):
        return []
    return [
        (pos, item["id"])
        for pos, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("id"), str) and len(item["id"]) <= MAX_KEY
    ]


def _string_items(item, key):
    values = item.get(key) if isinstance(item, dict) else None
    if not isinstance(values, list):
        return []
    return [(pos, value) for pos, value in enumerate(values) if isinstance(value, str) and len(value) <= MAX_KEY]


def _orders(items):
    """Each item's sequence_order for the order rules: None when left out, a stand-in when not a valid number."""
    orders = []
    for item in items:
        order = item.get("sequence_order") if isinstance(item, dict) else None
        # A wrong value is a schema problem of its own; here it only counts as given, equal to no other.
        orders.append(order if order is None or (type(order) is int) else object())
    return orders


UNMAPPED_PHASE = "unmapped_phase"


def _reference_problems(data, index):
    """Rules that span several parts of the file: ids, order, transitions, column mappings.

    An item repeating an earlier id is reported once, as a duplicate: the
    checks that depend on which item an id names skip it, since their message
    would be about the other item.
    """
    problems = []

    def add(parts, message, code=""):
        problems.append(Problem(format_path(parts), message, index.line_for(parts), code))

    phases = data.get("phases") if isinstance(data.get("phases"), list) else []
    columns = data.get("board_columns") if isinstance(data.get("board_columns"), list) else None

    repeated, repeated_ids = {}, {}
    for name, items in (("phases", phases), ("board_columns", columns or [])):
        first = {}
        repeated[name], repeated_ids[name] = set(), set()
        for pos, ident in _ids(items):
            if ident in first:
                add((name, pos, "id"), f"duplicate id {ident!r} (first used by {name}[{first[ident]}])")
                repeated[name].add(pos)
                repeated_ids[name].add(ident)
            else:
                first[ident] = pos
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        for pos, message in order_problems(_orders(items), name, ids):
            add((name, pos, "sequence_order"), message)

    phase_ids = {ident for _, ident in _ids(phases)}
    known = ", ".join(sorted(phase_ids)) or "none"
    firsts = [(pos, ident) for pos, ident in _ids(phases) if pos not in repeated["phases"]]
    transitions = {ident: {t for _, t in _string_items(phases[pos], "allowed_transitions")} for pos, ident in firsts}

    for pos, ident in _ids(phases):
        phase = phases[pos]
        for t_pos, target in _string_items(phase, "allowed_transitions"):
            parts = ("phases", pos, "allowed_transitions", t_pos)
            if target not in phase_ids:
                add(parts, f"unknown phase {target!r}; the file defines: {known}")
            elif pos in repeated["phases"]:
                continue
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
                if pos in repeated["board_columns"] or phase_id in repeated_ids["phases"]:
                    continue
                where = (
                    "listed twice in this column"
                    if mapped[phase_id] == ident
                    else (f"already shown in column {mapped[phase_id]!r}")
                )
                add(parts, f"phase {phase_id!r} is {where}; a phase belongs to one column")
            else:
                mapped[phase_id] = ident
        target = column.get("auto_transition_to")
        if isinstance(target, str) and len(target) <= MAX_KEY:
            parts = ("board_columns", pos, "auto_transition_to")
            if target not in column_ids:
                add(parts, f"unknown column {target!r}; the file defines: {', '.join(sorted(column_ids))}")
            elif target == ident and pos not in repeated["board_columns"]:
                add(parts, f"column {ident!r} cannot auto-transition to itself")
    for pos, ident in firsts:
        if ident not in mapped and ident not in repeated_ids["phases"]:
            add(
                ("phases", pos, "id"),
                f"phase {ident!r} is in no board column, so its tickets would not be shown",
                UNMAPPED_PHASE,
            )
    return problems


def read_yaml(text, source=None):
    """Plain values from YAML text, and the index of their lines; WorkflowFileError on any problem.

    Only plain data tags pass, every value YAML cannot build is reported at its
    line, and aliases may not expand the file past twice the size allowed.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise WorkflowFileError(
                [Problem("", f"the file is not UTF-8 text (byte {exc.start})", line)], source
            ) from None
    limit = settings.OMOI_MAX_WORKFLOW_BYTES
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise WorkflowFileError([Problem("", f"the file is larger than the {limit} bytes allowed")], source)

    root = _compose(text, source)
    if root is None:
        raise WorkflowFileError([Problem("", "the file is empty")], source)
    try:
        index = _NodeIndex(root)
    except RecursionError:
        raise WorkflowFileError([Problem("", "the file is nested too deeply")], source) from None
    # Measured before anything is built: validating or saving a value expands its aliases.
    too_large = index.too_large(EXPANSION_FACTOR * limit)
    if index.problems or too_large:
        raise WorkflowFileError([*index.problems, *([too_large] if too_large else [])], source)
    return _construct(text, source), index


def parse_workflow(text, source=None):
    """Validate a workflow file's text; return a WorkflowDefinition or raise WorkflowFileError."""
    data, index = read_yaml(text, source)
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
        for name in ("expected_outputs", "validation_criteria"):
            for position, item in enumerate(phase[name]):
                phase[name][position] = {key: value for key, value in item.items() if value is not None}
        tasks = phase["configuration"].get("default_tasks")
        for task in tasks if isinstance(tasks, list) else ():
            if isinstance(task, dict) and task.get("priority") is None:
                task.pop("priority", None)
    if data.get("slug") is None:
        data.pop("slug", None)
    if data.get("board_columns") is None:
        data.pop("board_columns", None)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text
