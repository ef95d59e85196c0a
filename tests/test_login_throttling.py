"""Login throttling for people: repeated failures for one username from one address lock that pair out for a while."""

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

LOGIN = reverse("login")
ADMIN_LOGIN = reverse("admin:login")


def attempt(client, password, *, username="bob", url=LOGIN):
    return client.post(url, {"username": username, "password": password, "next": "/"})


def test_after_the_limit_even_the_right_password_is_refused_with_a_clear_page(client, bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = attempt(client, "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = attempt(client, "wrong")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed logins" in page and "Try again in 15 minutes" in page
    assert attempt(client, "password").status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_admin_login_counts_too(client, bob, settings):
    bob.is_staff = True
    bob.save()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "wrong", url=ADMIN_LOGIN)
    assert attempt(client, "password", url=ADMIN_LOGIN).status_code == 429


def test_a_lockout_does_not_lock_the_user_out_from_elsewhere(client, bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "wrong")
    assert attempt(client, "password").status_code == 429
    elsewhere = Client(REMOTE_ADDR="203.0.113.7")
    assert attempt(elsewhere, "password").status_code == 302


def test_a_success_before_the_limit_starts_the_count_again(client, bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "wrong")
    assert attempt(client, "password").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, "wrong").status_code == 200
    assert attempt(client, "password").status_code == 302


def test_unknown_usernames_are_throttled_like_real_ones(client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "guess", username="nobody")
    assert attempt(client, "guess", username="nobody").status_code == 429
