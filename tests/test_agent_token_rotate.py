"""Issuing an agent a new token: the old one stops working at once; only staff and system actors may."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from board.events import SystemActor
from board.services import agent_authenticate, agent_revoke, agent_token_rotate

pytestmark = pytest.mark.django_db


def test_the_new_token_works_and_the_old_one_does_not(builder, alice):
    agent, old = builder
    rotated, new = agent_token_rotate(agent=agent, actor=alice)
    assert new != old and new.startswith("omoi_")
    assert agent_authenticate(new) == agent
    assert agent_authenticate(old) is None
    assert rotated.token_prefix == new[:11]


def test_a_system_actor_may_rotate(builder):
    _, new = agent_token_rotate(agent=builder[0], actor=SystemActor("setup"))
    assert agent_authenticate(new) == builder[0]


def test_members_and_agents_may_not(builder, bob):
    agent, token = builder
    for actor in (bob, agent):
        with pytest.raises(PermissionDenied, match="Only staff"):
            agent_token_rotate(agent=agent, actor=actor)
    assert agent_authenticate(token) == agent


def test_a_revoked_agent_gets_no_new_token(builder, alice):
    agent, _ = builder
    agent_revoke(agent=agent, actor=alice)
    with pytest.raises(ValidationError, match="revoked"):
        agent_token_rotate(agent=agent, actor=alice)
