"""The settings helpers: environment values are read strictly, bad ones stop the start-up."""

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from omoi_site.settings import envbool, envint, envlist, envpool


def test_envbool_reads_the_usual_spellings(monkeypatch):
    for value, expected in [("true", True), ("1", True), ("YES", True), ("off", False), ("0", False), ("", False)]:
        monkeypatch.setenv("OMOI_FLAG", value)
        assert envbool("OMOI_FLAG", "false") is expected
    monkeypatch.delenv("OMOI_FLAG")
    assert envbool("OMOI_FLAG", "true") is True


def test_envbool_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("OMOI_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="OMOI_FLAG must be one of"):
        envbool("OMOI_FLAG", "false")


def test_envint_refuses_non_numbers_and_small_values(monkeypatch):
    monkeypatch.setenv("OMOI_NUMBER", "12")
    assert envint("OMOI_NUMBER", "5") == 12
    monkeypatch.setenv("OMOI_NUMBER", "twelve")
    with pytest.raises(ImproperlyConfigured, match="OMOI_NUMBER must be an integer, not 'twelve'"):
        envint("OMOI_NUMBER", "5")
    monkeypatch.setenv("OMOI_NUMBER", "-1")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        envint("OMOI_NUMBER", "5", minimum=0)


def test_envlist_splits_on_commas(monkeypatch):
    monkeypatch.setenv("OMOI_HOSTS", " a.example , b.example,,")
    assert envlist("OMOI_HOSTS", "") == ["a.example", "b.example"]


def run_with(arguments, **env):
    """Python with `arguments` in a new process, on the default settings with `env` on top."""
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "omoi_site.settings", "DATABASE_URL": "", "REDIS_URL": "", **env}
    return subprocess.run([sys.executable, *arguments], env=environ, capture_output=True, text=True, timeout=120)


def printed_settings(expression, **env):
    """What `expression` (over `settings`) prints in a new process started with `env`."""
    return run_with(
        ["-c", f"import django; django.setup(); from django.conf import settings; print({expression})"], **env
    )


def settings_with(**env):
    return printed_settings(
        "settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND']", **env
    )


def test_the_defaults_are_sqlite_and_the_in_memory_layer():
    result = settings_with()
    assert result.stdout.split() == ["omoi_site.sqlite", "channels.layers.InMemoryChannelLayer"]


def test_urls_select_postgresql_and_redis():
    result = settings_with(DATABASE_URL="postgres://u@127.0.0.1:5432/omoi", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.stdout.split() == ["django.db.backends.postgresql", "channels_redis.core.RedisChannelLayer"]


def test_the_pool_has_bounded_defaults(monkeypatch):
    for name in ("OMOI_DB_POOL_MIN_SIZE", "OMOI_DB_POOL_MAX_SIZE", "OMOI_DB_POOL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert envpool() == {"min_size": 2, "max_size": 20, "timeout": 10}


def test_the_pool_sizes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OMOI_DB_POOL_MIN_SIZE", "0")
    monkeypatch.setenv("OMOI_DB_POOL_MAX_SIZE", "4")
    monkeypatch.setenv("OMOI_DB_POOL_TIMEOUT", "3")
    assert envpool() == {"min_size": 0, "max_size": 4, "timeout": 3}
    monkeypatch.setenv("OMOI_DB_POOL_MAX_SIZE", "0")
    assert envpool() is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OMOI_DB_POOL_MIN_SIZE": "8", "OMOI_DB_POOL_MAX_SIZE": "4"}, "OMOI_DB_POOL_MIN_SIZE (8) must not be larger"),
        ({"OMOI_DB_POOL_MAX_SIZE": "-1"}, "OMOI_DB_POOL_MAX_SIZE must be at least 0"),
        ({"OMOI_DB_POOL_MIN_SIZE": "some"}, "OMOI_DB_POOL_MIN_SIZE must be an integer"),
        ({"OMOI_DB_POOL_TIMEOUT": "0"}, "OMOI_DB_POOL_TIMEOUT must be at least 1"),
    ],
)
def test_a_bad_pool_size_is_refused(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        envpool()


def test_postgresql_connections_come_from_the_pool():
    pool = "settings.DATABASES['default']['CONN_MAX_AGE'], settings.DATABASES['default']['OPTIONS'].get('pool')"
    result = printed_settings(pool, DATABASE_URL="postgres://u@127.0.0.1:5432/omoi", OMOI_DB_POOL_MAX_SIZE="6")
    assert result.stdout.strip() == "0 {'min_size': 2, 'max_size': 6, 'timeout': 10}"
    result = printed_settings(pool, DATABASE_URL="postgres://u@127.0.0.1:5432/omoi", OMOI_DB_POOL_MAX_SIZE="0")
    assert result.stdout.strip() == "0 None"
    # SQLite has no pool: its connections are opened in the process, cheaply.
    result = printed_settings("settings.DATABASES['default'].get('OPTIONS', {}).get('pool')")
    assert result.stdout.strip() == "None"
    result = settings_with(DATABASE_URL="postgres://u@127.0.0.1:5432/omoi", OMOI_DB_POOL_MIN_SIZE="30")
    assert result.returncode != 0
    assert "OMOI_DB_POOL_MIN_SIZE (30) must not be larger than OMOI_DB_POOL_MAX_SIZE (20)" in result.stderr


def test_production_needs_a_secret_key():
    result = settings_with(DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_a_bad_value_stops_the_start_up():
    result = settings_with(DEBUG="perhaps")
    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr


def test_redis_sockets_outlast_the_channel_layers_wait():
    host = "settings.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]"
    result = printed_settings(
        f"{host}['socket_timeout'], {host}['socket_connect_timeout']", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    read, connect = (float(value) for value in result.stdout.split())
    # channels-redis blocks up to 5 s reading a channel; a shorter socket timeout drops idle websockets.
    assert read > 5
    # An unreachable Redis costs a write at most this long, not the system's TCP timeout.
    assert connect <= 2


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "omoi.example.org",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def deploy_check(**env):
    return run_with(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env)


def test_the_production_settings_pass_the_deploy_check():
    result = deploy_check(**PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_catches_each_https_setting_left_out():
    # The check is not vacuous: every setting the production layout needs is one it would miss.
    result = deploy_check(**{**PRODUCTION, "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false"})
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


def test_the_proxy_header_is_read_as_a_header_and_a_value():
    result = printed_settings("settings.SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https")
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"
    result = settings_with(SECURE_PROXY_SSL_HEADER="https")
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'" in result.stderr


def test_the_server_cap_must_leave_room_for_the_api_and_workflow_uploads():
    result = settings_with(OMOI_MAX_REQUEST_BYTES="100000")
    assert result.returncode != 0
    assert "OMOI_MAX_REQUEST_BYTES must leave room" in result.stderr


def test_the_live_intervals_come_from_the_environment():
    intervals = (
        "settings.OMOI_LIVE_POLL_SECONDS, settings.OMOI_LIVE_ACCESS_SECONDS, settings.OMOI_LIVE_SAFETY_POLL_SECONDS"
    )
    assert printed_settings(intervals).stdout.split() == ["1.0", "10.0", "30.0"]
    given = printed_settings(intervals, OMOI_LIVE_POLL_SECONDS="0.2", OMOI_LIVE_ACCESS_SECONDS="5")
    assert given.stdout.split() == ["0.2", "5.0", "30.0"]


@pytest.mark.parametrize("value", ["0", "soon", "nan", "-1"])
def test_a_bad_live_interval_is_refused_naming_the_variable(value):
    result = printed_settings("settings.OMOI_LIVE_POLL_SECONDS", OMOI_LIVE_POLL_SECONDS=value)
    assert result.returncode != 0
    assert "OMOI_LIVE_POLL_SECONDS must be" in result.stderr
