"""authserver/encoding.py: base64url without padding and strict JSON, the one copy each."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

import pytest

from authserver.encoding import b64url_decode, b64url_encode, loads_strict_json, sha256_b64url


@pytest.mark.parametrize("size", range(0, 12))
def test_round_trip_without_padding(size):
    data = os.urandom(size)
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data == b64url_decode(text.encode("ascii"))


def test_encode_matches_rfc_4648_section_5():
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_encode(b"") == ""


@pytest.mark.parametrize("text", ["-_8=", "+/8", "abc!", "a", "abcde", "-_9", "AB", "ABC=",
                                  " AAA", "é"])
def test_decode_accepts_only_the_canonical_encoding(text):
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_decode_errors_are_binascii_errors():
    with pytest.raises(binascii.Error):
        b64url_decode("a")


def test_sha256_b64url_is_rfc_7636_s256():
    # RFC 7636 Appendix B.
    assert sha256_b64url(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    digest = hashlib.sha256(b"x").digest()
    assert sha256_b64url(b"x") == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize("text", [
    '{"a": 1, "a": 2}',
    '{"a": {"b": 1, "b": 1}}',
    '[{"type": "x"}, {"type": "y", "type": "y"}]',
    '{"a": NaN}',
    '{"a": Infinity}',
    '{"a": -Infinity}',
    '{"a": ',
])
def test_strict_json_refuses_repeated_members_and_constants(text: str) -> None:
    with pytest.raises(ValueError):
        loads_strict_json(text)


def test_strict_json_reads_plain_json() -> None:
    assert loads_strict_json(b'{"a": [1, {"b": null}], "c": "d"}') == {
        "a": [1, {"b": None}], "c": "d"}
