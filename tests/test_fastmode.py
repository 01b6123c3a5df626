import pytest

import stnlib
from stnlib.fastmode import fast_mode


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_on(monkeypatch, value):
    monkeypatch.setenv("STNLIB_FAST", value)
    assert fast_mode() is True


@pytest.mark.parametrize("value", ["", "0", "false", "No", "off"])
def test_off(monkeypatch, value):
    monkeypatch.setenv("STNLIB_FAST", value)
    assert fast_mode() is False


def test_unset_is_off(monkeypatch):
    monkeypatch.delenv("STNLIB_FAST", raising=False)
    assert fast_mode() is False


def test_typo_is_an_error_not_a_guess(monkeypatch):
    monkeypatch.setenv("STNLIB_FAST", "fast")
    with pytest.raises(ValueError, match="STNLIB_FAST='fast'"):
        fast_mode()


def test_exposed_as_constant():
    assert isinstance(stnlib.FAST, bool) and stnlib.fast_mode is fast_mode
