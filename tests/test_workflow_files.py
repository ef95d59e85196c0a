"""Validation of workflow files: every class of error, with its path and line, in one pass."""

import textwrap

import pytest

from phases.workflow_files import WorkflowFileError, dump_workflow, parse_workflow

VALID = textwrap.dedent(
    """\
    name: Small
    description: Two steps and a parking place.
    phases:
      - id: PHASE_TODO
        name: To do
        sequence_order: 0
        allowed_transitions: [PHASE_DONE, PHASE_BLOCKED]
        done_definitions: [Scope agreed]
        expected_outputs:
          - type: document
            pattern: scope.md
            required: true
            validation_rule: Lists what is in and out of scope.
        phase_prompt: |
          STEP 1: Agree the scope.
          STEP 2: Write it down.
        next_steps_guide: [Work starts]
        configuration:
          timeout_seconds: 60
          max_retries: 2
          retry_backoff_seconds: 1.5
      - id: PHASE_DONE
        name: Done
        sequence_order: 1
        is_terminal: true
      - id: PHASE_BLOCKED
        name: Blocked
        sequence_order: 2
        is_terminal: true
        allowed_transitions: [PHASE_TODO]
    board_columns:
      - id: todo
        name: To do
        phase_mapping: [PHASE_TODO]
        wip_limit: 3
        wip_policy: block
        auto_transition_to: done
      - id: done
        name: Done
        phase_mapping: [PHASE_DONE]
        is_terminal: true
      - id: blocked
        name: Blocked
        phase_mapping: [PHASE_BLOCKED]
    """
)


def problems_of(text):
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="flow.yaml")
    return info.value.problems


def one_problem(text):
    problems = problems_of(text)
    assert len(problems) == 1, [p.format() for p in problems]
    return problems[0]


def test_it_accepts_a_valid_file():
    definition = parse_workflow(VALID)
    assert [phase.id for phase in definition.phases] == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    todo = definition.phases[0]
    assert todo.configuration.timeout_seconds == 60
    assert todo.expected_outputs[0].validation_rule == "Lists what is in and out of scope."
    assert definition.board_columns[0].wip_policy == "block"


def test_it_reports_syntax_errors_with_line_and_column():
    problem = one_problem(VALID.replace("  - id: PHASE_DONE", "  - id: [PHASE_DONE"))
    assert "YAML syntax error" in problem.message
    assert problem.line is not None
    assert problem.format("flow.yaml").startswith(f"flow.yaml:{problem.line}: ")


def test_it_reports_wrong_types_with_their_path():
    problem = one_problem(
        VALID.replace("sequence_order: 1\n    is_terminal: true", 'sequence_order: "1"\n    is_terminal: true', 1)
    )
    assert problem.path == "phases[1].sequence_order"
    assert "integer" in problem.message
    assert problem.line == VALID.splitlines().index("    sequence_order: 1") + 1


def test_it_reports_unknown_keys():
    problem = one_problem(
        VALID.replace("    done_definitions: [Scope agreed]", "    done_definitions: [Scope agreed]\n    owner: bob")
    )
    assert problem.path == "phases[0].owner"
    assert problem.message == "unknown key 'owner'"
    assert problem.line == 9


def test_it_reports_unknown_keys_in_expected_outputs():
    problem = one_problem(VALID.replace("required: true", "required: true\n        min_pass: 3"))
    assert problem.path == "phases[0].expected_outputs[0].min_pass"


def test_it_reports_missing_required_keys():
    problem = one_problem(
        VALID.replace(
            "    name: Done\n    sequence_order: 1\n    is_terminal", "    sequence_order: 1\n    is_terminal"
        )
    )
    assert problem.path == "phases[1]"
    assert problem.message == "missing required key 'name'"


def test_it_reports_duplicate_phase_ids():
    problems = problems_of(VALID.replace("id: PHASE_BLOCKED", "id: PHASE_DONE"))
    duplicate = [p for p in problems if p.path == "phases[2].id"]
    assert duplicate and "duplicate id 'PHASE_DONE' (first used by phases[1])" in duplicate[0].message


def test_it_reports_a_transition_to_an_unknown_phase():
    problem = one_problem(
        VALID.replace("[PHASE_DONE, PHASE_BLOCKED]", "[PHASE_DONE, PHASE_REVIEW]").replace(
            "allowed_transitions: [PHASE_TODO]", "allowed_transitions: []"
        )
    )
    assert problem.path == "phases[0].allowed_transitions[1]"
    assert "unknown phase 'PHASE_REVIEW'" in problem.message
    assert problem.line == 7


def test_it_reports_a_column_mapping_an_unknown_phase():
    problems = problems_of(VALID.replace("phase_mapping: [PHASE_TODO]", "phase_mapping: [PHASE_TODO, PHASE_QA]"))
    assert [p.path for p in problems] == ["board_columns[0].phase_mapping[1]"]
    assert "unknown phase 'PHASE_QA'" in problems[0].message


def test_it_reports_an_auto_transition_to_an_unknown_column():
    problem = one_problem(VALID.replace("auto_transition_to: done", "auto_transition_to: shipped"))
    assert problem.path == "board_columns[0].auto_transition_to"
    assert "unknown column 'shipped'" in problem.message


def test_it_refuses_a_terminal_phase_leading_out():
    text = VALID.replace(
        "    sequence_order: 1\n    is_terminal: true",
        "    sequence_order: 1\n    is_terminal: true\n    allowed_transitions: [PHASE_TODO]",
    )
    problem = one_problem(text)
    assert problem.path == "phases[1].allowed_transitions[0]"
    assert "terminal phase 'PHASE_DONE' cannot have transitions out" in problem.message


def test_a_holding_phase_leads_only_to_phases_that_can_enter_it():
    text = VALID.replace("[PHASE_DONE, PHASE_BLOCKED]", "[PHASE_DONE]").replace(
        "    allowed_transitions: [PHASE_TODO]",
        "    allowed_transitions: [PHASE_TODO]\n    configuration: {holding: true}",
    )
    problem = one_problem(text)
    assert problem.path == "phases[2].allowed_transitions[0]"
    assert "holding phase 'PHASE_BLOCKED' may only lead back to phases that can move into it" in problem.message


def test_configuration_can_mark_a_phase_holding_or_not():
    renamed = VALID.replace("PHASE_BLOCKED", "PHASE_PARKED")
    assert "only a holding phase" in one_problem(renamed).message
    marked = renamed.replace(
        "    allowed_transitions: [PHASE_TODO]",
        "    allowed_transitions: [PHASE_TODO]\n    configuration: {holding: true}",
    )
    assert parse_workflow(marked).phases[2].configuration.holding is True


def test_it_allows_a_holding_phase_to_lead_back():
    # PHASE_BLOCKED is terminal and leads to PHASE_TODO, which can move into it.
    assert parse_workflow(VALID).phases[2].allowed_transitions == ["PHASE_TODO"]


def test_it_refuses_unsafe_tags_without_running_them():
    problem = one_problem(
        VALID.replace("name: Small", "name: !!python/object/apply:os.system ['touch /tmp/omoi-pwned']")
    )
    assert "unsafe or unknown YAML tag" in problem.message
    assert problem.line == 1


def test_it_refuses_custom_tags():
    problem = one_problem(VALID.replace("description: Two steps", "description: !include other.yaml"))
    assert "'!include'" in problem.message


def test_it_reports_duplicate_keys():
    problem = one_problem(VALID.replace("name: Small\n", "name: Small\nname: Smaller\n"))
    assert problem.path == "name"
    assert problem.message == "duplicate key 'name' (first at line 1)"
    assert problem.line == 2


def test_it_reports_every_problem_in_one_pass():
    text = (
        VALID.replace("[PHASE_DONE, PHASE_BLOCKED]", "[PHASE_DONE, PHASE_NOPE, PHASE_BLOCKED]")
        .replace("wip_limit: 3", "wip_limit: -3")
        .replace(
            "    name: Done\n    sequence_order: 1\n    is_terminal",
            "    name: Done\n    sequence_order: one\n    is_terminal",
        )
        .replace("auto_transition_to: done", "auto_transition_to: nowhere")
    )
    paths = [problem.path for problem in problems_of(text)]
    assert paths == [
        "phases[0].allowed_transitions[1]",
        "phases[1].sequence_order",
        "board_columns[0].wip_limit",
        "board_columns[0].auto_transition_to",
    ]


def test_it_requires_every_phase_on_the_board():
    text = VALID.replace("  - id: blocked\n    name: Blocked\n    phase_mapping: [PHASE_BLOCKED]\n", "")
    problem = one_problem(text)
    assert problem.path == "phases[2].id"
    assert "in no board column" in problem.message


def test_it_refuses_a_phase_in_two_columns():
    problem = one_problem(VALID.replace("phase_mapping: [PHASE_DONE]", "phase_mapping: [PHASE_DONE, PHASE_TODO]"))
    assert problem.path == "board_columns[1].phase_mapping[1]"
    assert "already shown in column 'todo'" in problem.message


def test_it_makes_one_column_per_phase_when_the_file_has_none():
    text = VALID.split("board_columns:")[0]
    definition = parse_workflow(text)
    assert [(c.id, c.phase_mapping) for c in definition.columns()] == [
        ("todo", ["PHASE_TODO"]),
        ("done", ["PHASE_DONE"]),
        ("blocked", ["PHASE_BLOCKED"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("name: Empty\nphases: []\n", "a workflow needs at least one phase"),
        ("name: No phases\n", "missing required key 'phases'"),
        ("name: Bad\nphases: PHASE_A\n", "should be a list"),
    ],
)
def test_it_refuses_files_without_a_workflow(text, message):
    assert message in " ".join(problem.message for problem in problems_of(text))


def test_it_refuses_oversized_files(settings):
    settings.OMOI_MAX_WORKFLOW_BYTES = 2048
    problem = one_problem(VALID + "#" * 2048)
    assert "larger than the 2048 bytes allowed" in problem.message


def test_it_refuses_text_that_is_not_utf8():
    problem = one_problem(b"name: \xff\xfe\n")
    assert "not UTF-8" in problem.message


def test_it_survives_alias_bombs(settings):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 10)
    ]
    problems = problems_of("\n".join(lines) + "\nname: Bomb\nphases: *a9\n")
    assert problems  # refused quickly, not expanded


def test_the_error_lists_every_problem_with_file_and_line():
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(VALID.replace("auto_transition_to: done", "auto_transition_to: shipped"), source="flow.yaml")
    text = str(info.value)
    assert text.splitlines()[0] == "flow.yaml: 1 problem found"
    assert "flow.yaml:37: board_columns[0].auto_transition_to: unknown column 'shipped'" in text


def test_dump_then_parse_gives_the_same_definition():
    definition = parse_workflow(VALID)
    again = parse_workflow(dump_workflow(definition))
    assert again == definition
    assert "phase_prompt: |" in dump_workflow(definition)


def test_it_reports_values_yaml_cannot_build_at_their_line():
    problem = one_problem(VALID.replace("description: Two steps and a parking place.", "description: !!bool maybe"))
    assert problem.format("flow.yaml") == "flow.yaml:2: description: 'maybe' is not a valid !!bool value"


def test_a_bare_date_is_text():
    definition = parse_workflow(VALID.replace("description: Two steps and a parking place.", "description: 2024-13-45"))
    assert definition.description == "2024-13-45"


def test_it_refuses_deep_nesting():
    problem = one_problem("name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in problem.message


# Messages: one line each, at the line of the problem, and nothing that only follows from another problem.


def test_a_file_name_with_a_line_break_is_shown_escaped():
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow("name: [\n", source="bad\nname.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0] == "bad\\nname.yaml: 1 problem found"
    assert lines[1].startswith("  bad\\nname.yaml:2: YAML syntax error")


def test_a_key_with_a_line_break_is_shown_escaped_at_its_line():
    text = VALID + '"bad\\nkey": 1\n'
    problem = one_problem(text)
    assert problem.format("flow.yaml") == f"flow.yaml:{len(text.splitlines())}: bad\\nkey: unknown key 'bad\\nkey'"


def test_a_duplicate_key_with_a_line_break_is_shown_escaped():
    text = VALID + '"a\\tb": 1\n"a\\tb": 2\n'
    messages = [problem.format() for problem in problems_of(text)]
    assert f"{len(text.splitlines())}: a\\tb: duplicate key 'a\\tb' (first at line {len(text.splitlines()) - 1})" in (
        messages
    )
    assert not any("\t" in message or "\n" in message for message in messages)


def test_a_raw_control_character_is_reported_at_its_line():
    problem = one_problem(VALID.replace("name: Done", "name: Do\x00ne"))
    assert problem.line == VALID.splitlines().index("    name: Done") + 1
    assert problem.message == "the character #x0000 cannot be written in YAML (special characters are not allowed)"


def test_text_that_is_not_utf8_is_reported_at_its_line():
    problem = one_problem(b"name: Small\nphases:\n  - id: \xff\n")
    assert (problem.line, problem.message) == (3, "the file is not UTF-8 text (byte 28)")


def test_a_key_that_is_not_text_is_reported_at_its_line():
    text = VALID + "1: one\n"
    problem = one_problem(text)
    assert (
        problem.format()
        == f"{len(text.splitlines())}: the key '1' is read as !!int, not text; quote it to use it as a key"
    )


def test_an_explicit_date_is_reported_at_its_line():
    text = VALID.replace("description: Two steps and a parking place.", "description: !!timestamp 2024-13-45")
    problem = one_problem(text)
    assert problem.format() == (
        "2: description: YAML tag '!!timestamp' makes a date, which a workflow cannot store; "
        "quote the value to keep it as text"
    )


@pytest.mark.parametrize(
    "text",
    [
        VALID + "1: one\n",
        VALID + "? [a, b]\n: one\n",
        VALID.replace("description: Two steps and a parking place.", "description: !!timestamp 2024-13-45"),
        VALID.replace("description: Two steps and a parking place.", "description: !!binary aGk="),
        VALID.replace("description: Two steps and a parking place.", "description: !!int 0x_"),
        VALID.replace("description: Two steps and a parking place.", "description: !!str [a]"),
        VALID.replace("name: Done", "name: Do\x00ne"),
        VALID.replace("timeout_seconds: 60", "timeout_seconds: .inf"),
        VALID.replace("retry_backoff_seconds: 1.5", "retry_backoff_seconds: !!float x"),
        VALID.replace("sequence_order: 1\n", ""),
        VALID.replace("  - id: PHASE_DONE", "  - id: PHASE_TODO"),
        VALID + "extra: &a [*a]\n",
    ],
)
def test_every_problem_has_a_line(text):
    problems = problems_of(text)
    assert problems
    assert all(problem.line for problem in problems), [problem.format() for problem in problems]


# A third phase copied from the first, its id not yet changed: shown in a column of its own, leading to its model.
TWINS = textwrap.dedent(
    """\
    name: Twins
    phases:
      - id: PHASE_A
        name: A
        allowed_transitions: [PHASE_B]
      - id: PHASE_B
        name: B
        is_terminal: true
      - id: PHASE_A
        name: C
        allowed_transitions: [PHASE_A]
    board_columns:
      - id: a
        name: A
        phase_mapping: [PHASE_A]
      - id: b
        name: B
        phase_mapping: [PHASE_B]
      - id: c
        name: C
        phase_mapping: [PHASE_A]
    """
)


def test_a_duplicate_phase_id_is_only_a_duplicate():
    problem = one_problem(TWINS)
    assert problem.format() == "9: phases[2].id: duplicate id 'PHASE_A' (first used by phases[0])"


def test_a_duplicate_of_a_phase_in_no_column_is_only_a_duplicate():
    text = TWINS.split("board_columns:")[0] + "board_columns:\n  - id: b\n    name: B\n    phase_mapping: [PHASE_B]\n"
    problem = one_problem(text)
    assert problem.format() == "9: phases[2].id: duplicate id 'PHASE_A' (first used by phases[0])"


def test_problems_of_a_duplicate_that_do_not_depend_on_its_id_are_still_reported():
    text = TWINS.replace("allowed_transitions: [PHASE_A]", "allowed_transitions: [PHASE_NOPE]")
    assert [problem.format() for problem in problems_of(text)] == [
        "9: phases[2].id: duplicate id 'PHASE_A' (first used by phases[0])",
        "11: phases[2].allowed_transitions[0]: unknown phase 'PHASE_NOPE'; the file defines: PHASE_A, PHASE_B",
    ]


def test_a_duplicate_column_id_is_reported_once():
    text = VALID.replace("  - id: blocked", "  - id: todo").replace(
        "phase_mapping: [PHASE_BLOCKED]", "phase_mapping: [PHASE_BLOCKED]\n    auto_transition_to: todo"
    )
    problem = one_problem(text)
    assert (problem.path, problem.message) == (
        "board_columns[2].id",
        "duplicate id 'todo' (first used by board_columns[0])",
    )


def test_a_phase_listed_twice_in_one_column_says_so():
    problem = one_problem(VALID.replace("phase_mapping: [PHASE_DONE]", "phase_mapping: [PHASE_DONE, PHASE_DONE]"))
    assert problem.message == "phase 'PHASE_DONE' is listed twice in this column; a phase belongs to one column"
