"""Run the nx-27017 MongoDB wire-protocol server (SQLite-backed) with a clean shutdown.

``nx-27017``'s own entry point stops by raising ``SystemExit`` from a signal handler, which an
asyncio callback can swallow, leaving the server running; and it needs a fixed port. This
launcher serves the same protocol handler, binds port 0 if asked and writes the port it got to
``--port-file``, and on SIGTERM/SIGINT stops accepting, then closes the SQLite databases.

Usage: ``python -m cl_server.embedded.mongo_server --data-dir DIR --port-file FILE``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from nx_27017.handler import NeoSQLiteHandler
from nx_27017.server import handle_client


async def serve(data_dir: Path, host: str, port: int, port_file: Path) -> None:
    handler = NeoSQLiteHandler(data_dir=str(data_dir), journal_mode="WAL")

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_client(reader, writer, handler)

    server = await asyncio.start_server(on_client, host, port)
    bound = server.sockets[0].getsockname()[1]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(bound))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        handler.close_all()
        port_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # nx-27017 logs every command at INFO: far too much for a store under load.
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    asyncio.run(serve(args.data_dir, args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
