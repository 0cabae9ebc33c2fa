"""The ``cnnlab`` console command: serve the app with uvicorn (guarded: app/server.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Serve CNN Lab (http://127.0.0.1:8000 by default).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--reload", action="store_true", help="restart when the code changes (development)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    print(f"CNN Lab: http://{args.host}:{args.port}/", flush=True)
    if args.reload:  # development only: uvicorn's reloader runs the app in a child of its own
        uvicorn.run("app.main:app", host=args.host, port=args.port, reload=True)
        return
    from app.main import app
    from app.server import make_server

    try:
        make_server(app, args.host, args.port).run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down cleanly
        pass


if __name__ == "__main__":
    main()
