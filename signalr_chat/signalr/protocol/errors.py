"""The one exception the protocol layer raises."""


class ProtocolError(ValueError):
    """Input that breaks the hub protocol; the connection closes with an error.

    The message matches ASP.NET Core's InvalidDataException texts where one exists,
    since detailed errors show it to the client.
    """
