import pytest
from django.core.exceptions import ImproperlyConfigured

from berth.env import env_bool, env_float, env_int, env_list


def test_env_bool_reads_words(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "off")
    assert env_bool("FLAG", True) is False


def test_env_bool_rejects_garbage_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG='maybe'"):
        env_bool("FLAG", False)


def test_env_int_uses_default_when_unset(monkeypatch):
    monkeypatch.delenv("COUNT", raising=False)
    assert env_int("COUNT", 7) == 7


def test_env_int_rejects_non_number_and_bounds(monkeypatch):
    monkeypatch.setenv("COUNT", "ten")
    with pytest.raises(ImproperlyConfigured, match="COUNT='ten' is not a whole number"):
        env_int("COUNT", 1)
    monkeypatch.setenv("COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match="COUNT=0 is below the minimum of 1"):
        env_int("COUNT", 1, minimum=1)


def test_env_float_rejects_negative(monkeypatch):
    monkeypatch.setenv("DEADLINE", "-1")
    with pytest.raises(ImproperlyConfigured, match="DEADLINE=-1.0 is below"):
        env_float("DEADLINE", 1.0)


def test_env_list_splits_and_rejects_empty_items(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]
    monkeypatch.setenv("HOSTS", "a.example,,b")
    with pytest.raises(ImproperlyConfigured, match="HOSTS"):
        env_list("HOSTS", [])
