"""Connection strings and the URLs and audiences built on them, against the Azure SignalR SDK's
own expectations: the cases of ConnectionStringParserTests.cs, ServiceEndpointFacts.cs,
ServiceEndpointProviderFacts.cs and NegotiateHandlerFacts.cs (Azure/azure-signalr)."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from signalr_chat.signalr.azure.connection_string import (
    INVALID_CLIENT_ENDPOINT,
    INVALID_ENDPOINT,
    INVALID_PORT,
    INVALID_SERVER_ENDPOINT,
    MISSING_ACCESS_KEY,
    MISSING_CLIENT_ID,
    MISSING_CLIENT_SECRET,
    MISSING_ENDPOINT,
    MISSING_TENANT_ID,
    AuthType,
    ConnectionStringError,
    ServiceEndpoint,
    original_path,
    parse_connection_string,
    service_hub_name,
)

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TENANT = "aaaaaaaa-bbbb-bbbb-bbbb-cccccccccccc"


def error_of(text: str) -> str:
    with pytest.raises(ConnectionStringError) as caught:
        parse_connection_string(text)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


# -- errors (ConnectionStringParserTests.cs) -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"endpoint=https://aaa;AuthType=aad;clientId=123;tenantId={TENANT}",
        f"endpoint=https://aaa;AuthType=azure.app;clientId=123;tenantId={TENANT}",
    ],
)
def test_an_application_needs_a_secret_or_a_certificate(text: str) -> None:
    assert error_of(text) == MISSING_CLIENT_SECRET
    assert MISSING_CLIENT_SECRET == "Connection string missing required properties clientSecret or clientCert."


@pytest.mark.parametrize(
    "text",
    [
        "endpoint=https://aaa;clientEndpoint=aaa;AccessKey=bbb;",
        "endpoint=https://aaa;ClientEndpoint=aaa;AccessKey=bbb;",
    ],
)
def test_invalid_client_endpoint(text: str) -> None:
    assert (
        error_of(text)
        == "Invalid value for clientEndpoint property, it must be a valid URI."
        == INVALID_CLIENT_ENDPOINT
    )


@pytest.mark.parametrize(
    "text",
    [
        "endpoint=https://aaa;serverEndpoint=aaa;AccessKey=bbb;",
        "endpoint=https://aaa;ServerEndpoint=aaa;AccessKey=bbb;",
    ],
)
def test_invalid_server_endpoint(text: str) -> None:
    assert (
        error_of(text)
        == "Invalid value for serverEndpoint property, it must be a valid URI."
        == INVALID_SERVER_ENDPOINT
    )


@pytest.mark.parametrize(
    "text", ["Endpoint=xxx", "AccessKey=xxx", "XXX=yyy", "XXX", "", ";;;", "AccessKey=a;Version=1.0"]
)
def test_missing_endpoint(text: str) -> None:
    assert error_of(text) == MISSING_ENDPOINT
    assert "Connection string missing required properties" in MISSING_ENDPOINT


@pytest.mark.parametrize(
    "text",
    [
        "Endpoint=aaa;AccessKey=bbb;",
        "Endpoint=endpoint=aaa;AccessKey=bbb;",
        "Endpoint=ftp://aaa;AccessKey=bbb;",
        "Endpoint=ws://aaa;AccessKey=bbb;",
        "Endpoint=localhost:5050;AccessKey=bbb;",
        "Endpoint=https://;AccessKey=bbb;",
        "Endpoint=https://aaa:port;AccessKey=bbb;",
    ],
)
def test_invalid_endpoint(text: str) -> None:
    assert error_of(text) == "Invalid value for endpoint property, it must be a valid URI." == INVALID_ENDPOINT


@pytest.mark.parametrize(
    "text",
    [
        "Endpoint=https://aaa;AccessKey=bbb;version=1.0;port=2.3",
        "Endpoint=https://aaa;AccessKey=bbb;version=1.1;port=1000000",
        "Endpoint=https://aaa;AccessKey=bbb;version=1.0-preview;port=0",
        "Endpoint=https://aaa;AccessKey=bbb;port=-1",
        "Endpoint=https://aaa;AccessKey=bbb;port=65536",
        "Endpoint=https://aaa;AccessKey=bbb;port=8_0",
        "Endpoint=https://aaa;AccessKey=bbb;port=",
    ],
)
def test_invalid_port(text: str) -> None:
    assert error_of(text) == INVALID_PORT
    assert INVALID_PORT == "Invalid value for port property, it must be an positive integer between (0, 65536)."


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Endpoint=https://aaa;AccessKey=bbb;version=abc", "abc"),
        ("Endpoint=https://aaa;AccessKey=bbb;version=1.x", "1.x"),
        ("Endpoint=https://aaa;AccessKey=bbb;version=2.0", "2.0"),
        ("Endpoint=https://aaa;AccessKey=bbb;version=1", "1"),
    ],
)
def test_unsupported_version(text: str, version: str) -> None:
    assert error_of(text) == f"Version {version} is not supported."


@pytest.mark.parametrize("version", ["1.0", "1.1-preview", "1.0-preview", "1.23", "1.0_beta.2"])
def test_supported_versions(version: str) -> None:
    assert parse_connection_string(f"Endpoint=https://aaa;AccessKey=bbb;Version={version}").version == version


def test_duplicate_keys_are_refused_whatever_their_case() -> None:
    text = "Endpoint=https://aaa;AccessKey=bbb;ACCESSKEY=ccc"
    assert error_of(text) == "Duplicate properties found in connection string: ACCESSKEY."


def test_an_access_key_is_required_without_an_auth_type() -> None:
    assert error_of("Endpoint=https://aaa;Version=1.0") == MISSING_ACCESS_KEY == "accesskey is required."
    # an auth type the SDK does not know means an access key too
    assert error_of("Endpoint=https://aaa;AuthType=foo;clientId=1") == MISSING_ACCESS_KEY


def test_azure_app_needs_both_ids() -> None:
    assert error_of("Endpoint=https://aaa;AuthType=azure.app;tenantId=t;clientSecret=s") == MISSING_CLIENT_ID
    assert error_of("Endpoint=https://aaa;AuthType=azure.app;clientId=c;clientSecret=s") == MISSING_TENANT_ID
    assert MISSING_CLIENT_ID == "Connection string missing required properties clientId."
    assert MISSING_TENANT_ID == "Connection string missing required properties tenantId."


def test_errors_come_in_the_sdks_order() -> None:
    # endpoint, then version, then port, then clientEndpoint, then serverEndpoint, then the key
    everything_wrong = "Endpoint=aaa;Version=9;Port=0;ClientEndpoint=x;ServerEndpoint=y"
    assert error_of(everything_wrong) == INVALID_ENDPOINT
    assert error_of(everything_wrong.replace("=aaa", "=https://aaa")) == "Version 9 is not supported."
    assert error_of("Endpoint=https://aaa;Port=0;ClientEndpoint=x;ServerEndpoint=y") == INVALID_PORT
    assert error_of("Endpoint=https://aaa;ClientEndpoint=x;ServerEndpoint=y") == INVALID_CLIENT_ENDPOINT
    assert error_of("Endpoint=https://aaa;ServerEndpoint=y") == INVALID_SERVER_ENDPOINT
    assert error_of("Endpoint=https://aaa;ServerEndpoint=https://y") == MISSING_ACCESS_KEY


# -- what it reads -------------------------------------------------------------------------------


def test_the_portals_connection_string() -> None:
    endpoint = parse_connection_string(f"Endpoint=https://x.service.signalr.net;AccessKey={KEY};Version=1.0;")
    assert endpoint.endpoint == "https://x.service.signalr.net"
    assert endpoint.access_key == KEY
    assert endpoint.version == "1.0"
    assert endpoint.port == 443
    assert endpoint.auth_type is AuthType.ACCESS_KEY
    assert endpoint.client_endpoint == endpoint.server_endpoint == "https://x.service.signalr.net/"
    assert endpoint.audience_base_url == "https://x.service.signalr.net/"
    assert (endpoint.client_id, endpoint.tenant_id, endpoint.client_secret, endpoint.client_cert) == (None,) * 4


def test_keys_are_case_insensitive_values_trimmed_and_stray_parts_ignored() -> None:
    endpoint = parse_connection_string(" ENDPOINT = https://aaa/ ;; accessKEY = a=b ; junk ; version=1.0 ;")
    assert endpoint.endpoint == "https://aaa"
    assert endpoint.access_key == "a=b", "split on the first = only"
    assert endpoint.version == "1.0"


def test_the_key_is_taken_as_written() -> None:
    assert parse_connection_string("Endpoint=http://aaa;AccessKey=QUJD+/==").access_key == "QUJD+/=="


def test_secrets_stay_out_of_repr_and_the_endpoint_is_frozen() -> None:
    endpoint = parse_connection_string(f"Endpoint=https://aaa;AccessKey={KEY}")
    assert KEY not in repr(endpoint)
    app = parse_connection_string(
        f"Endpoint=https://aaa;AuthType=azure.app;clientId=c;tenantId={TENANT};clientSecret=S3CRET"
    )
    assert "S3CRET" not in repr(app)
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoint.access_key = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"endpoint=http://aaa;accesskey={KEY}", "http://aaa"),
        (f"endpoint=http://aaa/;accesskey={KEY}", "http://aaa"),
        (f"endpoint=https://aaa;accesskey={KEY}", "https://aaa"),
        (f"endpoint=https://aaa/;accesskey={KEY}", "https://aaa"),
        (f"endpoint=https://aaa//;accesskey={KEY}", "https://aaa"),
    ],
)
def test_endpoint_ending_with_a_slash(text: str, expected: str) -> None:
    assert parse_connection_string(text).endpoint == expected


# ServiceEndpointFacts.EndpointAndPortTestData: (connection string, audience base, endpoint)
ENDPOINT_AND_PORT = [
    (f"endpoint=http://aaa;accesskey={KEY}", "http://aaa/", "http://aaa"),
    (f"endpoint=http://aaa:80;accesskey={KEY}", "http://aaa/", "http://aaa"),
    (f"endpoint=http://aaa:500;accesskey={KEY}", "http://aaa/", "http://aaa:500"),
    (f"endpoint=https://aaa;accesskey={KEY}", "https://aaa/", "https://aaa"),
    (f"endpoint=https://aaa:443;accesskey={KEY}", "https://aaa/", "https://aaa"),
    (f"endpoint=https://aaa:500;accesskey={KEY}", "https://aaa/", "https://aaa:500"),
    (f"endpoint=HTTP://AAA;accesskey={KEY}", "http://aaa/", "http://aaa"),
    (f"endpoint=HTTPS://AAA;accesskey={KEY}", "https://aaa/", "https://aaa"),
    (f"endpoint=https://aaa;accesskey={KEY};port=500", "https://aaa/", "https://aaa:500"),
    (f"endpoint=https://aaa:500;accesskey={KEY};port=443", "https://aaa/", "https://aaa"),
    (f"ENDPOINT=http://aaa;ACCESSKEY={KEY}", "http://aaa/", "http://aaa"),
    (f"ENDPOINT=https://aaa:500;ACCESSKEY={KEY};PORT=443", "https://aaa/", "https://aaa"),
]


@pytest.mark.parametrize(("text", "audience", "expected"), ENDPOINT_AND_PORT)
def test_endpoint_and_audience(text: str, audience: str, expected: str) -> None:
    endpoint = parse_connection_string(text)
    assert endpoint.audience_base_url == audience
    assert endpoint.endpoint == expected
    assert endpoint.client_endpoint == endpoint.server_endpoint == expected + "/"


def test_the_audience_has_neither_port_nor_path() -> None:
    endpoint = parse_connection_string(
        "Endpoint=https://x.service.signalr.net:8443/some/path;AccessKey=k;Port=9443;"
        "ClientEndpoint=https://client.example:444/c;ServerEndpoint=http://server.example:8080/s"
    )
    assert endpoint.audience_base_url == "https://x.service.signalr.net/"
    assert endpoint.server_audience("chat") == "https://x.service.signalr.net/server/?hub=chat"
    assert endpoint.client_audience("chat") == "https://x.service.signalr.net/client/?hub=chat"
    assert endpoint.rest_audience("chat", "/:send").startswith("https://x.service.signalr.net/api/hubs/chat/")
    assert endpoint.port == 9443
    assert endpoint.endpoint == "https://x.service.signalr.net:9443"


# ConnectionStringParserTests.ClientEndpointTestData / ServerEndpointTestData: None = not given,
# where ServiceEndpoint falls back on the endpoint with its port
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"endpoint=http://aaa;accesskey={KEY}", "http://aaa/"),
        (f"endpoint=http://aaa:500;accesskey={KEY}", "http://aaa:500/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400", "http://aaa:400/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400;clientEndpoint=http://bbb", "http://bbb/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400;clientEndpoint=http://bbb:500", "http://bbb:500/"),
        # ServiceEndpointFacts.ClientEndpointTestData (an explicit default port is no port)
        ("endpoint=http://aaa;authType=aad;clientEndpoint=http://bbb", "http://bbb/"),
        ("endpoint=http://aaa;authType=aad;clientEndpoint=http://bbb:80", "http://bbb/"),
        ("endpoint=https://aaa;authType=aad;clientEndpoint=https://bbb:443", "https://bbb/"),
        (
            "endpoint=https://aaa;authType=aad;clientEndpoint=https://clientEndpoint:123/path",
            "https://clientendpoint:123/path/",
        ),
    ],
)
def test_client_endpoint(text: str, expected: str) -> None:
    endpoint = parse_connection_string(text)
    assert endpoint.client_endpoint == expected
    assert endpoint.audience_base_url == endpoint.endpoint.split(":")[0] + "://aaa/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"endpoint=http://aaa;accesskey={KEY}", "http://aaa/"),
        (f"endpoint=http://aaa:500;accesskey={KEY}", "http://aaa:500/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400", "http://aaa:400/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400;serverEndpoint=http://ccc", "http://ccc/"),
        (f"endpoint=http://aaa:500;accesskey={KEY};port=400;serverEndpoint=http://ccc:500", "http://ccc:500/"),
        # ServiceEndpointFacts.ServerEndpointTestData
        ("endpoint=http://aaa;authType=aad;serverEndpoint=http://bbb", "http://bbb/"),
        ("endpoint=http://aaa;authType=aad;serverEndpoint=http://bbb:80", "http://bbb/"),
        ("endpoint=http://aaa;authType=aad;serverEndpoint=http://bbb:80/abc", "http://bbb/abc/"),
        ("endpoint=https://aaa;authType=aad;serverEndpoint=http://bbb", "http://bbb/"),
        ("endpoint=https://aaa;authType=aad;serverEndpoint=https://bbb:443", "https://bbb/"),
    ],
)
def test_server_endpoint(text: str, expected: str) -> None:
    assert parse_connection_string(text).server_endpoint == expected


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        # ServiceEndpointFacts.EndpointEqualityTestData, on the endpoint alone
        (
            "Endpoint=http://localhost;AccessKey=a;Port=8080;Version=1.0",
            "Endpoint=http://localhost:8080;AccessKey=b",
            True,
        ),
        ("Endpoint=http://localhost;AccessKey=a;Port=8080;Version=1.0", "Endpoint=http://localhost;AccessKey=b", False),
        ("Endpoint=http://localhost;AccessKey=a;Port=8080", "Endpoint=https://localhost;AccessKey=a", False),
        ("Endpoint=http://localhost;AccessKey=a;Version=1.0", "Endpoint=http://localhost;AccessKey=b", True),
    ],
)
def test_endpoint_identity_is_scheme_host_and_port(first: str, second: str, same: bool) -> None:
    assert (parse_connection_string(first).endpoint == parse_connection_string(second).endpoint) is same


def test_ipv6_endpoint() -> None:
    endpoint = parse_connection_string("Endpoint=http://[::1]:8888;AccessKey=k")
    assert endpoint.endpoint == "http://[::1]:8888"
    assert endpoint.audience_base_url == "http://[::1]/"
    assert endpoint.server_url("chat", "c") == "ws://[::1]:8888/server/?hub=chat&cid=c"


def test_the_emulators_connection_string() -> None:
    endpoint = parse_connection_string(
        "Endpoint=http://localhost;Port=8888;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;"
    )
    assert endpoint.endpoint == "http://localhost:8888"
    assert endpoint.server_endpoint == endpoint.client_endpoint == "http://localhost:8888/"
    assert endpoint.audience_base_url == "http://localhost/"


# -- Microsoft Entra ID ------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["aad", "azure.app", "AAD", "Azure.App"])
def test_client_secret_application(auth: str) -> None:
    endpoint = parse_connection_string(
        f"endpoint=https://aaa;AuthType={auth};clientId=foo;clientSecret=bar;tenantId={TENANT}"
    )
    assert endpoint.auth_type in (AuthType.AAD, AuthType.AZURE_APP)
    assert (endpoint.client_id, endpoint.tenant_id, endpoint.client_secret, endpoint.client_cert) == (
        "foo",
        TENANT,
        "bar",
        None,
    )
    assert endpoint.access_key is None


@pytest.mark.parametrize("auth", ["aad", "azure.app"])
def test_client_certificate_application(auth: str) -> None:
    endpoint = parse_connection_string(
        f"endpoint=https://aaa;AuthType={auth};clientId=foo;clientCert=bar;tenantId={TENANT}"
    )
    assert (endpoint.client_id, endpoint.tenant_id, endpoint.client_secret, endpoint.client_cert) == (
        "foo",
        TENANT,
        None,
        "bar",
    )


def test_a_secret_wins_over_a_certificate() -> None:
    endpoint = parse_connection_string(
        f"endpoint=https://aaa;AuthType=aad;clientId=f;clientCert=c;clientSecret=s;tenantId={TENANT}"
    )
    assert (endpoint.client_secret, endpoint.client_cert) == ("s", None)


@pytest.mark.parametrize(
    "text",
    [
        "endpoint=https://aaa;AuthType=azure;clientId=xxxx;",
        "endpoint=https://aaa;AuthType=azure;tenantId=xxxx;",
        "endpoint=https://aaa;AuthType=azure;clientSecret=xxxx;",
    ],
)
def test_default_azure_credential_ignores_the_ids(text: str) -> None:
    endpoint = parse_connection_string(text)
    assert endpoint.auth_type is AuthType.AZURE
    assert endpoint.endpoint == "https://aaa"
    assert (endpoint.access_key, endpoint.client_id, endpoint.tenant_id, endpoint.client_secret) == (None,) * 4


@pytest.mark.parametrize(
    ("text", "client_id"),
    [
        ("endpoint=https://aaa;AuthType=aad;", None),
        ("endpoint=https://aaa;AuthType=aad;clientId=123;", "123"),
        ("endpoint=https://aaa;AuthType=aad;tenantId=xxxx;", None),
        ("endpoint=https://aaa;AuthType=aad;clientSecret=xxxx;", None),
        ("endpoint=https://aaa;AuthType=azure.msi;", None),
        ("endpoint=https://aaa;AuthType=azure.msi;clientId=123;", "123"),
    ],
)
def test_managed_identity(text: str, client_id: str | None) -> None:
    endpoint = parse_connection_string(text)
    assert endpoint.endpoint == "https://aaa"
    assert endpoint.access_key is None
    assert (endpoint.client_id, endpoint.tenant_id, endpoint.client_secret) == (client_id, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ConnectionStringParserTests.TestAzureADWithServerEndpoint
        ("endpoint=https://aaa;AuthType=aad;serverendpoint=https://foo", "https://foo/api/v1/auth/accesskey"),
        ("endpoint=https://aaa;AuthType=aad;serverendpoint=https://foo:123", "https://foo:123/api/v1/auth/accesskey"),
        ("endpoint=https://aaa;AuthType=aad;serverendpoint=https://foo/bar", "https://foo/bar/api/v1/auth/accesskey"),
        ("endpoint=https://aaa;AuthType=aad;serverendpoint=https://foo/bar/", "https://foo/bar/api/v1/auth/accesskey"),
        (
            "endpoint=https://aaa;AuthType=aad;serverendpoint=https://foo:123/bar/",
            "https://foo:123/bar/api/v1/auth/accesskey",
        ),
        # ServiceEndpointFacts.TestAzureCredentialConstructorWithServerEndpoint
        (
            "endpoint=https://test.service.signalr.net;AuthType=azure",
            "https://test.service.signalr.net/api/v1/auth/accessKey",
        ),
        (
            "endpoint=https://t;AuthType=azure;ServerEndpoint=http://serverEndpoint:123",
            "http://serverEndpoint:123/api/v1/auth/accessKey",
        ),
        (
            "endpoint=https://t;AuthType=azure;ServerEndpoint=http://serverEndpoint:123/path",
            "http://serverEndpoint:123/path/api/v1/auth/accessKey",
        ),
    ],
)
def test_access_key_url(text: str, expected: str) -> None:
    url = parse_connection_string(text).access_key_url()
    assert url.lower() == expected.lower()
    assert url.endswith("/api/v1/auth/accessKey")


async def test_credentials_for_each_auth_type(tmp_path: Path) -> None:
    identity = pytest.importorskip("azure.identity.aio")
    certificate = tmp_path / "client.pem"
    certificate.write_bytes(_self_signed_pem())
    cases: list[tuple[str, type]] = [
        ("Endpoint=https://aaa;AuthType=azure", identity.DefaultAzureCredential),
        ("Endpoint=https://aaa;AuthType=azure.msi", identity.ManagedIdentityCredential),
        ("Endpoint=https://aaa;AuthType=azure.msi;clientId=123", identity.ManagedIdentityCredential),
        ("Endpoint=https://aaa;AuthType=aad", identity.ManagedIdentityCredential),
        ("Endpoint=https://aaa;AuthType=aad;clientId=123", identity.ManagedIdentityCredential),
        (
            f"Endpoint=https://aaa;AuthType=aad;clientId=f;clientSecret=s;tenantId={TENANT}",
            identity.ClientSecretCredential,
        ),
        (
            f"Endpoint=https://aaa;AuthType=azure.app;clientId=f;clientSecret=s;tenantId={TENANT}",
            identity.ClientSecretCredential,
        ),
        (
            f"Endpoint=https://aaa;AuthType=aad;clientId=f;clientCert={certificate};tenantId={TENANT}",
            identity.CertificateCredential,
        ),
        (
            f"Endpoint=https://aaa;AuthType=azure.app;clientId=f;clientCert={certificate};tenantId={TENANT}",
            identity.CertificateCredential,
        ),
    ]
    for text, kind in cases:
        credential = parse_connection_string(text).credential()
        try:
            assert type(credential) is kind, text
        finally:
            assert credential is not None
            await credential.close()
    assert parse_connection_string("Endpoint=https://aaa;AccessKey=k").credential() is None


def _self_signed_pem() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # azure-identity signs with RS256
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private + cert.public_bytes(serialization.Encoding.PEM)


# -- URLs and audiences (ServiceEndpointProviderFacts.cs, NegotiateHandlerFacts.cs) -----------------

PROVIDER_STRINGS = [
    "Endpoint=https://myendpoint;AccessKey=fake_key;",
    "Endpoint=https://myendpoint;AccessKey=fake_key;Version=1.0-preview",
    "Endpoint=https://myendpoint;AccessKey=fake_key;Version=1.0",
]
PATHS_AND_QUERIES = [
    ("", "", ""),
    ("", "", ""),  # the SDK's null path
    ("/user/path", "", "&asrs.op=%2Fuser%2Fpath"),
    ("", "customKey=customValue", "&customKey=customValue"),
    ("/user/path", "customKey=customValue", "&asrs.op=%2Fuser%2Fpath&customKey=customValue"),
]


@pytest.mark.parametrize("text", PROVIDER_STRINGS)
@pytest.mark.parametrize("application", [None, "testapp"])
def test_server_url_and_audience(text: str, application: str | None) -> None:
    endpoint = parse_connection_string(text)
    hub = service_hub_name("TestHub", application)
    expected_hub = "testapp_testhub" if application else "testhub"
    assert endpoint.server_audience(hub) == f"https://myendpoint/server/?hub={expected_hub}"
    assert endpoint.server_url(hub, "6d3b9c1e-0000-4000-8000-000000000000") == (
        f"wss://myendpoint/server/?hub={expected_hub}&cid=6d3b9c1e-0000-4000-8000-000000000000"
    )


@pytest.mark.parametrize("text", PROVIDER_STRINGS)
@pytest.mark.parametrize("application", [None, "testapp"])
@pytest.mark.parametrize(("path", "query", "expected_query"), PATHS_AND_QUERIES)
def test_client_url(text: str, application: str | None, path: str, query: str, expected_query: str) -> None:
    endpoint = parse_connection_string(text)
    hub = service_hub_name("testhub", application)
    expected_hub = "testapp_testhub" if application else "testhub"
    assert endpoint.client_url(hub, path, query) == f"https://myendpoint/client/?hub={expected_hub}{expected_query}"
    assert endpoint.client_audience(hub) == f"https://myendpoint/client/?hub={expected_hub}"


def test_on_demand_server_url_carries_the_target_encoded() -> None:
    endpoint = parse_connection_string("Endpoint=http://localhost;Port=8080;AccessKey=k")
    url = endpoint.server_url("chat", "cid", target="instance 1/ä")
    assert url == "ws://localhost:8080/server/?hub=chat&cid=cid&target=instance+1%2F%C3%A4"


def test_server_url_follows_the_server_endpoint() -> None:
    endpoint = parse_connection_string("Endpoint=https://aaa;AccessKey=k;ServerEndpoint=https://private.example:8443/x")
    assert endpoint.server_url("Chat", "c") == "wss://private.example:8443/x/server/?hub=chat&cid=c"
    assert endpoint.server_audience("Chat") == "https://aaa/server/?hub=chat"


@pytest.mark.parametrize(
    ("path", "query", "request_id", "expected"),
    [
        # NegotiateHandlerFacts.GenerateNegotiateResponseWithPathAndQuery: the URL ends "?hub=chat&" + this
        ("/user/path/negotiate", "", "", "asrs.op=%2Fuser%2Fpath&asrs_request_id="),
        ("/user/path/negotiate/", "", "a", "asrs.op=%2Fuser%2Fpath&asrs_request_id=a"),
        ("", "?customKey=customeValue", "?a=c", "customKey=customeValue&asrs_request_id=%3Fa%3Dc"),
        (
            "/user/path/negotiate",
            "?customKey=customeValue",
            "&",
            "asrs.op=%2Fuser%2Fpath&customKey=customeValue&asrs_request_id=%26",
        ),
    ],
)
def test_negotiate_redirect_url(path: str, query: str, request_id: str, expected: str) -> None:
    endpoint = parse_connection_string("Endpoint=https://localhost;AccessKey=fake_key;ClientEndpoint=http://redirect")
    url = endpoint.client_url("chat", original_path(path), query, request_id)
    assert url == f"http://redirect/client/?hub=chat&{expected}"


@pytest.mark.parametrize(
    ("application", "request_id", "ending"),
    [("", "&", "?hub=chat&asrs_request_id=%26"), ("appName", "abc", "?hub=appname_chat&asrs_request_id=abc")],
)
def test_negotiate_redirect_with_application(application: str, request_id: str, ending: str) -> None:
    endpoint = parse_connection_string("Endpoint=https://localhost;AccessKey=fake_key;ClientEndpoint=http://redirect")
    assert endpoint.client_url(service_hub_name("Chat", application), request_id=request_id).endswith(ending)


def test_negotiate_redirect_of_a_chosen_endpoint() -> None:
    endpoint = parse_connection_string("Endpoint=http://localhost3;AccessKey=fake_key;")
    url = endpoint.client_url(
        service_hub_name("Chat", "testprefix"), original_path("/user/path/negotiate/"), "?endpoint=chosen", "a"
    )
    assert (
        url == "http://localhost3/client/?hub=testprefix_chat&asrs.op=%2Fuser%2Fpath&endpoint=chosen&asrs_request_id=a"
    )


def test_negotiate_redirect_carries_the_cultures() -> None:
    endpoint = parse_connection_string("Endpoint=https://localhost;AccessKey=fake_key;ClientEndpoint=http://redirect")
    url = endpoint.client_url("hub", "/user/path", "endpoint=chosen", "id", culture="ar-SA", ui_culture="en-US")
    assert url == (
        "http://redirect/client/?hub=hub&asrs.op=%2Fuser%2Fpath&endpoint=chosen&asrs_request_id=id&asrs_lang=ar-SA&asrs_ui_lang=en-US"
    )


def test_request_ids_are_encoded_as_dotnets_url_encode() -> None:
    endpoint = parse_connection_string("Endpoint=https://h;AccessKey=k")
    url = endpoint.client_url("chat", request_id="a b+c/d=~!*()'")
    assert url.endswith("&asrs_request_id=a+b%2Bc%2Fd%3D%7E!*()%27")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/user/path/negotiate", "/user/path"),
        ("/user/path/negotiate/", "/user/path"),
        ("/chat/negotiate", "/chat"),
        ("/negotiate", ""),
        ("/user/path", ""),
        ("", ""),
    ],
)
def test_original_path(path: str, expected: str) -> None:
    assert original_path(path) == expected


@pytest.mark.parametrize(
    ("hub", "application", "expected"),
    [
        ("ChatHub", None, "chathub"),
        ("ChatHub", "", "chathub"),
        ("ChatHub", "MyApp", "myapp_chathub"),
        ("hub", "appName", "appname_hub"),
    ],
)
def test_service_hub_name(hub: str, application: str | None, expected: str) -> None:
    assert service_hub_name(hub, application) == expected


# -- the REST API's URLs and audiences -------------------------------------------------------------


def test_rest_url_and_audience() -> None:
    endpoint = parse_connection_string(
        "Endpoint=https://x.service.signalr.net;AccessKey=k;ServerEndpoint=https://internal:9443/p"
    )
    path = "/users/a%2Fb/:send"
    assert (
        endpoint.rest_url("Chat", path)
        == "https://internal:9443/p/api/hubs/chat/users/a%2Fb/:send?api-version=2022-06-01"
    )
    assert (
        endpoint.rest_audience("Chat", path)
        == "https://x.service.signalr.net/api/hubs/chat/users/a%2Fb/:send?api-version=2022-06-01"
    )
    assert endpoint.rest_url("Chat", "/:send", "MyApp") == (
        "https://internal:9443/p/api/hubs/chat/:send?application=myapp&api-version=2022-06-01"
    )
    assert endpoint.rest_audience("Chat", "/:send", "MyApp") == (
        "https://x.service.signalr.net/api/hubs/chat/:send?application=myapp&api-version=2022-06-01"
    )
    assert endpoint.health_url() == "https://internal:9443/p/api/health?api-version=2022-06-01"
    assert endpoint.health_audience() == "https://x.service.signalr.net/api/health?api-version=2022-06-01"


def test_a_service_endpoint_can_be_built_directly() -> None:
    endpoint = ServiceEndpoint("http://h:1", "k", None, 1, "http://h:1/", "http://h:1/", "http://h/")
    assert endpoint.client_url("chat") == "http://h:1/client/?hub=chat"
