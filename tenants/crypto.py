"""Encryption of secrets at rest (access-key secrets, later CA keys).

Keys come from MESHPLANE_ENCRYPTION_KEY (Fernet keys, comma-separated, newest first, so a
key can be rotated in by putting it in front). Without one a key is derived from
SECRET_KEY, which is only acceptable for the embedded demo.
"""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = list(settings.MESHPLANE_ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(b"meshplane-at-rest:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
