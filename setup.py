"""The wheel carries the page: `wwwroot/` (kept at the top of the repository) is installed as
`signalr_chat/wwwroot/`, with the browser libraries `app.page.LIBRARIES` serves from its
node_modules (installed by `make`) and the Angular build when there is one.

Everything else about the package is in pyproject.toml; this file only adds the mapping,
which pyproject's package discovery cannot express.
"""

from setuptools import find_packages, setup

PAGE = "signalr_chat.wwwroot"

setup(
    packages=[*find_packages(include=["signalr_chat", "signalr_chat.*"]), PAGE],
    package_dir={PAGE: "wwwroot"},
    package_data={
        PAGE: [
            "index.html",
            "css/*",
            "js/*",
            "js/chat/*",  # the page's ES modules (main.js imports the others)
            "angular/**/*",
            # the folders app.page.LIBRARIES serves at /lib/
            "node_modules/@microsoft/signalr/dist/browser/*",
            "node_modules/@microsoft/signalr-protocol-msgpack/dist/browser/*",
            "node_modules/marked/lib/*",
            "node_modules/dompurify/dist/*",
            # highlight.js: the script and the theme the page links
            "node_modules/@highlightjs/cdn-assets/highlight.min.js",
            "node_modules/@highlightjs/cdn-assets/styles/github-dark.min.css",
        ],
        # PEP 561: type checkers read the package's own hints
        "signalr_chat": ["py.typed"],
    },
)
