"""manage.py create_agent: registers an agent on boards and prints its token once."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from board.management.commands.create_agent import Command
from board.models import Agent, Board, Event
from board.services import agent_authenticate, agent_create, token_hash

from .workflow_samples import SMALL, load

pytestmark = pytest.mark.django_db


def create_agent(*args):
    out = StringIO()
    call_command("create_agent", *args, stdout=out)
    return out.getvalue()


def token_in(output):
    (token,) = re.findall(r"^Token: (omoi_\S+)$", output, re.MULTILINE)
    return token


def test_it_creates_the_agent_and_prints_its_token_once(board):
    output = create_agent("builder", "--board", "alices-board")
    token = token_in(output)
    agent = Agent.objects.get(name="builder")
    assert agent_authenticate(token) == agent
    assert agent.token_hash == token_hash(token) and agent.token_prefix == token[:11]
    assert output.count(token) == 1
    assert "only time the token is shown" in output
    assert "Created agent 'builder' (worker) on alices-board; any phase; capabilities: none." in output
    event = Event.objects.get(type="agent.registered")
    assert (event.board, event.actor, event.entity_id) == (board, "create_agent", str(agent.pk))


def test_it_takes_several_boards_a_phase_capabilities_and_a_type(board, workflow):
    Board.objects.create(name="Second", slug="second", workflow=workflow)
    output = create_agent(
        "tester",
        "--board=alices-board",
        "--board=second",
        "--board=alices-board",
        "--phase=PHASE_TESTING",
        "--capabilities=qa, python,qa",
        "--type=reviewer",
    )
    agent = Agent.objects.get(name="tester")
    assert sorted(agent.boards.values_list("slug", flat=True)) == ["alices-board", "second"]
    assert (agent.phase.key, agent.capabilities, agent.agent_type) == ("PHASE_TESTING", ["qa", "python"], "reviewer")
    assert "on alices-board, second; PHASE_TESTING; capabilities: qa, python." in output
    assert Event.objects.filter(type="agent.registered").count() == 2  # one per board


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--board", "nope"], "No board 'nope'. Boards: alices-board."),
        (["x", "--board", "alices-board", "--board", "gone"], "No board 'gone'. Boards: alices-board."),
        (["x", "--board", "alices-board", "--phase", "PHASE_NOPE"], "Unknown phase 'PHASE_NOPE' in workflow"),
        (["builder", "--board", "alices-board"], "name: An agent named 'builder' already exists."),
        (["  ", "--board", "alices-board"], "name: This field cannot be blank."),
        (["x" * 101, "--board", "alices-board"], "name: At most 100 characters (this has 101)."),
        (["x", "--board", "alices-board", "--capabilities", "a,,b"], "capabilities: Each capability is a name"),
        (["x", "--board", "alices-board", "--type", "t" * 51], "agent_type: At most 50 characters"),
        (["x"], "the following arguments are required: --board"),
    ],
)
def test_it_refuses_bad_input_with_a_clear_message(board, alice, args, message):
    agent_create(name="builder", boards=[board], actor=alice)
    with pytest.raises(CommandError) as caught:
        create_agent(*args)
    assert message in str(caught.value)
    assert Agent.objects.count() == 1


def test_a_phase_must_be_in_the_workflow_of_every_board(board):
    Board.objects.create(name="Small", slug="small-board", workflow=load(SMALL).workflow)
    with pytest.raises(CommandError, match="phase: Phase PHASE_TESTING is not in the workflow of every board given."):
        create_agent("x", "--board", "alices-board", "--board", "small-board", "--phase", "PHASE_TESTING")
    assert not Agent.objects.exists()


def test_from_the_command_line_an_error_is_one_line_without_a_traceback(board, capsys, monkeypatch):
    # run_from_argv closes every connection when it ends, which would end the test's transaction.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    with pytest.raises(SystemExit) as caught:
        Command().run_from_argv(["manage.py", "create_agent", "x", "--board", "nope"])
    assert caught.value.code == 1
    assert capsys.readouterr().err == "CommandError: No board 'nope'. Boards: alices-board.\n"
