"""Azure SignalR Service tokens: the JWT's header and payload as the SDK writes them, the HMAC
over the UTF-8 bytes of the key, the claim rules of a client token, and reading them back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from signalr_chat.signalr.azure.connection_string import parse_connection_string, service_hub_name
from signalr_chat.signalr.azure.tokens import (
    DEFAULT_ROLE_CLAIM_TYPE,
    ENTRA_SCOPE,
    MAX_TOKEN_LENGTH,
    NAME_IDENTIFIER,
    SYSTEM_CLAIMS,
    AccessKey,
    TokenTooLongError,
    client_claims,
    client_token,
    default_server_id,
    entra_token,
    jwt_claims,
    principal_from_claims,
    rest_token,
    server_token,
)

# PyJWT (2.10+) warns of keys shorter than the hash when verifying; the service's keys are what they are
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is .* bytes long")

KEY = AccessKey("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH", "kid-1")
NOW = 1_700_000_000
ENDPOINT = parse_connection_string(f"Endpoint=https://x.service.signalr.net;AccessKey={KEY.key};Version=1.0;")
SERVER_AUDIENCE = ENDPOINT.server_audience("chat")
CLIENT_AUDIENCE = ENDPOINT.client_audience("chat")
NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
EMAIL = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"


def segment(token: str, index: int) -> Any:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def header(token: str) -> dict[str, Any]:
    result: dict[str, Any] = segment(token, 0)
    return result


def payload(token: str) -> dict[str, Any]:
    result: dict[str, Any] = segment(token, 1)
    return result


# -- the JWT --------------------------------------------------------------------------------------


def test_server_token_header_and_payload() -> None:
    token = server_token(KEY, SERVER_AUDIENCE, "host_0123456789abcdef", now=NOW)
    assert header(token) == {"alg": "HS256", "typ": "JWT", "kid": "kid-1"}
    body = payload(token)
    assert list(body) == ["nameid", "nbf", "exp", "iat", "iss", "aud"]
    assert body == {
        "nameid": "host_0123456789abcdef",
        "nbf": NOW,
        "exp": NOW + 3600,
        "iat": NOW,
        "iss": "azure-signalr",
        "aud": "https://x.service.signalr.net/server/?hub=chat",
    }
    assert "=" not in token, "base64url without padding"


def test_without_an_issuer_as_the_2024_sdk() -> None:
    body = payload(server_token(KEY, SERVER_AUDIENCE, "s", issuer=None, now=NOW))
    assert list(body) == ["nameid", "nbf", "exp", "iat", "aud"]


@pytest.mark.parametrize(("algorithm", "digest"), [("HS256", hashlib.sha256), ("HS512", hashlib.sha512)])
def test_signature_is_hmac_over_header_and_payload(algorithm: str, digest: Any) -> None:
    token = server_token(KEY, SERVER_AUDIENCE, "s", algorithm=algorithm, now=NOW)
    assert header(token)["alg"] == algorithm
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(KEY.key.encode(), signing_input.encode("ascii"), digest).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    verified = jwt.decode(
        token, KEY.key.encode(), algorithms=[algorithm], audience=SERVER_AUDIENCE, issuer="azure-signalr", leeway=10**10
    )
    assert verified["nameid"] == "s"


def test_the_key_is_its_utf8_bytes_never_base64_decoded() -> None:
    key = AccessKey("Zm9vYmFy+ключ/é==")  # looks like base64, and is not ASCII
    token = rest_token(key, "https://h/api/health?api-version=2022-06-01")
    assert jwt.decode(token, "Zm9vYmFy+ключ/é==".encode(), algorithms=["HS256"], options={"verify_aud": False})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "Zm9vYmFy+ключ/é==".encode("utf-16-le"), algorithms=["HS256"], options={"verify_aud": False})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, base64.b64decode("Zm9vYmFy"), algorithms=["HS256"], options={"verify_aud": False})


def test_only_hs256_and_hs512() -> None:
    with pytest.raises(ValueError, match="HS256 or HS512"):
        server_token(KEY, SERVER_AUDIENCE, "s", algorithm="RS256")
    with pytest.raises(ValueError, match="HS256 or HS512"):
        server_token(KEY, SERVER_AUDIENCE, "s", algorithm="none")


def test_default_kid_is_a_decimal_string_stable_per_key() -> None:
    first, second = AccessKey("key-one"), AccessKey("key-two")
    assert re.fullmatch(r"-?\d+", first.kid) and re.fullmatch(r"-?\d+", second.kid)
    assert first.kid == AccessKey("key-one").kid != second.kid
    assert -(2**31) <= int(first.kid) < 2**31
    assert header(server_token(first, SERVER_AUDIENCE, "s"))["kid"] == first.kid
    assert "key-one" not in repr(first)


def test_lifetime() -> None:
    body = payload(client_token(KEY, CLIENT_AUDIENCE, "u", lifetime=timedelta(days=1), now=NOW))
    assert (body["nbf"], body["iat"], body["exp"]) == (NOW, NOW, NOW + 86400)
    with pytest.raises(ValueError, match="lifetime"):
        server_token(KEY, SERVER_AUDIENCE, "s", lifetime=timedelta(0))
    # now: the clock, in whole seconds
    before = int(datetime.now(UTC).timestamp())
    body = payload(server_token(KEY, SERVER_AUDIENCE, "s"))
    assert before <= body["iat"] <= before + 5 and body["exp"] - body["iat"] == 3600


def test_rest_token_names_this_server() -> None:
    audience = ENDPOINT.rest_audience("chat", "/:send")
    body = payload(rest_token(KEY, audience, now=NOW))
    assert list(body) == ["nameid", "nbf", "exp", "iat", "iss", "aud"]
    assert body["aud"] == "https://x.service.signalr.net/api/hubs/chat/:send?api-version=2022-06-01"
    assert body["nameid"] == default_server_id()
    assert re.fullmatch(r".+_[0-9a-f]{32}", default_server_id())
    assert payload(rest_token(KEY, audience, server_id="me_1"))["nameid"] == "me_1"


def test_tokens_longer_than_4096_characters_are_refused() -> None:
    longest = ""
    for length in range(2000, 3200):
        try:
            longest = client_token(KEY, CLIENT_AUDIENCE, "u", {"big": "x" * length}, now=NOW)
        except TokenTooLongError as error:
            assert isinstance(error, ValueError)
            assert str(MAX_TOKEN_LENGTH) in str(error)
            break
    else:
        pytest.fail("no token grew past the limit")
    assert MAX_TOKEN_LENGTH - 3 <= len(longest) <= MAX_TOKEN_LENGTH
    with pytest.raises(TokenTooLongError):
        server_token(KEY, SERVER_AUDIENCE, "s" * 4000)


# -- a client's claims -------------------------------------------------------------------------------


def test_client_claims_in_the_sdks_order() -> None:
    token = client_token(
        KEY,
        CLIENT_AUDIENCE,
        "user-1",
        [("custom", "c"), (NAME_IDENTIFIER, "nameId")],
        server_id="host_1",
        sticky="Required",
        handshake_timeout=20,
        close_on_expiration=datetime.fromtimestamp(0, UTC),
        now=NOW,
        diagnostic=True,
        authentication_type="Cookies",
        endpoints_count=2,
        detailed_errors=True,
        name_claim_type="name",
        role_claim_type="roles",
        max_poll_interval=15,
        transports=7,
    )
    body = payload(token)
    assert list(body.items()) == [
        ("asrs.s.uid", "user-1"),
        ("asrs.s.sn", "host_1"),
        ("asrs.s.ssticky", "Required"),
        ("asrs.s.dc", "true"),
        ("asrs.s.cht", "20"),
        ("asrs.s.aut", "Cookies"),
        ("asrs.s.secn", "2"),
        ("asrs.s.derror", "True"),
        ("asrs.s.nt", "name"),
        ("asrs.s.rt", "roles"),
        ("asrs.s.ttl", "15"),
        ("asrs.s.htt", "7"),
        ("asrs.s.coae", "true"),
        ("asrs.s.aeo", "0"),
        ("custom", "c"),
        ("nameid", "nameId"),
        ("nbf", NOW),
        ("exp", NOW + 3600),
        ("iat", NOW),
        ("iss", "azure-signalr"),
        ("aud", "https://x.service.signalr.net/client/?hub=chat"),
    ]
    assert header(token) == {"alg": "HS256", "typ": "JWT", "kid": "kid-1"}


def test_defaults_write_no_system_claims() -> None:
    body = payload(
        client_token(
            KEY,
            CLIENT_AUDIENCE,
            None,
            {"custom": "custom"},
            server_id="host_1",  # without a sticky mode
            sticky="Disabled",
            handshake_timeout=15,
            authentication_type="Bearer",
            endpoints_count=1,
            name_claim_type=NAME,
            role_claim_type=DEFAULT_ROLE_CLAIM_TYPE,
            now=NOW,
        )
    )
    assert list(body) == ["custom", "nbf", "exp", "iat", "iss", "aud"]
    assert "asrs.s.sn" not in payload(client_token(KEY, CLIENT_AUDIENCE, None, sticky="Preferred"))


def test_sticky_modes() -> None:
    claims = dict(client_claims("u", server_id="host_1", sticky="Preferred"))
    assert (claims["asrs.s.sn"], claims["asrs.s.ssticky"]) == ("host_1", "Preferred")


@pytest.mark.parametrize(("value", "valid"), [(1, True), (30, True), (0, False), (31, False), (-5, False)])
def test_handshake_timeout_range(value: int, valid: bool) -> None:
    if valid:
        assert dict(client_claims(None, handshake_timeout=value))["asrs.s.cht"] == str(value)
    else:
        with pytest.raises(ValueError, match="handshake timeout"):
            client_claims(None, handshake_timeout=value)


@pytest.mark.parametrize(("value", "valid"), [(1, True), (300, True), (0, False), (301, False)])
def test_max_poll_interval_range(value: int, valid: bool) -> None:
    if valid:
        assert dict(client_claims(None, max_poll_interval=value))["asrs.s.ttl"] == str(value)
    else:
        with pytest.raises(ValueError, match="poll interval"):
            client_claims(None, max_poll_interval=value)


def test_close_on_expiration_takes_unix_seconds_or_a_datetime() -> None:
    assert dict(client_claims(None, close_on_expiration=1_700_000_123.9))["asrs.s.aeo"] == "1700000123"
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert dict(client_claims(None, close_on_expiration=moment))["asrs.s.aeo"] == str(int(moment.timestamp()))


@pytest.mark.parametrize("name", sorted(SYSTEM_CLAIMS))
def test_user_claims_named_as_registered_claims_travel_renamed(name: str) -> None:
    body = payload(client_token(KEY, CLIENT_AUDIENCE, None, [(name, "mine")], now=NOW))
    assert body[f"asrs.u.{name}"] == "mine"
    assert body["aud"] == CLIENT_AUDIENCE and body["nbf"] == NOW


def test_only_the_first_sub_stays_sub() -> None:
    claims = client_claims(None, [("sub", "first"), ("x", "1"), ("sub", "second"), ("sub", "third")])
    assert claims == [("sub", "first"), ("x", "1"), ("asrs.u.sub", "second"), ("asrs.u.sub", "third")]
    body = payload(client_token(KEY, CLIENT_AUDIENCE, None, [("sub", "first"), ("sub", "second"), ("sub", "third")]))
    assert body["sub"] == "first"
    assert body["asrs.u.sub"] == ["second", "third"]


def test_long_claim_types_are_shortened_by_the_outbound_map() -> None:
    claims = [
        (NAME_IDENTIFIER, "id"),
        (NAME, "Ada"),
        (DEFAULT_ROLE_CLAIM_TYPE, "admin"),
        (EMAIL, "ada@example.com"),
        ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname", "Ada"),
        ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid-1"),
        ("http://schemas.xmlsoap.org/ws/2009/09/identity/claims/actor", "bob"),
        ("urn:custom", "kept"),
    ]
    body = payload(client_token(KEY, CLIENT_AUDIENCE, None, claims, now=NOW))
    assert list(body)[:8] == ["nameid", "unique_name", "role", "email", "given_name", "oid", "actort", "urn:custom"]
    # the first short name of a long type wins: nameid (not sub), role (not roles)
    assert jwt_claims([(NAME_IDENTIFIER, "a")]) == {"nameid": "a"}
    assert jwt_claims([(DEFAULT_ROLE_CLAIM_TYPE, "a")]) == {"role": "a"}


def test_repeated_claim_types_become_arrays() -> None:
    claims = [("role", "a"), ("x", "1"), (DEFAULT_ROLE_CLAIM_TYPE, "b"), ("role", "c")]
    body = payload(client_token(KEY, CLIENT_AUDIENCE, None, claims, now=NOW))
    assert body["role"] == ["a", "b", "c"]
    assert list(body)[:2] == ["role", "x"]
    body = payload(
        client_token(KEY, CLIENT_AUDIENCE, None, {"groups": ["g1", "g2"], "one": ["only"], "s": "v"}, now=NOW)
    )
    assert (body["groups"], body["one"], body["s"]) == (["g1", "g2"], "only", "v")


def test_the_user_id_and_a_user_claim_of_the_same_name_make_an_array() -> None:
    body = payload(client_token(KEY, CLIENT_AUDIENCE, "u1", [("asrs.s.uid", "u2")], now=NOW))
    assert body["asrs.s.uid"] == ["u1", "u2"]


def test_a_client_token_verifies_with_pyjwt() -> None:
    hub = service_hub_name("Chat", "MyApp")
    audience = ENDPOINT.client_audience(hub)
    token = client_token(KEY, audience, "u", {"name": "Ada"}, algorithm="HS512")
    claims = jwt.decode(token, KEY.key.encode(), algorithms=["HS512"], audience=audience, issuer="azure-signalr")
    assert claims["aud"] == "https://x.service.signalr.net/client/?hub=myapp_chat"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, KEY.key.encode(), algorithms=["HS512"], audience=ENDPOINT.client_audience("chat"))


# -- the claims an OpenConnection carries ------------------------------------------------------------


def test_principal_from_claims_renames_and_drops() -> None:
    claims = {
        "asrs.s.uid": "user-1",
        "asrs.s.aut": "Cookies",
        "asrs.s.sn": "host_1",
        "asrs.s.nt": "name",
        "asrs.s.rt": "roles",
        "asrs.u.aud": "my-audience",
        "asrs.u.sub": "second",
        "sub": "first",
        "aud": "https://x/client/?hub=chat",
        "exp": "1",
        "iat": "1",
        "nbf": "1",
        "iss": "azure-signalr",
        "jti": "j",
        "nonce": "n",
        "acr": "1",
        "azp": "a",
        "c_hash": "h",
        "actort": "x",
        "name": "Ada",
    }
    user_id, kept, authentication_type = principal_from_claims(claims)
    assert user_id == "user-1"
    assert kept == {"aud": "my-audience", "sub": ["second", "first"], "name": "Ada"}
    assert authentication_type == "Cookies"


@pytest.mark.parametrize(
    ("claims", "user_id"),
    [
        ({NAME_IDENTIFIER: "long-form"}, "long-form"),
        ({"nameid": "short-form"}, "short-form"),
        ({"asrs.s.uid": "explicit", "nameid": "short-form"}, "explicit"),
        ({"nameid": ["first", "second"]}, "first"),
        ({"sub": "subject"}, None),
        ({"name": "Ada"}, None),
    ],
)
def test_the_user_id(claims: dict[str, str | list[str]], user_id: str | None) -> None:
    found, _, authentication_type = principal_from_claims(claims)
    assert found == user_id
    assert authentication_type == "Bearer"


def test_no_claims_left_is_anonymous() -> None:
    assert principal_from_claims({}) == (None, {}, None)
    assert principal_from_claims({"aud": "x", "exp": "1", "asrs.s.sn": "s"}) == (None, {}, None)
    # the user id stays with an anonymous principal, as the SDK's ServiceUserIdFeature
    assert principal_from_claims({"asrs.s.uid": "u", "asrs.s.aut": "Cookies"}) == ("u", {}, None)


def test_arrays_and_user_prefixes_merge() -> None:
    _, kept, _ = principal_from_claims({"role": ["a", "b"], "asrs.u.role": "c", "empty": []})
    assert kept == {"role": ["a", "b", "c"]}


def test_round_trip_from_client_token_to_principal() -> None:
    token = client_token(
        KEY,
        CLIENT_AUDIENCE,
        "user-1",
        [(NAME_IDENTIFIER, "nid"), ("sub", "s1"), ("sub", "s2"), ("aud", "mine"), ("role", "a"), ("role", "b")],
        server_id="host",
        sticky="Preferred",
        authentication_type="Cookies",
    )
    claims = jwt.decode(token, KEY.key.encode(), algorithms=["HS256"], audience=CLIENT_AUDIENCE)
    user_id, kept, authentication_type = principal_from_claims(claims)
    assert user_id == "user-1"
    assert authentication_type == "Cookies"
    assert kept == {"nameid": "nid", "sub": ["s1", "s2"], "aud": "mine", "role": ["a", "b"]}


# -- Microsoft Entra ID tokens ---------------------------------------------------------------------


class Token:
    def __init__(self, token: str) -> None:
        self.token = token
        self.expires_on = NOW + 3600


class FlakyCredential:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **options: Any) -> Token:
        self.scopes.append(scopes)
        if len(self.scopes) <= self.failures:
            raise RuntimeError(f"failure {len(self.scopes)}")
        return Token("entra-token")


async def test_entra_token_is_for_the_services_scope_and_tried_three_times() -> None:
    credential = FlakyCredential(failures=2)
    assert await entra_token(credential) == "entra-token"  # type: ignore[arg-type]
    assert credential.scopes == [(ENTRA_SCOPE,)] * 3
    assert ENTRA_SCOPE == "https://signalr.azure.com/.default"
    with pytest.raises(RuntimeError, match="failure 3"):
        await entra_token(FlakyCredential(failures=3))  # type: ignore[arg-type]
