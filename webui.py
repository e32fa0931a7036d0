"""Start Easel: parse flags, prepare settings and models, serve the UI and/or API with uvicorn."""

from __future__ import annotations

import logging
import sys

import modules  # noqa: F401  (offline environment before anything imports huggingface_hub)
from modules import cmd_args, shared


def main(argv: list[str] | None = None) -> None:
    args = cmd_args.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shared.initialize(args)

    import uvicorn

    from modules.app import create_app, server_address

    app = create_app(args)
    host, port = server_address(args)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"Running on local URL:  http://{shown}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=args.timeout_keep_alive)


if __name__ == "__main__":
    main(sys.argv[1:])
