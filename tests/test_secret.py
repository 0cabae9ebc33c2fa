"""The secret key is kept between restarts (app/secret.py): made once, 0600, in the data
folder, unless CNNLAB_SECRET_KEY is set (issue 12, finding 13: practice scores and sessions
no longer reset with every start)."""

from __future__ import annotations

import os
import stat

import pytest

from cnnlab.app.secret import UnsafeKeyFile, stored_key
from cnnlab.app.session import sign, unsign
from cnnlab.app.settings import Settings


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_key_is_made_once_private_and_kept_across_restarts(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_SECRET_KEY", raising=False)
    folder = tmp_path / "data"
    before = Settings(data_dir=folder)
    cookie = sign("a-session", before)
    after = Settings(data_dir=folder)  # the next start reads the same file
    assert after.secret_key.get_secret_value() == before.secret_key.get_secret_value()
    assert len(before.secret_key.get_secret_value()) >= 32
    assert unsign(cookie, after) == "a-session"
    assert mode(folder / "secret_key") == 0o600 and mode(folder) == 0o700
    assert [p.name for p in folder.iterdir()] == ["secret_key"]  # no temporary file left
    other = Settings(data_dir=tmp_path / "elsewhere")
    assert other.secret_key.get_secret_value() != before.secret_key.get_secret_value()


def test_cnnlab_secret_key_wins_and_no_file_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_SECRET_KEY", "an operator's key, the same on every worker")
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.secret_key.get_secret_value() == "an operator's key, the same on every worker"
    assert not (tmp_path / "data").exists()


def test_a_key_others_could_read_or_plant_is_refused(tmp_path):
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    os.chmod(open_folder, 0o777)
    with pytest.raises(UnsafeKeyFile, match="closed to others"):
        stored_key(open_folder)
    readable = tmp_path / "readable"
    stored_key(readable)
    os.chmod(readable / "secret_key", 0o644)
    with pytest.raises(UnsafeKeyFile, match="closed to others"):
        stored_key(readable)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    (empty / "secret_key").touch(mode=0o600)
    with pytest.raises(UnsafeKeyFile, match="no usable key"):
        stored_key(empty)
