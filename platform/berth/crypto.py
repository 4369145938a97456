"""Encryption at rest for secrets kept in the database (agent tokens, project secrets)."""

import functools
import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


def _fernet() -> Fernet:
    return _fernet_for(settings.BERTH_ENCRYPTION_KEY)


@functools.lru_cache(maxsize=4)
def _fernet_for(key: str) -> Fernet:
    """One Fernet per key: building it (decoding the key, two cipher keys) was about half of
    decrypting a project's secrets, done for every project a health refresh probes."""
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("stored secret cannot be decrypted with BERTH_ENCRYPTION_KEY") from None


class EncryptedTextField(models.TextField):
    """Holds a string, stores a Fernet token. Never filter on it: tokens are salted."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)


class EncryptedJSONField(models.TextField):
    """Holds a JSON-serialisable dict, stores it as one Fernet token."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return {}
        return json.loads(decrypt(value))

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        if value is None or value == "":
            return {}
        return json.loads(value)

    def get_prep_value(self, value):
        if value is None:
            value = {}
        return encrypt(json.dumps(value, sort_keys=True))
