"""A signflow web server for the kill -9 tests: the real app on werkzeug,
settings from the environment (SIGNFLOW_*), printing its port when ready."""

from __future__ import annotations

import sys

from werkzeug.serving import make_server

from signflow.app import create_app
from signflow.config import load_settings


def main() -> None:
    app = create_app(load_settings())
    server = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
    print("serving", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
