"""The MCP endpoint for agent CLIs, through the official MCP client against a live server.

Every tool answers what the API answers and refuses with the API's message;
the agent is the token's, and another board's objects do not exist for it.
"""

import pytest
from mcp import MCPError

from board.mcp.toolbox import detail_text
from board.models import Board, Event, IdempotencyRecord, PhaseHistory, Task, TicketComment
from board.services import agent_create, agent_revoke, task_claim, task_create, ticket_create
from discoveries.models import Discovery

from .mcp_agent import McpAgent, post, text_of

pytestmark = pytest.mark.django_db(transaction=True)

READS = {"whoami", "get_task", "get_ticket", "get_ticket_gate", "list_phases"}
WRITES = {
    "claim_next_task",
    "start_task",
    "heartbeat",
    "complete_task",
    "fail_task",
    "create_task",
    "comment_on_ticket",
    "move_ticket",
    "record_discovery",
    "branch_discovery",
}
DESTRUCTIVE = {"complete_task", "fail_task", "move_ticket"}


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the code", actor=alice, description="Use <b>the</b> design.")


@pytest.fixture
def charlies_task(workflow, charlie):
    """A task on a board Builder is not on."""
    board = Board.objects.create(name="Charlie's board", slug="charlies-board", workflow=workflow)
    ticket = ticket_create(board=board, title="Charlie's ticket", actor=charlie, phase="PHASE_IMPLEMENTATION")
    return task_create(ticket=ticket, title="Charlie's task", actor=charlie)


@pytest.fixture
def mcp(live_server, builder):
    return McpAgent(live_server.url, builder[1])


@pytest.fixture
def held(task, builder):
    assert task_claim(agent=builder[0]) == task
    task.refresh_from_db()
    return task


def same_refusal(api_response, message):
    """The API refused the same request with the same message (a 422's problems each with its field)."""
    assert api_response.status_code >= 400
    assert detail_text(api_response.json()["detail"]) == message


def same_task(answer, api_answer):
    """The same task as the API answers it; the score aside, which grows with the task's age between the two reads."""
    assert {**answer, "score": None} == {**api_answer, "score": None}
    assert abs(answer["score"] - api_answer["score"]) < 0.01


# Discovery


def test_the_tools_are_listed_with_their_schemas_and_hints(mcp):
    tools = mcp.tools()
    assert set(tools) == READS | WRITES
    for name, tool in tools.items():
        hints = tool.annotations
        assert tool.description and tool.title
        assert tool.input_schema["additionalProperties"] is False
        if name in READS:
            assert hints.read_only_hint is True
            assert "idempotency_key" not in tool.input_schema["properties"]
        else:
            assert hints.read_only_hint is False
            assert hints.destructive_hint is (name in DESTRUCTIVE)
            assert tool.input_schema["properties"]["idempotency_key"]["maxLength"] == 200
        # Who calls is the token's agent: no tool takes an agent, a name or an actor.
        assert not {"agent", "agent_id", "agent_name", "actor", "name"} & set(tool.input_schema["properties"])
    assert tools["heartbeat"].annotations.idempotent_hint is True
    assert tools["complete_task"].input_schema["required"] == ["task_id"]
    assert {"result", "artifacts", "completed_criteria", "attempt"} <= set(
        tools["complete_task"].input_schema["properties"]
    )
    assert tools["move_ticket"].input_schema["required"] == ["to_phase", "ticket_id"]
    assert tools["whoami"].output_schema["properties"]["boards"]["type"] == "array"
    assert tools["claim_next_task"].output_schema is None  # it may answer that there is no task


def test_a_client_on_the_2025_handshake_gets_the_same_tools(live_server, builder, mcp):
    legacy = McpAgent(live_server.url, builder[1], mode="legacy")
    assert set(legacy.tools()) == set(mcp.tools())
    assert legacy.answer("whoami")["name"] == "builder"


# Each tool: its answer is the API's, its refusal the API's message


def test_whoami_is_the_tokens_agent(mcp, api):
    assert mcp.answer("whoami") == api.get("/agents/me").json()
    assert mcp.refusal("whoami", {"name": "someone else"}) == ("Invalid arguments: whoami takes none, not name.")


def test_claim_next_task_claims_then_says_there_is_no_work(mcp, task, api):
    claimed = mcp.answer("claim_next_task")
    assert claimed["id"] == task.pk and claimed["attempt"] == 1
    same_task(claimed, api.get(f"/tasks/{task.pk}").json())
    Task.objects.filter(pk=task.pk).update(status=Task.Status.COMPLETED, assigned_agent=None)
    result = mcp.call("claim_next_task")
    assert not result.is_error and text_of(result) == "No task is ready for this agent now; try again later."


def test_claim_next_task_refuses_a_board_not_the_agents(mcp, charlies_task, api):
    message = mcp.refusal("claim_next_task", {"board": "charlies-board"})
    assert message == "No board 'charlies-board' among this agent's boards."
    same_refusal(api.post("/tasks/next", {"board": "charlies-board"}), message)


def test_get_task_gives_the_task_and_its_phase_instructions(mcp, task, api):
    answer = mcp.answer("get_task", {"task_id": task.pk})
    same_task(answer["task"], api.get(f"/tasks/{task.pk}").json())
    instructions = api.get("/phases/PHASE_IMPLEMENTATION/instructions").json()
    assert answer["instructions"] == instructions and instructions["instructions"].startswith("# Phase:")


def test_another_boards_task_is_not_found_like_a_missing_one(mcp, charlies_task, api):
    assert mcp.refusal("get_task", {"task_id": charlies_task.pk}) == (
        f"No task {charlies_task.pk} on this agent's boards."
    )
    assert mcp.refusal("get_task", {"task_id": 999999}) == "No task 999999 on this agent's boards."
    same_refusal(api.get(f"/tasks/{charlies_task.pk}"), f"No task {charlies_task.pk} on this agent's boards.")
    for name, arguments in [
        ("start_task", {"task_id": charlies_task.pk}),
        ("complete_task", {"task_id": charlies_task.pk}),
        ("fail_task", {"task_id": charlies_task.pk, "error": "x"}),
        ("record_discovery", {"source_task_id": charlies_task.pk, "discovery_type": "bug", "description": "x"}),
        ("branch_discovery", {"source_task_id": charlies_task.pk, "discovery_type": "bug", "description": "x"}),
    ]:
        assert mcp.refusal(name, arguments).endswith(f"no task {charlies_task.pk} on this agent's boards.".lower()[1:])
    for name, arguments in [
        ("get_ticket", {"ticket_id": charlies_task.ticket_id}),
        ("get_ticket_gate", {"ticket_id": charlies_task.ticket_id}),
        ("comment_on_ticket", {"ticket_id": charlies_task.ticket_id, "body": "Hello"}),
        ("move_ticket", {"ticket_id": charlies_task.ticket_id, "to_phase": "PHASE_TESTING"}),
        ("create_task", {"ticket_id": charlies_task.ticket_id, "title": "Mine now"}),
    ]:
        assert mcp.refusal(name, arguments) == f"No ticket {charlies_task.ticket_id} on this agent's boards."
    charlies_task.refresh_from_db()
    assert charlies_task.status == Task.Status.PENDING
    assert not TicketComment.objects.exists() and not Discovery.objects.exists()


def test_start_task_starts_the_held_task(mcp, held, api):
    started = mcp.answer("start_task", {"task_id": held.pk, "attempt": 1})
    assert started["status"] == "running"
    same_task(started, api.get(f"/tasks/{held.pk}").json())


def test_start_task_refuses_a_task_the_agent_does_not_hold(mcp, task, api):
    message = mcp.refusal("start_task", {"task_id": task.pk})
    same_refusal(api.post(f"/tasks/{task.pk}/start"), message)
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING


def test_heartbeat_reports_the_status(mcp, builder):
    answer = mcp.answer("heartbeat", {"status": "busy"})
    assert answer["status"] == "busy" and answer["last_heartbeat"]
    builder[0].refresh_from_db()
    assert builder[0].status == "busy"


def test_heartbeat_refuses_what_staff_set(mcp, builder):
    message = mcp.refusal("heartbeat", {"capabilities": ["admin"]})
    assert "capabilities is set by staff" in message
    assert mcp.refusal("heartbeat", {"status": "asleep"}).startswith("Invalid arguments: status: Input should be")
    builder[0].refresh_from_db()
    assert builder[0].capabilities == []


def test_complete_task_keeps_result_artifacts_and_criteria(mcp, held, api):
    mcp.answer("start_task", {"task_id": held.pk})
    done = mcp.answer(
        "complete_task",
        {
            "task_id": held.pk,
            "attempt": 1,
            "result": {"summary": "Done <b>well</b>", "n": [1, 2.5, None]},
            "artifacts": [{"type": "code", "path": "src/sso.py"}],
            "completed_criteria": ["Code written"],
        },
    )
    assert done["status"] == "completed" and done["result"] == {"summary": "Done <b>well</b>", "n": [1, 2.5, None]}
    same_task(done, api.get(f"/tasks/{held.pk}").json())
    assert done["artifacts"] == [{"type": "code", "path": "src/sso.py"}]
    assert done["completed_criteria"] == ["Code written"]


def test_complete_task_refuses_a_superseded_attempt(mcp, held, api):
    message = mcp.refusal("complete_task", {"task_id": held.pk, "attempt": 7})
    assert "attempt" in message
    same_refusal(api.post(f"/tasks/{held.pk}/complete", {"attempt": 7}), message)
    held.refresh_from_db()
    assert held.status == Task.Status.ASSIGNED


def test_fail_task_hands_the_task_back_for_a_retry(mcp, held):
    failed = mcp.answer("fail_task", {"task_id": held.pk, "error": "The build broke.", "attempt": 1})
    assert failed["error"] == "The build broke." and failed["retry_count"] == 1


def test_fail_task_refuses_a_blank_error(mcp, held, api):
    message = mcp.refusal("fail_task", {"task_id": held.pk, "error": "   "})
    assert message.startswith("Invalid arguments: error: ")
    assert api.post(f"/tasks/{held.pk}/fail", {"error": "   "}).status_code == 422
    held.refresh_from_db()
    assert held.status == Task.Status.ASSIGNED and held.error == ""


def test_create_task_in_any_phase(mcp, ticket, task, api):
    created = mcp.answer(
        "create_task",
        {
            "ticket_id": ticket.pk,
            "title": "Write the requirements",
            "phase": "PHASE_REQUIREMENTS",
            "dependencies": [task.pk],
        },
    )
    assert created["phase"] == "PHASE_REQUIREMENTS" and created["dependencies"] == [task.pk]
    same_task(created, api.get(f"/tasks/{created['id']}").json())


def test_create_task_refuses_an_unknown_phase(mcp, ticket, api):
    body = {"ticket_id": ticket.pk, "title": "Somewhere", "phase": "PHASE_NOWHERE"}
    message = mcp.refusal("create_task", body)
    same_refusal(api.post("/tasks", body), message)
    assert Task.objects.count() == 0


def test_markup_in_a_comment_is_stored_and_returned_as_given(mcp, ticket):
    body = "<script>alert('x')</script> & <b>bold</b> \"quoted\""
    comment = mcp.answer("comment_on_ticket", {"ticket_id": ticket.pk, "body": body})
    assert comment["body"] == body and comment["author"] == "agent:builder"
    assert TicketComment.objects.get().body == body
    assert mcp.answer("get_ticket", {"ticket_id": ticket.pk})["comments"][0]["body"] == body


def test_comment_on_ticket_refuses_an_empty_body(mcp, ticket):
    assert mcp.refusal("comment_on_ticket", {"ticket_id": ticket.pk, "body": ""}).startswith(
        "Invalid arguments: body: "
    )
    assert not TicketComment.objects.exists()


def test_get_ticket_is_the_apis_ticket(mcp, ticket, task, api):
    answer, api_answer = mcp.answer("get_ticket", {"ticket_id": ticket.pk}), api.get(f"/tickets/{ticket.pk}").json()
    for mine, theirs in zip(answer.pop("tasks"), api_answer.pop("tasks"), strict=True):
        same_task(mine, theirs)
    assert answer == api_answer
    assert mcp.refusal("get_ticket", {"ticket_id": 999999}) == "No ticket 999999 on this agent's boards."


def test_move_ticket_with_a_reason(mcp, ticket):
    moved = mcp.answer("move_ticket", {"ticket_id": ticket.pk, "to_phase": "PHASE_TESTING", "reason": "Code done"})
    assert moved["phase"] == "PHASE_TESTING"
    entry = PhaseHistory.objects.get(ticket=ticket, to_key="PHASE_TESTING")
    assert entry.reason == "Code done" and entry.actor == "agent:builder"


def test_move_ticket_refuses_a_phase_the_workflow_does_not_have(mcp, ticket, api):
    body = {"to_phase": "PHASE_NOWHERE", "reason": "Why not"}
    message = mcp.refusal("move_ticket", {"ticket_id": ticket.pk, **body})
    same_refusal(api.post(f"/tickets/{ticket.pk}/transition", body), message)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_IMPLEMENTATION"


def test_get_ticket_gate_is_the_apis_gate(mcp, ticket, task, api):
    gate = mcp.answer("get_ticket_gate", {"ticket_id": ticket.pk})
    assert gate == api.get(f"/tickets/{ticket.pk}/gate").json()
    assert gate["passed"] is False and gate["blockers"]
    assert mcp.refusal("get_ticket_gate", {"ticket_id": 0}).startswith("Invalid arguments: ticket_id: ")


def test_list_phases_is_the_apis_list(mcp, api):
    assert mcp.answer("list_phases") == api.get("/phases").json()
    assert mcp.answer("list_phases", {"board": "alices-board"}) == api.get("/phases?board=alices-board").json()
    assert mcp.refusal("list_phases", {"board": "charlies-board"}) == (
        "No board 'charlies-board' among this agent's boards."
    )


def test_record_discovery_keeps_it_as_given(mcp, task, api):
    body = {
        "source_task_id": task.pk,
        "discovery_type": "bug",
        "description": "The login <form> posts to http://",
        "metadata": {"file": "sso.py", "lines": [3, 4]},
    }
    recorded = mcp.answer("record_discovery", body)
    assert recorded["description"] == body["description"] and recorded["metadata"] == body["metadata"]
    assert recorded["spawned_task_ids"] == [] and recorded["discovered_by"] == "agent:builder"
    assert mcp.refusal("record_discovery", {**body, "discovery_type": "rumour"}).startswith(
        "Invalid arguments: discovery_type: "
    )
    assert Discovery.objects.count() == 1


def test_branch_discovery_spawns_one_task_in_any_phase(mcp, task, api):
    body = {"source_task_id": task.pk, "discovery_type": "missing_requirement", "description": "No logout."}
    branched = mcp.answer("branch_discovery", {**body, "phase": "PHASE_REQUIREMENTS"})
    assert branched["task"]["phase"] == "PHASE_REQUIREMENTS"
    assert branched["discovery"]["spawned_task_ids"] == [branched["task"]["id"]]
    same_task(branched["task"], api.get(f"/tasks/{branched['task']['id']}").json())
    message = mcp.refusal("branch_discovery", {**body, "phase": "PHASE_NOWHERE"})
    same_refusal(api.post("/discoveries/branch", {**body, "phase": "PHASE_NOWHERE"}), message)
    assert Task.objects.count() == 2 and Discovery.objects.count() == 1


# Arguments


def test_bad_arguments_are_tool_errors_that_change_nothing(mcp, ticket):
    assert mcp.refusal("create_task", {"ticket_id": ticket.pk, "title": "x", "agent": "alice"}).startswith(
        "Invalid arguments: agent: Extra inputs are not permitted"
    )
    assert mcp.refusal("create_task", {"ticket_id": "one", "title": "x"}).startswith("Invalid arguments: ticket_id: ")
    # As the API says of a body holding one.
    assert mcp.refusal("create_task", {"ticket_id": ticket.pk, "title": "nul\x00"}) == (
        "The request body contains a NUL character (\\u0000), which no field accepts."
    )
    deep = {"source_task_id": 1, "discovery_type": "bug", "description": "x", "metadata": {}}
    nested = []
    for _ in range(70):
        nested = [nested]
    deep["metadata"] = {"deep": nested}
    assert mcp.refusal("record_discovery", deep) == "The request body is nested more than 64 levels deep."
    assert Task.objects.count() == 0 and not Discovery.objects.exists()


# Idempotency keys


def test_a_write_repeated_with_its_key_is_done_once_and_answered_again(mcp, held):
    arguments = {"task_id": held.pk, "result": {"summary": "Done"}, "idempotency_key": "complete-1"}
    first = mcp.answer("complete_task", arguments)
    events = Event.objects.count()
    # The same arguments in another order are the same request.
    again = mcp.answer("complete_task", dict(reversed(list(arguments.items()))))
    assert again == first
    assert Event.objects.count() == events
    record = IdempotencyRecord.objects.get(key="complete-1")
    assert (record.method, record.path, record.status_code) == ("MCP", "complete_task", 200)


def test_a_refusal_is_replayed_too_and_a_key_reused_for_another_request_is_refused(mcp, task, ticket):
    arguments = {"task_id": task.pk, "idempotency_key": "start-1"}
    message = mcp.refusal("start_task", arguments)
    assert mcp.refusal("start_task", arguments) == message
    assert mcp.refusal("comment_on_ticket", {"ticket_id": ticket.pk, "body": "Hi", "idempotency_key": "start-1"}) == (
        "Idempotency-Key 'start-1' was first used for another request (MCP start_task); "
        "use a new key for a new request."
    )
    assert not TicketComment.objects.exists()
    assert mcp.refusal("comment_on_ticket", {"ticket_id": ticket.pk, "body": "Hi", "idempotency_key": " "}) == (
        "idempotency_key must be 1 to 200 printable characters."
    )


def test_the_api_and_the_tools_share_one_store_of_keys(mcp, api, ticket):
    assert api.post(f"/tickets/{ticket.pk}/comments", {"body": "Hi"}, key="shared").status_code == 201
    assert mcp.refusal("comment_on_ticket", {"ticket_id": ticket.pk, "body": "Hi", "idempotency_key": "shared"}) == (
        f"Idempotency-Key 'shared' was first used for another request (POST /api/v1/tickets/{ticket.pk}/comments); "
        "use a new key for a new request."
    )
    assert TicketComment.objects.count() == 1


# The token


def test_a_revoked_token_is_refused_at_once(live_server, mcp, builder, alice):
    assert mcp.answer("whoami")["name"] == "builder"
    agent_revoke(agent=builder[0], actor=alice)
    status, headers, body = post(live_server.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, token=builder[1])
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert body["error"]["message"] == "Unauthorized: send an agent's token as Authorization: Bearer <token>."
    with pytest.raises(MCPError):
        mcp.call("whoami")


def test_no_token_or_another_kind_of_credential_is_refused(live_server, builder):
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}):
        status, answer, body = post(live_server.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
        assert status == 401 and answer["WWW-Authenticate"] == "Bearer"
        assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32600


def test_two_agents_each_are_their_own_token(live_server, board, alice, task):
    other = agent_create(name="reviewer", boards=[board], actor=alice)
    assert McpAgent(live_server.url, other[1]).answer("whoami")["name"] == "reviewer"


# The transport


def test_malformed_messages_and_wrong_methods_get_json_rpc_errors(live_server, builder):
    token = builder[1]
    status, _, body = post(live_server.url, b"{not json", token=token)
    assert status == 400 and body["error"]["code"] == -32700
    status, _, body = post(live_server.url, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], token=token)
    assert status == 400 and body["error"]["code"] == -32600
    status, _, body = post(live_server.url, {"jsonrpc": "1.0", "id": 1, "method": "ping"}, token=token)
    assert status == 400 and body["error"]["code"] == -32600
    status, _, body = post(live_server.url, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, token=token)
    assert status == 200 and body == {"jsonrpc": "2.0", "id": 2, "result": {}}
    status, _, body = post(live_server.url, {"jsonrpc": "2.0", "id": 3, "method": "tasks/steal"}, token=token)
    assert body["id"] == 3 and body["error"]["code"] == -32601
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "drop_tables", "arguments": {}}}
    status, _, body = post(live_server.url, call, token=token)
    assert body["error"] == {"code": -32602, "message": "Unknown tool: 'drop_tables'"}
    call["params"] = {"name": "whoami", "arguments": []}
    status, _, body = post(live_server.url, call, token=token)
    assert body["error"]["code"] == -32602
    # A notification is acknowledged with no answer.
    status, _, body = post(live_server.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, token=token)
    assert status == 202 and body is None


def test_the_protocol_version_header_is_checked(live_server, builder):
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    status, _, body = post(live_server.url, message, token=builder[1], headers={"MCP-Protocol-Version": "1999-01-01"})
    assert status == 400 and body["error"]["data"]["requested"] == "1999-01-01"
    status, _, body = post(live_server.url, message, token=builder[1], headers={"MCP-Protocol-Version": "2025-06-18"})
    assert status == 200 and "whoami" in {tool["name"] for tool in body["result"]["tools"]}


def test_get_is_not_allowed(live_server, builder):
    status, headers, _ = post(live_server.url, None, token=builder[1], method="GET")
    assert status == 405 and headers["Allow"] == "POST"


def test_a_body_over_the_apis_limit_is_refused_before_it_is_read(live_server, builder, settings, task):
    settings.OMOI_API_MAX_BODY_BYTES = 1024
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {"x": "y" * 2000}},
    }
    status, _, body = post(live_server.url, big, token=builder[1])
    assert status == 413 and body["error"]["message"].endswith("the limit is 1024 bytes.")
